"""What a landing day costs by its number of files: one day's events as 1, 24, 288, 1,500 ... gzipped JSON-lines
files (as Kinesis Data Firehose delivers them: a file every 5 minutes or few MB), on the local disk and on S3.

For each storage and file count it prints the S3 requests and the time of listing the day (``data_files``), of
fetching every file as ``raw_events`` does (``read_batch``), of the sensor's listing (``LandingZone.days``), and of
an in-process run of ``raw_events`` (the fastest of ``--repeat``; its lake on the local disk, so that only the
landing zone's storage varies). S3 is the tests' SeaweedFS on loopback behind ``run.py``'s latency proxy.

    python benchmarks/many_files.py --users 20000 --files 1,24,288,1500 --storage local,s3 --s3-latency-ms 20
"""

import argparse
import collections
import datetime as dt
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from churn_assets.assets.ingest.raw_events import raw_events  # noqa: E402
from churn_assets.config import ChurnSettings  # noqa: E402
from churn_assets.resources import LandingZone, build_resources  # noqa: E402
from churn_assets.resources.filesystems import filesystem, join  # noqa: E402

DAY = dt.date(2025, 1, 1)


def simulate(users: int, out: Path) -> list[bytes]:
    """One simulated export day's JSON lines."""
    if not (out / "events").exists():
        subprocess.run([sys.executable, "-m", "churn_assets.cli", "simulate", "--out", str(out), "--users", str(users),
                        "--days", "1", "--start", DAY.isoformat(), "--no-progress"], check=True)
    (path,) = (out / "events" / f"date={DAY}").glob("*.jsonl.gz")
    return gzip.decompress(path.read_bytes()).splitlines(keepends=True)


