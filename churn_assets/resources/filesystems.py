"""One way to reach a storage URL, local or ``s3://``, for every part of the platform.

S3 settings come only from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), which botocore and polars read themselves.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager

import botocore.exceptions
import fsspec
from fsspec.implementations.local import LocalFileSystem


class StorageUnreachableError(ConnectionError):
    """The object store could not be reached at all (as opposed to a missing or unreadable object)."""


@contextmanager
def reaching(url: str, action: str) -> Iterator[None]:
    """Turns "could not connect" errors of an S3 call into one that says S3 was unreachable, and where."""
    try:
        yield
    except (botocore.exceptions.ConnectionError, ConnectionRefusedError, ConnectionResetError) as exc:
        if not is_s3(url):
            raise
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or "AWS S3"
        raise StorageUnreachableError(f"S3 unreachable at {endpoint}: could not {action} {url}: {exc}") from exc


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def join(url: str, *parts: str) -> str:
    """Join path parts onto a local path or an ``s3://`` URL."""
    if is_s3(url):
        return posixpath.join(url.rstrip("/"), *parts)
    return os.path.join(url, *parts)


def filesystem(url: str) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for a URL; S3 clients are cached by fsspec and never listing-cached."""
    if is_s3(url):
        return fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=False)
    return LocalFileSystem()


def polars_storage_options(url: str) -> dict[str, str] | None:
    """Options for polars' own cloud reader, taken from the standard AWS variables."""
    if not is_s3(url):
        return None
    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        options["aws_endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            options["aws_allow_http"] = "true"
    for env_name, option in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ):
        if os.environ.get(env_name):
            options[option] = os.environ[env_name]
    options["aws_region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return options
