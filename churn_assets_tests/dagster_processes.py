"""Real Dagster processes for the slow tests: the webserver, the daemon, a gRPC code server.

Each runs in its own process group on a free loopback port with the test's own DAGSTER_HOME, and is
stopped (the whole group) when the test ends; its output goes to a log file shown when a wait fails.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def executable(name: str) -> str:
    """A console script of this Python environment (dagster, dagster-webserver, dagster-daemon)."""
    return str(Path(sys.executable).with_name(name))


def instance_home(path: Path, dagster_yaml: Path = ROOT / "dagster.yaml", create_storage: bool = False) -> Path:
    """A DAGSTER_HOME holding the repository's local dagster.yaml; with ``create_storage``, its SQLite
    storage created too. Dagster creates a fresh folder's tables when a process first opens it, and two
    processes started at once (a code server and a webserver) can both try: "table run_tags already
    exists". An operator's instance exists before its processes start; so does the tests'."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(dagster_yaml.read_text())
    if create_storage:
        import dagster as dg

        with dg.DagsterInstance.from_config(str(path)) as instance:
            instance.get_runs(limit=1)
    return path


class DagsterProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def run_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, *processes: DagsterProcess,
               interval: float = 0.25) -> Any:
    """Polls until ``predicate()`` is truthy; fails with the processes' logs on timeout or exit."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for process in processes:
            if not process.alive():
                raise AssertionError(f"{process.args[0]} exited while waiting for {what}:\n{process.log()}")
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a server that is not up yet refuses connections
            last_error = exc
        time.sleep(interval)
    logs = "\n".join(f"--- {p.args[0]}\n{p.log()}" for p in processes)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})\n{logs}")


def graphql(port: int, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def backdate_schedule(instance, name: str, last_tick: datetime.datetime) -> None:
    """A running schedule as if its daemon had stopped after the tick at ``last_tick``: started before it, its last
    tick that one. A daemon started now evaluates the latest tick it missed, as after an outage."""
    from dagster._core.scheduler.instigation import InstigatorType, ScheduleInstigatorData, TickData, TickStatus

    state = next(s for s in instance.all_instigator_state() if s.instigator_name == name)
    instance.update_instigator_state(state.with_data(ScheduleInstigatorData(
        state.instigator_data.cron_schedule, start_timestamp=last_tick.timestamp() - 3600
    )))
    instance.create_tick(TickData(
        instigator_origin_id=state.instigator_origin_id, instigator_name=name, selector_id=state.selector_id,
        instigator_type=InstigatorType.SCHEDULE, status=TickStatus.SKIPPED, timestamp=last_tick.timestamp(),
        skip_reason="the last tick before the daemon stopped", run_ids=[], run_keys=[],
    ))