def split_day(lines: list[bytes], files: int, root: Path) -> Path:
    """The day as ``files`` gzipped files of consecutive lines, named as Firehose names them, under ``root``."""
    folder = root / "events" / f"date={DAY}"
    shutil.rmtree(root, ignore_errors=True)
    folder.mkdir(parents=True)
    per_file = -(-len(lines) // files)
    for n in range(files):
        stamp = dt.datetime.combine(DAY, dt.time()) + dt.timedelta(seconds=n * 86400 // files)
        name = f"churn-stream-1-{stamp:%Y-%m-%d-%H-%M-%S}-{n:08x}.jsonl.gz"
        (folder / name).write_bytes(gzip.compress(b"".join(lines[n * per_file:(n + 1) * per_file]), 1, mtime=0))
    (folder / "_SUCCESS").write_bytes(b"")
    return root


class Requests:
    """Counts the S3 requests the platform's s3fs client makes, by operation."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.hooked = False

    def hook(self, url: str) -> None:
        if self.hooked or not url.startswith("s3://"):
            return
        fs = filesystem(url)
        fs.connect()
        fs.s3.meta.events.register("before-call.s3", lambda model, **_: self.counts.update([model.name]))
        self.hooked = True

    def take(self, runs: int = 1) -> str:
        """The requests counted since the last take, ``runs`` runs of the same thing: each run's."""
        text = " ".join(f"{k} {v // runs}" for k, v in sorted(self.counts.items())) or "-"
        self.counts.clear()
        return text


def fetch(landing: LandingZone) -> None:
    """Every file of the day, as raw_events gets them (before the fix: one after another, in blocks)."""
    day = landing.data_files(DAY)
    if not hasattr(day, "batches"):
        for url in day.files:
            b"".join(landing.read_blocks(url))
        return
    for batch in day.batches():
        for blocks in landing.read_batch(batch):
            b"".join(blocks)


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(landing_url: str, lake_url: str, files: int, repeat: int, requests: Requests) -> None:
    landing = LandingZone(url=landing_url)
    requests.hook(landing_url)
    day_files = landing.data_files(DAY).files
    assert len(day_files) == files, (len(day_files), files)
    requests.take()
    row = {"list": timed(lambda: landing.data_files(DAY), repeat)}
    listed = requests.take(repeat)
    row["fetch"] = timed(lambda: fetch(landing), 1)
    fetched = requests.take()
    row["sensor"] = timed(lambda: landing.days([DAY.isoformat()]), repeat)
    sensor = requests.take(repeat)
    resources = build_resources(ChurnSettings(data_url=lake_url, landing_url=landing_url))
    with dg.instance_for_test() as instance:
        def run() -> None:
            result = dg.materialize([raw_events], resources=resources, instance=instance,
                                    partition_key=DAY.isoformat())
            assert result.success
        row["raw_events"] = timed(run, repeat)
    ingested = requests.take(repeat)
    print(f"{files:>6} files | list {row['list']:6.3f} s | fetch {row['fetch']:6.3f} s | sensor {row['sensor']:6.3f} s"
          f" | raw_events {row['raw_events']:6.2f} s", flush=True)
    print(f"{'':13}requests each: list [{listed}], fetch [{fetched}], sensor [{sensor}], raw_events [{ingested}]",
          flush=True)


def measure_sensor(url: str, files: int, days: int, repeat: int, requests: Requests) -> None:
    """The landing sensor's listings of ``days`` days of ``files`` files each (empty ones: only names count): of
    every file (the first tick of each hour), and of the days by name (every tick's recent days)."""
    fs = filesystem(url)
    dates = [(DAY + dt.timedelta(days=n)).isoformat() for n in range(days)]
    names = [p.rsplit("/", 1)[1] for p in fs.ls(join(url, "events", f"date={DAY}"))]
    fs.pipe({join(url, "events", f"date={day}", name): b"" for day in dates[1:] for name in names})
    landing = LandingZone(url=url)
    requests.take()
    every = timed(lambda: landing.days(), repeat)
    every_requests = requests.take(repeat)
    named = timed(lambda: landing.days(dates), repeat)
    named_requests = requests.take(repeat)
    assert len(landing.days()[0]) == days
    print(f"{'':13}sensor, {days} days: every file {every:6.3f} s [{every_requests}], "
          f"the days by name {named:6.3f} s [{named_requests}]", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20000, help="simulated users (20,000: ~480 k events a day)")
    parser.add_argument("--files", default="1,24,288,1500", help="file counts, comma-separated")
    parser.add_argument("--storage", default="local,s3", help="local, s3 or both")
    parser.add_argument("--s3-latency-ms", type=float, default=20.0, help="added to each S3 request (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing; the fastest is printed")
    parser.add_argument("--sensor-days", type=int, default=10,
                        help="on S3, also list this many such days as the landing sensor does (default 10)")
    parser.add_argument("--data", default=None, help="a folder for the data (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    data = Path(args.data or tempfile.mkdtemp(prefix="many-files-"))
    try:
        lines = simulate(args.users, data / "simulated")
        print(f"one day: {len(lines):,} events; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        counts = [int(n) for n in args.files.split(",")]
        for storage in args.storage.split(","):
            print(f"\n{storage}" + (f" ({args.s3_latency_ms:g} ms a request)" if storage == "s3" else ""))
            if storage == "local":
                for files in counts:
                    landing = split_day(lines, files, data / "landing")
                    measure(str(landing), str(data / "lake"), files, args.repeat, Requests())
            else:
                with s3(data, args.s3_latency_ms) as prefix:
                    requests = Requests()
                    for files in counts:
                        landing = split_day(lines, files, data / "landing")
                        url = f"{prefix}/{files}"
                        filesystem(url).put(str(landing / "events"), join(url, "events"), recursive=True)
                        measure(url, str(data / "lake"), files, args.repeat, requests)
                        if args.sensor_days > 1:
                            measure_sensor(url, files, args.sensor_days, args.repeat, requests)
    finally:
        if args.data is None:
            shutil.rmtree(data, ignore_errors=True)
    return 0


class s3:  # noqa: N801 - a context manager
    """The tests' S3 server on loopback, behind run.py's latency proxy, its variables set in this process."""

    def __init__(self, data: Path, latency_ms: float):
        from benchmarks.storage import LatencyProxy
        from churn_assets_tests.s3_server import SeaweedS3

        self.server = SeaweedS3(data / "seaweedfs", buckets=("landing",))
        self.proxy_class, self.latency_ms = LatencyProxy, latency_ms

    def __enter__(self) -> str:
        self.server.start()
        self.saved = dict(os.environ)
        os.environ.update(self.server.env)
        if self.latency_ms:
            proxy = self.proxy_class(self.server.ports["s3"], self.latency_ms / 1000)
            proxy.start()
            os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
        return "s3://landing/many-files"

    def __exit__(self, *exc: object) -> None:
        os.environ.clear()
        os.environ.update(self.saved)
        self.server.stop()


if __name__ == "__main__":
    sys.exit(main())
