"""Shared fixtures: temporary lakes and landing zones, simulated data, a real S3 server, a test instance."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import warnings
from pathlib import Path

import dagster as dg
import pytest
import yaml

from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
from churn_assets_tests.ml_frames import shared_models_lake
from churn_assets_tests.postgres_server import PRODUCTION_YAML, PostgresServer
from churn_assets_tests.s3_server import SeaweedS3, local_or_s3_url

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

# A shell starts a background job (`pytest ... &`, nohup, some CI runners) with SIGINT ignored, and Dagster's
# in-process runs map SIGTERM to SIGINT's handler (dagster._utils.interrupts.setup_interrupt_handlers):
# SIGTERM would then be ignored too, by this process and by every child it starts afterwards, such as the
# compute-log manager's `tail`, which then outlives its terminate() (a 30 s timeout, and a failed test).
# The suite restores the default handlers, so it behaves the same however it is launched.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _terminated(signum, frame):
    """SIGTERM (`timeout`, a cancelled CI job, `kill`) ends the session as Ctrl-C does, tearing its fixtures down.
    By default it killed pytest at once: the servers of its fixtures ran on (PostgreSQL, the webserver, the daemon,
    code servers: each in a session of its own), and the test instances' folders stayed in the temp dir. A child
    process starts with the default (a handler is not inherited, an ignored signal is)."""
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminated)


# Every signal this process receives, whoever's handler takes it (Dagster's, during an in-process run), is written
# to this pipe as its number: the signals are seen even when a run swallowed them.
_SIGNALS_READ, _SIGNALS_WRITE = os.pipe()
os.set_blocking(_SIGNALS_READ, False)
os.set_blocking(_SIGNALS_WRITE, False)
signal.set_wakeup_fd(_SIGNALS_WRITE, warn_on_full_buffer=False)
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
_interrupted_by: list[int] = []


def _signalled() -> bool:
    """Whether this process has received SIGINT or SIGTERM since the session began."""
    try:
        _interrupted_by.extend(number for number in os.read(_SIGNALS_READ, 4096) if number in _INTERRUPTS)
    except BlockingIOError:
        pass
    return bool(_interrupted_by)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """Ctrl-C (or SIGTERM to the process group) stops the session in a Dagster run too. An in-process run turns the
    signal into its own failure (DagsterExecutionInterruptedError), which a test sees as the run's failure (an
    assertion on ``result.success``) or not at all: pytest went on with the next tests, on an S3 server the same
    signal had stopped, and hung in its first write to it."""
    if _signalled() or (call.excinfo is not None and _interrupted(call.excinfo.value)):
        item.session.shouldstop = f"interrupted during {item.nodeid}"


def _interrupted(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from or while handling, is an interrupt."""
    while error is not None:
        if isinstance(error, (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)):
            return True
        error = error.__cause__ or error.__context__
    return False


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def local_settings(tmp_path: Path) -> ChurnSettings:
    """Settings for a lake and landing zone under this test's temp dir."""
    return ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))


@pytest.fixture
def local_resources(local_settings: ChurnSettings) -> dict:
    return build_resources(local_settings)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def landing_url(request, tmp_path) -> str:
    """A landing zone under this test's temp dir, or under a prefix of its own in the S3 server."""
    return local_or_s3_url(request, tmp_path, "landing")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A SeaweedFS S3 server on loopback with buckets ``lake`` and ``landing``; AWS_* variables set."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def models_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A lake with ``model[2025-03]`` and ``model[2025-04]``, trained once per session for the predictions and
    drift tests (each copies it before writing)."""
    return shared_models_lake(tmp_path_factory.mktemp("models"))


# -- a webhook that records what is posted to it (run_failure_alert) ------------------------------
class _Webhook(http.server.BaseHTTPRequestHandler):
    received: list
    status = 200

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    handler = type("Webhook", (_Webhook,), {"received": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL server for the module's tests (churn_assets_tests/postgres_server.py)."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def production_home(tmp_path, postgres, s3_server, monkeypatch) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, minus the ECS run launcher (no ECS on loopback), its compute
    logs staged under the test's folder: the file's local_dir, /tmp/dagster-compute-logs, keeps a folder per run and
    every log shown, which a test would leave behind."""
    for name, value in postgres.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", "lake")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_PREFIX", f"compute-logs/{tmp_path.name}")
    config = yaml.safe_load(PRODUCTION_YAML.read_text())
    del config["run_launcher"]
    config["compute_logs"]["config"]["local_dir"] = str(tmp_path / "compute_logs")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home
