"""One way to reach a storage URL, local or ``s3://``, for every part of the platform.

S3 settings come only from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), which botocore and polars read themselves. An https:// endpoint's
certificate is checked by each against its own trust: botocore's (s3fs: writes, listings, downloads) against
``AWS_CA_BUNDLE`` (else ``REQUESTS_CA_BUNDLE``, else certifi's bundle, never the system's), polars' reads against the
system trust store (or ``SSL_CERT_FILE``'s file, when set), never ``AWS_CA_BUNDLE``: polars 2.1 has no option for a
CA (docs/operations.md, "S3 over HTTPS with a private CA").
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from churn_assets.config import bucket_of

if TYPE_CHECKING:
    import botocore.credentials


class StorageUnreachableError(ConnectionError):
    """The object store could not be reached at all (as opposed to a missing or unreadable object)."""


class BucketNotFoundError(OSError):
    """The S3 bucket of a URL does not exist (a misspelt ``CHURN_DATA_URL``, say). Not a FileNotFoundError:
    callers that look an object up take that as the object being absent, and would report nothing stored."""


class StorageAccessDeniedError(PermissionError):
    """S3 refused a request: wrong credentials, or credentials without the permission."""


class StorageCertificateError(ConnectionError):
    """The S3 endpoint's TLS certificate was refused: signed by a CA the client does not trust, or not for the
    endpoint's host. A setting to change, not an outage: not retried."""


class StorageSettingsError(ValueError):
    """An S3 setting that cannot work (an endpoint without its scheme): no request is made, nothing retried."""


@contextmanager
def reaching(url: str, action: str) -> Iterator[None]:
    """Turns the errors of an S3 call that say neither where nor what plainly (botocore's and s3fs's "could
    not connect", "The specified bucket does not exist", "Forbidden", "Unable to locate credentials") into
    ones that name the URL and say that S3 was unreachable, that the bucket does not exist, or that access
    was denied or had no credentials."""
    try:
        yield
    except _botocore_errors("NoCredentialsError") as exc:
        raise StorageAccessDeniedError(
            f"no AWS credentials to {action} {url} at {_endpoint()}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or a profile or role that botocore finds)"
        ) from exc
    except (*_botocore_errors("ConnectionError"), ConnectionError) as exc:
        if not is_s3(url) or isinstance(exc, StorageCertificateError):
            raise
        if (problem := _certificate_problem(exc)) is not None:
            raise certificate_refused(url, action, exc, problem) from exc
        if not isinstance(exc, (*_botocore_errors("ConnectionError"), ConnectionRefusedError, ConnectionResetError)):
            raise
        raise StorageUnreachableError(f"S3 unreachable at {_endpoint()}: could not {action} {url}: {exc}") from exc
    except FileNotFoundError as exc:
        if not is_s3(url) or _s3_error_code(exc) != "NoSuchBucket":
            raise
        raise bucket_not_found(url, action) from exc
    except PermissionError as exc:
        if not is_s3(url) or isinstance(exc, StorageAccessDeniedError):
            raise
        raise StorageAccessDeniedError(
            f"S3 at {_endpoint()} denied access: could not {action} {url} ({exc}); check the AWS credentials "
            f"(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and their permissions on bucket {bucket_of(url)!r}"
        ) from exc


# What botocore's (Python's ssl) and polars' (rustls) errors say of a certificate refused: its host is not the
# endpoint's, or it is not trusted (an unknown CA, expired, ...). The first that an error's text holds.
_CERTIFICATE_PROBLEMS = (
    ("mismatch, certificate is not valid for", "wrong host"),  # Python: "IP address mismatch", "Hostname mismatch"
    ("certificate not valid for name", "wrong host"),  # rustls
    ("CERTIFICATE_VERIFY_FAILED", "not trusted"),
    ("invalid peer certificate", "not trusted"),
)
_CERTIFICATE_DETAIL = re.compile(r"certificate verify failed: (.+?)\.? \(_ssl|invalid peer certificate: ([^\n]+)")


def _certificate_problem(exc: BaseException) -> str | None:
    """``"wrong host"`` or ``"not trusted"`` when ``exc`` says the endpoint's certificate was refused, else None."""
    text = str(exc)
    return next((problem for marker, problem in _CERTIFICATE_PROBLEMS if marker in text), None)


