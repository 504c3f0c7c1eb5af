"""One measured piece, in a fresh process: ``python -m benchmarks.child SPEC.json RESULT.json``.

The piece is one ``dg.materialize`` run of the code location's own assets, checks and resources (the
settings come from the CHURN_* variables the parent sets, as for any user), on a persistent SQLite
instance (``DAGSTER_HOME``). What it measures besides the run's wall time:

* per step (asset or check), from the run's event log: its start and end;
* inside each step, the time in our code: every ``load_input`` and ``handle_output`` of the IO managers
  (timed by a thin wrapper; a ``PartitionStream`` is computed while ``handle_output`` writes it) and the
  asset or check body (from the last input loaded to the first output handled, or to the check's result);
* the process's resident memory, sampled every 20 ms, so each step gets the peak seen while it ran, and
  with it the CPU time (all threads), the kernel's part of it, and the minor page faults (memory the kernel
  hands out anew: a freed and re-allocated page costs one, and shows as system CPU).

Dagster's own share is the run's wall time minus the time in our code, plus, for the whole process,
the time to import Dagster and to open its instance.
"""

import json
import os
import resource
import sys
import threading
import time

PROCESS_START = time.time()


class RssSampler(threading.Thread):
    """Samples this process's resident set size (bytes), CPU time (seconds, all threads), system CPU time and
    minor page faults until stopped."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, float, float, int]] = []
        self._stop_event = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def run(self) -> None:
        while not self._stop_event.is_set():
            usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads
            cpu = usage.ru_utime + usage.ru_stime
            self.samples.append((time.time(), self.rss(), cpu, usage.ru_stime, usage.ru_minflt))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak_between(self, start: float, end: float) -> int:
        """The largest resident set sampled between ``start`` and ``end``; for a step shorter than the interval,
        which no sample falls in, the larger of the samples just before and just after it (not 0)."""
        inside = [sample[1] for sample in self.samples if start <= sample[0] <= end]
        if inside:
            return max(inside)
        before = [sample[1] for sample in self.samples if sample[0] < start][-1:]
        after = [sample[1] for sample in self.samples if sample[0] > end][:1]
        return max(before + after, default=0)

    def used_between(self, start: float, end: float, field: int = 2) -> float:
        """CPU seconds (``field`` 2), system CPU seconds (3) or minor page faults (4) between the samples nearest
        ``start`` and ``end`` (to the sampling interval)."""
        inside = [sample[field] for sample in self.samples if start <= sample[0] <= end]
        return inside[-1] - inside[0] if len(inside) > 1 else 0


def timed_io_manager(inner, calls: list[dict]):
    """``inner`` with each load_input / handle_output call recorded in ``calls`` (step, kind, start, end)."""
    import dagster as dg

    class TimedIOManager(dg.IOManager):
        def handle_output(self, context, obj):
            start = time.time()
            try:
                return inner.handle_output(context, obj)
            finally:
                calls.append({"step": context.step_key, "kind": "output", "start": start, "end": time.time()})

        def load_input(self, context):
            start = time.time()
            try:
                return inner.load_input(context)
            finally:
                calls.append(
                    {"step": context.step_context.step.key, "kind": "input", "start": start, "end": time.time()}
                )

    @dg.io_manager
    def timed(init_context):
        # The wrapped IO manager's own set-up and tear-down run as they do in a user's run.
        inner.setup_for_execution(init_context)
        try:
            yield TimedIOManager()
        finally:
            inner.teardown_after_execution(init_context)

    return timed


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def step_figures(logs: list, calls: list[dict], sampler: RssSampler) -> list[dict]:
    """Per step, in order of start: wall, time in our code, materialized partitions, peak RSS."""
    steps: dict[str, dict] = {}
    for entry in logs:
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        step = steps.setdefault(entry.step_key, {"step": entry.step_key, "partitions": 0, "checks": 0})
        kind = event.event_type_value
        if kind == "STEP_START":
            step["start"] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            step["end"] = entry.timestamp
            step["status"] = "success" if kind == "STEP_SUCCESS" else "failure"
        elif kind == "ASSET_MATERIALIZATION":
            step["partitions"] += 1
        elif kind == "ASSET_CHECK_EVALUATION":
            step["checks"] += 1
            step.setdefault("check_result", entry.timestamp)
    figures = []
    for step in steps.values():
        if "start" not in step or "end" not in step:
            continue
        mine = [c for c in calls if c["step"] == step["step"]]
        inputs = [c for c in mine if c["kind"] == "input"]
        outputs = [c for c in mine if c["kind"] == "output"]
        body_start = max((c["end"] for c in inputs), default=step["start"])
        body_end = min((c["start"] for c in outputs), default=step.get("check_result", step["end"]))
        input_s = sum(c["end"] - c["start"] for c in inputs)
        output_s = sum(c["end"] - c["start"] for c in outputs)
        body_s = max(0.0, body_end - body_start)
        figures.append(
            {
                "step": step["step"],
                "status": step.get("status"),
                "wall_s": step["end"] - step["start"],
                "ours_s": input_s + body_s + output_s,
                "inputs_s": input_s,
                "body_s": body_s,
                "outputs_s": output_s,
                "partitions": step["partitions"],
                "checks": step["checks"],
                "peak_rss": sampler.peak_between(step["start"], step["end"]),
                "cpu_s": sampler.used_between(step["start"], step["end"]),
                "sys_s": sampler.used_between(step["start"], step["end"], 3),
                "minor_faults": sampler.used_between(step["start"], step["end"], 4),
                "start": step["start"],
            }
        )
    return sorted(figures, key=lambda f: f["start"])


def count_events(lake_url: str, days: list[str]) -> int:
    """Rows of raw_events over these days (Parquet footers only)."""
    import polars as pl

    from churn_assets.resources.filesystems import polars_storage_options
    from churn_assets.resources.lake import Lake

    if not days:
        return 0
    lake = Lake(lake_url)
    urls = [lake.table_url("raw_events", "date", day) for day in days]
    scan = pl.scan_parquet(urls, storage_options=polars_storage_options(lake_url))
    return int(scan.select(pl.len()).collect().item())


def main(spec_path: str, result_path: str) -> int:
    with open(spec_path) as handle:
        spec = json.load(handle)
    sampler = RssSampler()
    sampler.start()

    imports_start = time.time()
    import dagster as dg

    dagster_imported = time.time()
    from churn_assets import definitions
    from churn_assets.apps import asset_key
    from churn_assets.config import SETTINGS
    from churn_assets.resources import build_resources

    definitions_loaded = time.time()

    calls: list[dict] = []
    resources = build_resources(SETTINGS)
    for key in ("io_manager", "model_io_manager"):
        resources[key] = timed_io_manager(resources[key], calls)
    instance_start = time.time()
    instance = dg.DagsterInstance.get()
    instance_ready = time.time()
    if spec["first"] == spec["last"]:
        partition = {"partition_key": spec["first"]}
    else:
        partition = {"tags": {"dagster/asset_partition_range_start": spec["first"],
                              "dagster/asset_partition_range_end": spec["last"]}}

    run_start = time.time()
    result = dg.materialize(
        [*definitions.all_assets, *definitions.all_asset_checks],
        # The scale names DESIGN.md's assets; under CHURN_APP their keys carry the app (puzzle/raw_events).
        selection=dg.AssetSelection.assets(*(asset_key(name) for name in spec["assets"])),
        resources=resources,
        instance=instance,
        raise_on_error=False,
        **partition,
    )
    run_end = time.time()
    sampler.stop()

    logs = instance.all_logs(result.run_id)
    failure = None
    if not result.success:
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        failure = "; ".join(
            f"{e.step_key}: {e.step_failure_data.error.message.strip() if e.step_failure_data.error else ''}"
            for e in failures
        ) or "the run failed"
    figures = {
        "success": result.success,
        "failure": failure,
        "run_id": result.run_id,
        "process_start": PROCESS_START,
        "imports_s": definitions_loaded - imports_start,
        # Dagster's part of the process start: importing it, and opening the instance.
        "dagster_import_s": dagster_imported - imports_start,
        "instance_s": instance_ready - instance_start,
        "run_wall_s": run_end - run_start,
        "run_end": run_end,
        "steps": step_figures(logs, calls, sampler),
        "peak_rss": peak_rss_bytes(),
        "events": count_events(SETTINGS.data_url, spec.get("event_days", [])) if result.success else 0,
    }
    # The process's own CPU (all threads), beside its peak above, for a parent that cannot see them: under
    # py-spy the parent's child is the profiler, whose rusage is the profiler's.
    times = os.times()
    figures["cpu_s"] = times.user + times.system
    with open(result_path, "w") as handle:
        json.dump(figures, handle, indent=1)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
