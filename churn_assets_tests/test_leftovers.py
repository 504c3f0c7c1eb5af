"""What the suite's own servers leave once stopped: nothing. No process, no port, no file outside the test's
folders (a developer runs the suite many times a day, several checkouts at once)."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from churn_assets_tests.postgres_server import PostgresServer, postgres_available
from churn_assets_tests.s3_server import SeaweedS3

ROOT = Path(__file__).resolve().parents[1]


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc: its sockets' inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(fd.path)
        except FileNotFoundError:  # a descriptor the running server closed after the listing: not a listener
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.s3
def test_a_stopped_s3_server_leaves_no_socket_log_or_port(tmp_path, monkeypatch):
    """weed left its S3 gateway's socket in /tmp at every stop (all its sockets when killed), weed.* log files in
    the temp dir, listened on a gRPC port of its own choosing (the S3 port + 10000) that nobody checked was free, and
    its worker dialled the admin at another (the admin port + 10000)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    server = SeaweedS3(tmp_path / "seaweedfs", buckets=("lake",))
    for stopped_how in ("killed", "stopped"):
        started = time.time() - 1
        server.start()
        try:
            ports = listening_ports(server.process.pid)
            assert ports <= set(server.ports.values()), "a port not chosen free"
            if stopped_how == "killed":
                server.process.kill()  # as test_faults stops S3 mid-run
                server.process.wait()
        finally:
            server.stop()
        left = [
            p.name for p in Path("/tmp").glob("seaweedfs-*.sock")
            if int(p.stem.rsplit("-", 1)[1]) in ports and p.lstat().st_mtime >= started  # (not another session's)
        ]
        assert left == [], f"{stopped_how}: sockets left in /tmp"
        assert list(temp.iterdir()) == [], f"{stopped_how}: files left in the temp dir"
    # Its maintenance worker dialled the admin's gRPC at the admin port + 10000, another server's port if any.
    log = (server.data_dir / "weed.log").read_text()
    assert {int(port) for port in re.findall(r"dial tcp 127\.0\.0\.1:(\d+)", log)} <= set(server.ports.values())


_INTERRUPTED_SUITE = """
import os, signal
import dagster as dg


@dg.asset
def interrupted():
    os.kill(os.getpid(), signal.{signal})  # Ctrl-C, or SIGTERM to the process group, while the run's step computes


def test_first(tmp_path):
    result = dg.materialize([interrupted], raise_on_error={raises})
    assert result.success


def test_second(tmp_path):
    (tmp_path.parent.parent / "second-ran").touch()
"""


def _run_pytest(folder: Path, test_file: str) -> subprocess.CompletedProcess:
    """pytest on ``folder/test_file`` in a process of its own, with the suite's conftest."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "churn_assets_tests.conftest",
         f"--basetemp={folder / 'base'}", test_file],
        cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(("signal_name", "raises"), [("SIGINT", True), ("SIGINT", False), ("SIGTERM", False)])
def test_a_signal_in_a_dagster_run_stops_the_session(tmp_path, signal_name, raises):
    """Dagster turned a Ctrl-C in a run into the run's failure: the session went on with the next tests, servers
    and all (the S3 server, in the terminal's process group, already stopped), until a second Ctrl-C. A run asked
    not to raise (``raise_on_error=False``) took the signal, SIGINT or SIGTERM, as its failure: the test failed on
    an assertion, with no interrupt in sight, and the next S3 test hung in its first write."""
    suite = _INTERRUPTED_SUITE.replace("{signal}", signal_name).replace("{raises}", str(raises))
    (tmp_path / "test_interrupted.py").write_text(suite)
    done = _run_pytest(tmp_path, "test_interrupted.py")
    assert "1 failed" in done.stdout and "interrupted during" in done.stdout, done.stdout[-3000:]
    assert not (tmp_path / "second-ran").exists()


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 binaries are not installed")
def test_a_postgres_server_that_fails_to_start_leaves_no_process_or_folder():
    """createdb failed after the server had started (here: the database exists): the fixture never got a server to
    stop, and PostgreSQL ran on, its cluster in the temp dir, until the machine restarted."""
    server = PostgresServer(db_name="template1")
    with pytest.raises(subprocess.CalledProcessError):
        server.start()
    assert not server.root.exists()
    with socket.socket() as sock:
        assert sock.connect_ex((server.host, server.port)) != 0, "PostgreSQL still listens"


_TERMINATED_SUITE = '''
import os, signal, time
import pytest


@pytest.fixture
def server(tmp_path):
    yield
    (tmp_path.parent.parent / "torn-down").touch()  # where a fixture stops its server


def test_first(server):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)


def test_second(tmp_path):
    (tmp_path.parent.parent / "second-ran").touch()
'''


def test_sigterm_ends_the_session_with_its_fixtures_torn_down(tmp_path):
    """SIGTERM (`timeout`, a cancelled CI job) killed pytest at once: no fixture was torn down, and PostgreSQL, the
    webserver, the daemon and the code servers, each in a session of its own, ran on."""
    (tmp_path / "test_terminated.py").write_text(_TERMINATED_SUITE)
    done = _run_pytest(tmp_path, "test_terminated.py")
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "torn-down").exists()
    assert not (tmp_path / "second-ran").exists()