def certificate_refused(url: str, action: str, exc: BaseException, problem: str) -> StorageCertificateError:
    """The error for a certificate refused by botocore (``exc`` one of its errors) or by polars: the endpoint, what
    was refused, and what to set for the client that refused it."""
    found = _CERTIFICATE_DETAIL.search(str(exc))
    detail = (found.group(1) or found.group(2)).strip() if found else "refused"
    by_botocore = isinstance(exc, _botocore_errors("BotoCoreError"))
    where = f"S3 at {_endpoint()}: could not {action} {url}"
    if problem == "wrong host":
        host = urlsplit(endpoint_url() or "").hostname
        return StorageCertificateError(
            f"{where}: its TLS certificate is not valid for {host} ({detail}): write the endpoint with a host name "
            f"the certificate names in {(_endpoint_setting() or ('AWS_ENDPOINT_URL',))[0]}"
        )
    if by_botocore:
        fix = (
            "botocore (writes, listings, downloads) trusts AWS_CA_BUNDLE's file, else REQUESTS_CA_BUNDLE's, else "
            "certifi's public CAs, never the system trust store: set AWS_CA_BUNDLE to the PEM file of the CA that "
            "signed the certificate" + _now_set("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE")
        )
    else:
        fix = (
            "polars' reads trust the system trust store, or SSL_CERT_FILE's file when it is set, never AWS_CA_BUNDLE: "
            "add the CA that signed the certificate to the system trust store, or set SSL_CERT_FILE to a PEM bundle "
            "that holds it" + _now_set("SSL_CERT_FILE")
        )
    return StorageCertificateError(
        f"{where}: its TLS certificate is not trusted ({detail}); {fix} (docs/operations.md, "
        '"S3 over HTTPS with a private CA")'
    )


def _now_set(*names: str) -> str:
    """Which of the variables ``names`` are set, and to what, for a message (``""``: none)."""
    found = [f"{name}={os.environ[name]}" for name in names if os.environ.get(name)]
    return f" (now {', '.join(found)}, which does not hold it)" if found else ""


def _botocore_errors(*names: str) -> tuple[type[BaseException], ...]:
    """botocore's exception classes ``names``; none when botocore was never imported, as then no S3 call was
    made and none of its errors can have been raised. botocore is imported by the first S3 call, not with
    the code location: a local run's process starts ~0.09 s sooner."""
    exceptions = sys.modules.get("botocore.exceptions")
    return tuple(getattr(exceptions, name) for name in names) if exceptions is not None else ()


def bucket_not_found(url: str, action: str) -> BucketNotFoundError:
    """The error for an S3 ``url`` whose bucket does not exist."""
    return BucketNotFoundError(
        f"S3 bucket {bucket_of(url)!r} does not exist at {_endpoint()}: could not {action} {url}; "
        "check the bucket in the URL (CHURN_DATA_URL, CHURN_LANDING_URL)"
    )


def require_bucket(url: str, action: str) -> None:
    """Fails, saying so, when ``url`` is on S3 and its bucket does not exist (S3 answers HeadBucket with 404).
    A bucket the credentials may not look at (403), or a throttled request, is not taken for a missing one:
    those come back as they are, or (access denied) as they are said by :func:`reaching`."""
    if not is_s3(url):
        return
    try:
        with reaching(url, action):
            filesystem(url).call_s3("head_bucket", Bucket=bucket_of(url))
    except StorageAccessDeniedError:
        return  # it exists; what was asked of it says what access is missing
    except FileNotFoundError as exc:
        raise bucket_not_found(url, action) from exc


def _s3_error_code(exc: BaseException | None) -> str | None:
    """The S3 error code behind an error s3fs raised (it turns botocore's into OSErrors), if any."""
    while exc is not None:
        if isinstance(exc, _botocore_errors("ClientError")):
            return exc.response.get("Error", {}).get("Code")
        exc = exc.__cause__ or exc.__context__
    return None


def _endpoint() -> str:
    """The endpoint as messages name it (as given, even without its scheme)."""
    setting = _endpoint_setting()
    return setting[1] if setting else "AWS S3"


def _endpoint_setting() -> tuple[str, str] | None:
    """The variable that sets the S3 endpoint, and its value. As in botocore (and so s3fs),
    ``AWS_ENDPOINT_URL_S3`` comes before ``AWS_ENDPOINT_URL``, every service's."""
    return next(((name, os.environ[name]) for name in _ENDPOINT_VARIABLES if os.environ.get(name)), None)


_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def endpoint_url() -> str | None:
    """The S3 endpoint the AWS variables give (None: AWS itself). One without its scheme (``minio:9000``)
    fails naming the variable: botocore's "Invalid endpoint" named neither, and the step was retried."""
    setting = _endpoint_setting()
    if setting is None:
        return None
    name, endpoint = setting
    if "://" not in endpoint:
        raise StorageSettingsError(
            f"{name}={endpoint!r} has no scheme: write it as http://{endpoint} (or https://{endpoint})"
        )
    return endpoint


def require_ca_files(reader: str) -> None:
    """Fails naming the variable when the file of CA certificates that ``reader`` (``"botocore"`` or ``"polars"``)
    is told to read does not exist: botocore's AWS_CA_BUNDLE (else REQUESTS_CA_BUNDLE), polars' SSL_CERT_FILE.
    botocore said "An HTTP Client raised an unhandled exception: [Errno 2] No such file or directory" (and
    raw_events retried it), polars "No CA certificates were loaded from the system", naming neither the variable
    nor the file."""
    if reader == "polars":
        name = "SSL_CERT_FILE"
    else:  # botocore reads REQUESTS_CA_BUNDLE only without AWS_CA_BUNDLE
        name = "AWS_CA_BUNDLE" if os.environ.get("AWS_CA_BUNDLE") else "REQUESTS_CA_BUNDLE"
    path = os.environ.get(name)
    # An empty one too, for polars, which takes it for a file name (botocore says so of an empty one itself).
    if path is None or (not path and reader == "botocore") or os.path.isfile(path):
        return
    raise StorageSettingsError(
        f"{name}={path!r} is not a file: {_READS[reader]} the certificates of the CAs it trusts from it; name "
        "the PEM file of the CA that signed the S3 endpoint's certificate, or unset it (docs/operations.md, "
        '"S3 over HTTPS with a private CA")'
    )


_READS = {"botocore": "botocore (S3 writes, listings, downloads) reads", "polars": "polars (S3 reads) reads"}


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def join(url: str, *parts: str) -> str:
    """Join path parts onto a local path or an ``s3://`` URL."""
    if is_s3(url):
        return posixpath.join(url.rstrip("/"), *parts)
    return os.path.join(url, *parts)


# Connections to S3 at once (botocore's default: 10): a day's small landing files are fetched this many at a time.
S3_CONNECTIONS = 64


def filesystem(url: str) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for a URL; S3 clients are cached by fsspec and never listing-cached."""
    if is_s3(url):
        endpoint_url()  # checked before botocore reads it
        require_ca_files("botocore")
        return fsspec.filesystem(
            "s3", use_listings_cache=False, skip_instance_cache=False,
            config_kwargs={"max_pool_connections": S3_CONNECTIONS},
        )
    return LocalFileSystem()


def s3_listing_pages(
    fs: fsspec.AbstractFileSystem, bucket: str, prefix: str, start_after: str = "", page_size: int = 1000
) -> Iterator[tuple[list[dict], bool]]:
    """S3's listing of the keys under ``prefix`` in ``bucket`` (after the key ``start_after``), in order, a page of
    ``page_size`` objects (1,000 at most) per request, each taken only when the one before is used up: its objects
    (``Key``, ``Size``, ``ETag``, ``LastModified``) and whether more follow. One request a page, where s3fs's
    ``find`` lists the whole prefix before it returns."""
    request = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size, **fs.req_kw}
    if start_after:
        request["StartAfter"] = start_after
    while True:
        page = fs.call_s3("list_objects_v2", **request)
        more = bool(page.get("IsTruncated"))
        yield page.get("Contents", []), more
        if not more:
            return
        request["ContinuationToken"] = page["NextContinuationToken"]


def polars_storage_options(url: str) -> dict[str, str] | None:
    """Options for polars' own cloud reader, taken from the standard AWS variables."""
    if not is_s3(url):
        return None
    options: dict[str, str] = {}
    endpoint = endpoint_url()
    require_ca_files("polars")
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
    if "aws_access_key_id" not in options:
        options |= _botocore_credentials()
    options["aws_region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return options


def _botocore_credentials() -> dict[str, str]:
    """The credentials botocore (and so s3fs) finds without the variables: a profile (``AWS_PROFILE``, the
    shared credentials file), SSO, a role. Given options, polars looks for none but the variables and the
    instance metadata service, so a run that wrote with a profile's credentials failed to read a partition
    back. A role's temporary credentials are renewed by botocore as they near their expiry."""
    credentials = _credential_source(*(os.environ.get(name) for name in _CREDENTIAL_PLACES))
    if credentials is None:
        return {}
    frozen = credentials.get_frozen_credentials()
    found = {"aws_access_key_id": frozen.access_key, "aws_secret_access_key": frozen.secret_key}
    if frozen.token:
        found["aws_session_token"] = frozen.token
    return found


_CREDENTIAL_PLACES = ("AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


@functools.lru_cache(maxsize=4)
def _credential_source(*places: str | None) -> botocore.credentials.Credentials | None:
    """botocore's credentials for the places ``_CREDENTIAL_PLACES`` name, found once per process: finding
    them may be a request (a role's, or STS for a web identity), and every single partition read asks."""
    import botocore.session  # where used: a local run never imports botocore

    return botocore.session.Session().get_credentials()
