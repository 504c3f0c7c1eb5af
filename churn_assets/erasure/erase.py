"""What ``churn-assets erase`` does: find every stored partition that holds the users, and rewrite it without them."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from churn_assets.apps import asset_key, asset_name, is_this_apps_run, key_string
from churn_assets.assets.ingest.landing_files import quoted
from churn_assets.assets.ml.predictions import highest_risk
from churn_assets.outside_runs import record_outside_run
from churn_assets.partitions import latest_materializations
from churn_assets.resources.erased_users import add_erased_users, read_erased_users, without_erased
from churn_assets.resources.lake import Lake, WrittenFile, parquet_bytes, partition_key, some_keys
from churn_assets.resources.parquet_io_manager import (
    ROW_GROUP_ROWS,
    markdown_code,
    shared_data_version,
    table_cell,
    table_metadata,
)
from churn_assets.stops import exit_status, is_stop, uninterrupted, why

# The lake's tables that hold a user_id column, upstream first, and their partition column. raw_events_quarantine is
# no asset (the quarantine beside raw_events); the others are assets, whose rewritten partitions the instance records.
USER_TABLES = {
    "raw_events": "date",
    "raw_events_quarantine": "date",
    "install_times": "date",
    "user_daily": "date",
    "features": "date",
    "labels": "date",
    "training_set": "month",
    "predictions": "date",
}
NOT_ASSETS = {"raw_events_quarantine"}
# What an erasure leaves as it is, and why (printed with every erasure, and docs/operations.md, "Erasing a user").
NOT_ERASED = {
    "landing zone": "the app's exports (CHURN_LANDING_URL) are the app's, never changed by the platform (DESIGN.md): "
    "delete the user there at the source; raw_events keeps the user out of every day it reads again",
    "model": "a model holds no user id (its reference sample is feature rows without one); the months whose "
    "training_set held the user are listed below: the model of the next month is trained without them, or "
    f"materialize {key_string('training_set')},{key_string('model')} of the current month again to retrain now",
    "drift_report": "holds no user id: per-column statistics, and _report.html's feature values of a sample of the "
    "day's users without their ids",
    "Dagster instance": "past materializations' metadata stay in the event log: predictions' highest_risk names the "
    "day's ten riskiest users (counted below; docs/operations.md, \"Erasing a user\", says how to scrub them)",
}


class ErasureRefused(ValueError):
    """User ids that cannot be erased as given (none, an unreadable file, an id no stored partition holds):
    nothing was written."""


class ErasureStopped(RuntimeError):
    """An erasure stopped by ``error`` (a read or write the storage or the instance refused, or Ctrl-C or SIGTERM:
    ``interrupted``) ``where`` it was (``part-way, at features[2025-01-02]``). ``report`` holds the partitions
    rewritten before it, each recorded in the instance (the assets') unless in ``unrecorded`` (table -> keys).
    ``listed``: the users are on the erased-users list (before it, nothing was changed); ``finished``: every
    partition that held them was rewritten and recorded (only the report's counts were cut short)."""

    def __init__(
        self, report: ErasureReport | None, where: str, error: BaseException, listed: bool = True,
        finished: bool = False, unrecorded: Mapping[str, list[str]] | None = None,
    ):
        self.report, self.where, self.listed, self.finished = report, where, listed, finished
        self.unrecorded = {table: keys for table, keys in (unrecorded or {}).items() if keys}
        self.interrupted = isinstance(error, KeyboardInterrupt)
        self.exit_status = exit_status(error)
        super().__init__(f"stopped {where}: {why(error)}")

    def lines(self) -> list[str]:
        """What the command prints: where and why it stopped, what stands, and what to run next."""
        if not self.listed:
            return [str(self), "nothing was changed (the erased-users list and every partition are as they were): "
                    "run churn-assets erase again with the same ids"]
        done = [f"  {line}" for line in self.report.table_lines()] if self.report else []
        if self.finished:
            return [str(self), "every partition that held the users was rewritten and recorded in the Dagster "
                    "instance:", *done, "the erasure is complete (only its report was cut short): churn-assets erase "
                    "again with the same ids finds nothing left to erase"]
        lines = [str(self), *(["rewritten before it (each asset's partitions recorded in the Dagster instance):", *done]
                              if done else ["no partition was rewritten before it"])]
        if self.unrecorded:
            lines.append(
                "rewritten without the users but not recorded in the Dagster instance, which still describes their "
                f"old files: {'; '.join(f'{t}[{some_keys(keys)}]' for t, keys in self.unrecorded.items())}: once the "
                "instance takes writes again, materialize those partitions again (their runs leave the users out)"
            )
        return lines + [
            "the users are on the erased-users list (raw_events keeps them out); the partitions not reached still "
            "hold them: run churn-assets erase again with the same ids",
        ]


@dataclass
class ErasureReport:
    """What an erasure changed: per table the partitions rewritten and the rows taken out."""

    user_ids: list[str]
    newly_listed: list[str]  # the ids the erased-users list did not hold yet
    unseen: list[str]  # ids no stored partition held (listed all the same, with allow_unseen)
    partitions: dict[str, list[str]] = field(default_factory=dict)  # table -> partition keys rewritten
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows taken out
    model_months: list[str] = field(default_factory=list)  # training_set months that held the users
    metadata_events: int = 0  # predictions materializations whose highest_risk names one of them
    running: list[str] = field(default_factory=list)  # ids of the app's runs in progress while it erased

    def lines(self) -> list[str]:
        """The report as the command prints it."""
        if not any(self.rows.values()):
            return [f"nothing to erase: no stored partition holds {', '.join(self.user_ids)} "
                    f"(on the erased-users list: raw_events keeps them out)", *self._running_lines()]
        lines = self.table_lines()
        lines.append("not erased:")
        lines += [f"  {what}: {why}" for what, why in NOT_ERASED.items()]
        if self.model_months:
            lines.append(f"  models trained on the users' rows: model of {', '.join(self.model_months)}")
        lines.append(
            f"  predictions materializations in the instance naming them in highest_risk: {self.metadata_events}"
        )
        return lines + self._running_lines()

    def table_lines(self) -> list[str]:
        """A line per table it rewrote partitions of: how many, and the rows taken out."""
        return [f"{table}: {len(keys)} partition(s), {self.rows[table]:,} row(s) erased"
                for table, keys in self.partitions.items() if keys]

    def _running_lines(self) -> list[str]:
        if not self.running:
            return []
        return [f"runs in progress during the erasure: {', '.join(self.running)}: a step that read a partition "
                "before it was rewritten (raw_events: the erased-users list) stores the users again; once they "
                "end, run churn-assets erase again with the same ids: it erases what they stored"]


def erase(
    lake: Lake,
    user_ids: Iterable[str],
    instance: dg.DagsterInstance,
    assets: Iterable[dg.AssetsDefinition],
    now: dt.datetime | None = None,
    allow_unseen: bool = False,
) -> ErasureReport:
    """Erases ``user_ids`` from the lake: lists them (so ``raw_events`` keeps them out), then rewrites each stored
    partition of :data:`USER_TABLES` that holds them without their rows, and records the rewritten partitions of
    assets in ``instance`` (``assets``: the code location's, for each asset's row-group size). Refused, before any
    write, when an id is empty or no stored partition holds it and it is not listed yet (a typo? ``allow_unseen``
    lists it all the same: a user whose events have not been ingested yet). Stopped part-way (a write refused,
    ``KeyboardInterrupt``, a read that failed before any write): :class:`ErasureStopped`, once the partitions
    rewritten so far are recorded."""
    began = dt.datetime.now(dt.UTC)
    user_ids = sorted(set(user_ids))
    if not user_ids:
        raise ErasureRefused("no user id given: give the ids of the users to erase. Nothing was changed")
    if any(not user_id.strip() for user_id in user_ids):
        raise ErasureRefused(
            "an empty or blank user id was given (--user-id '' or spaces only?): give each user id as raw_events "
            "stores it. Nothing was changed"
        )
    try:
        holding = {table: _tables_holding(lake, table, column, user_ids) for table, column in USER_TABLES.items()}
        listed = read_erased_users(lake)
        already = set() if listed is None else set(listed.get_column("user_id").to_list())
        seen = set().union(*(_users_in(found) for found in holding.values()))
        unseen = [user_id for user_id in user_ids if user_id not in seen]
        if unseen and not allow_unseen and set(unseen) - already:
            raise ErasureRefused(
                f"no stored partition holds user id "
                f"{', '.join(quoted(repr(u), 100) for u in sorted(set(unseen) - already))} under {lake.root_url}: "
                "check the id (ids are matched exactly); for a user whose events have not been ingested yet, pass "
                "--allow-unseen to keep them out all the same. Nothing was changed"
            )
        recorded = {  # each asset's latest materialization of each partition holding them, which _record carries on
            table: latest_materializations(
                instance, asset_key(table), [partition_key(u, USER_TABLES[table]) for u in found]
            )
            for table, found in holding.items() if table not in NOT_ASSETS and found
        }
        _refuse_another_instance(lake, holding, recorded)
    except ErasureRefused:
        raise
    except BaseException as exc:  # a read the storage or the instance failed, Ctrl-C, SIGTERM
        if not is_stop(exc):
            raise
        raise ErasureStopped(None, "before changing anything, while looking for the users in the lake and the "
                             "instance", exc, listed=False) from exc
    report = ErasureReport(user_ids, sorted(set(user_ids) - already), unseen)
    _list_users(lake, user_ids, now or dt.datetime.now(dt.UTC), report)
    erased = pl.Series("user_id", user_ids, pl.String())
    row_groups = _row_group_rows(assets)
    report.model_months = sorted(partition_key(url, "month") for url in holding["training_set"])
    try:
        for table, found in holding.items():
            _erase_table(lake, instance, table, found, erased, row_groups.get(table), recorded.get(table, {}), report)
    except ErasureStopped:
        raise
    except BaseException as exc:  # Ctrl-C or SIGTERM between two tables
        if not is_stop(exc):
            raise
        raise ErasureStopped(report, f"part-way, after {table}", exc) from exc
    try:
        report.metadata_events = _naming_events(instance, user_ids)
        report.running = _runs_during(instance, began)
    except BaseException as exc:
        if not is_stop(exc):
            raise
        raise ErasureStopped(report, "after rewriting and recording every partition that held the users, while "
                             "counting what the instance still names them in", exc, finished=True) from exc
    return report


def _list_users(lake: Lake, user_ids: list[str], now: dt.datetime, report: ErasureReport) -> None:
    """Adds ``user_ids`` to the erased-users list (one atomic write; Ctrl-C or SIGTERM held until it is written or
    failed). Stopped: :class:`ErasureStopped`, which says whether the list was written."""
    written = False
    try:
        with uninterrupted():
            add_erased_users(lake, user_ids, now)
            written = True
    except BaseException as exc:
        if not is_stop(exc):
            raise
        if written:  # Ctrl-C or SIGTERM while it wrote the list
            raise ErasureStopped(report, "part-way, after listing the users, before rewriting any partition",
                                 exc) from exc
        raise ErasureStopped(None, "before changing anything, while writing the erased-users list", exc,
                             listed=False) from exc


def _erase_table(
    lake: Lake, instance: dg.DagsterInstance, table: str, found: Mapping[str, Mapping[str, int]], erased: pl.Series,
    row_group_rows: int | None, previous: Mapping[str, dg.EventLogRecord], report: ErasureReport,
) -> None:
    """Rewrites each partition of ``table`` in ``found`` without the users ``erased``, notes it in ``report`` and
    records it in ``instance`` (an asset's, carrying on ``previous``: its latest materialization of each). Stopped
    part-way: :class:`ErasureStopped`, once the partitions rewritten so far are recorded."""
    column = USER_TABLES[table]
    report.partitions[table], report.rows[table] = [], 0
    rewritten: dict[str, tuple[pl.DataFrame, WrittenFile, int]] = {}
    where = f"part-way, at {table}"
    try:
        for url in sorted(found):
            key = partition_key(url, column)
            where = f"part-way, at {table}[{key}]"
            frame, removed = _without_users(lake, table, url, erased)
            data = parquet_bytes(frame, row_group_rows)
            # Ctrl-C and SIGTERM wait for the write: S3 stores a PUT whose body it received, whether or not the
            # process is still there for its answer, and a partition rewritten but not noted here would never be
            # recorded (the erasure run again no longer finds the users in it).
            with uninterrupted():
                written = lake.write_bytes(url, data)
                report.partitions[table].append(key)
                report.rows[table] += removed
                rewritten[key] = (frame, written, removed)
                where = f"part-way, after {table}[{key}]"
    except BaseException as exc:
        # A write refused (or Ctrl-C, or SIGTERM: the command makes it one) after some of the table's partitions
        # were rewritten: they no longer hold the users, so the erasure run again would not find them, and the
        # instance would go on describing the old files (row count, content hash, data version). Each is recorded
        # under its own content hash, as a run that fails part-way records what it stored
        # (parquet_io_manager.record_stored_before_failure).
        left, _ = _record_rewritten(instance, table, previous, rewritten, shared=False)
        if is_stop(exc):
            raise ErasureStopped(report, where, exc, unrecorded={table: left}) from exc
        raise
    left, stopped = _record_rewritten(instance, table, previous, rewritten, shared=True)
    if stopped is not None:
        where = (f"part-way, recording {table}[{left[0]}] in the Dagster instance" if left
                 else f"part-way, after {table}")
        raise ErasureStopped(report, where, stopped, unrecorded={table: left}) from stopped


def _record_rewritten(
    instance: dg.DagsterInstance, table: str, previous: Mapping[str, dg.EventLogRecord],
    rewritten: Mapping[str, tuple[pl.DataFrame, WrittenFile, int]], shared: bool,
) -> tuple[list[str], BaseException | None]:
    """Records each rewritten partition of asset ``table`` (none of :data:`NOT_ASSETS`), Ctrl-C and SIGTERM held
    until all are: none half-recorded, none left out that the erasure run again would not find (they no longer hold
    the users). Their data version: ``shared``, one for them all, as a range run gives its own (a range run again over
    some of them, which finds the same bytes, keeps it, and nothing that reads them shows Unsynced); else each its
    own content hash, as a run that fails part-way records what it stored. Returns the keys not recorded and what
    stopped it (an error of the instance, or Ctrl-C or SIGTERM once all were recorded), or None."""
    left = [] if table in NOT_ASSETS else sorted(rewritten)
    try:
        with uninterrupted():
            versions = {key: written.content_hash[:32] for key, (_, written, _) in rewritten.items()}
            if shared and versions:
                versions = dict.fromkeys(versions, shared_data_version(versions))
            while left:
                frame, written, removed = rewritten[left[0]]
                _record(instance, table, left[0], previous.get(left[0]), frame, written, removed, versions[left[0]])
                left.pop(0)
    except BaseException as exc:
        if not is_stop(exc):
            raise
        return left, exc
    return left, None


# What a run does before it starts: nothing of the lake read or written yet, and the list read once it does.
_NOT_STARTED = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED}
_IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _runs_during(instance: dg.DagsterInstance, began: dt.datetime) -> list[str]:
    """The ids of this app's runs (``is_this_apps_run``) that were in progress at some time since ``began``: those
    still running, and those that started or ended since (a run's record changes with its status only)."""
    runs = {run.run_id: run for run in instance.get_runs(dg.RunsFilter(statuses=_IN_PROGRESS))}
    runs |= {run.run_id: run for run in instance.get_runs(dg.RunsFilter(updated_after=began))
             if run.status not in _NOT_STARTED}
    return sorted(run_id for run_id, run in runs.items() if is_this_apps_run(run))


def _refuse_another_instance(
    lake: Lake, holding: Mapping[str, Mapping[str, Mapping[str, int]]], recorded: Mapping[str, Mapping[str, object]]
) -> None:
    """Refuses, before any write, an erasure whose instance has no materialization of any stored partition it would
    rewrite under this code location's keys: ``DAGSTER_HOME`` is not the lake's instance, or ``CHURN_APP`` is not the
    lake's app (unset for puzzle's lake, its rewrites were recorded under bare keys no location defines, and
    ``puzzle/…`` went on describing the old files)."""
    found = sum(len(holding[table]) for table in recorded)
    if found and not any(recorded.values()):
        table = next(iter(recorded))
        raise ErasureRefused(
            f"the Dagster instance (DAGSTER_HOME) records no materialization of the {found} stored partition(s) "
            f"that hold the users under {lake.root_url}, as {key_string(table)} or any other asset: "
            "is DAGSTER_HOME the instance that runs this lake's assets, and CHURN_APP this lake's app (docs/"
            "operations.md, \"More than one app\")? Nothing was changed"
        )


def _tables_holding(lake: Lake, table: str, column: str, user_ids: list[str]) -> dict[str, dict[str, int]]:
    """The stored partition tables of ``table`` that hold any of ``user_ids``: URL -> {user id: rows}. One listing of
    the table's partitions, then their ``user_id`` column alone."""
    return lake.rows_by_value(lake.partition_tables(table, column), "user_id", user_ids)


def _users_in(found: Mapping[str, Mapping[str, int]]) -> set[str]:
    return {user_id for users in found.values() for user_id in users}


def _without_users(lake: Lake, table: str, url: str, erased: pl.Series) -> tuple[pl.DataFrame, int]:
    """The partition table at ``url`` without the rows of ``erased``, and how many rows were taken out.
    ``predictions`` is ranked again, 1..n without gaps, in its order (highest risk first)."""
    frame = pl.read_parquet(io.BytesIO(lake.read_bytes(url)))
    kept = without_erased(frame, erased)
    if table == "predictions":
        kept = kept.with_columns(pl.int_range(1, kept.height + 1, dtype=frame.schema["rank"]).alias("rank"))
    return kept, frame.height - kept.height


def _record(
    instance: dg.DagsterInstance, asset: str, key: str, previous: dg.EventLogRecord | None, table: pl.DataFrame,
    written: WrittenFile, removed: int, version: str,
) -> None:
    """Records the rewritten partition ``key`` of ``asset`` as a materialization outside a run: the metadata of its
    latest one (the run's counts, raw_events' landing_version, which the landing sensor compares) with the table's
    own (rows, content hash, size) and ``erased_rows``; its data version ``version``. ``predictions``'
    ``highest_risk`` is that of the rewritten table."""
    before = dict(previous.asset_materialization.metadata) if previous and previous.asset_materialization else {}
    metadata = before | table_metadata(table, written) | {"erased_rows": removed}
    metadata.pop("dagster/column_schema", None)  # the declared one holds (the columns are those of the run)
    if asset == "predictions" and "highest_risk" in before:
        metadata |= {"users": table.height, "highest_risk": highest_risk(table)}
    record_outside_run(
        instance, asset, key, metadata, version, f"churn-assets erase: {removed} row(s) of erased users taken out"
    )


def _row_group_rows(assets: Iterable[dg.AssetsDefinition]) -> dict[str, int]:
    """The row-group size each asset declares (``ROW_GROUP_ROWS``), as its IO manager writes it."""
    sizes = {}
    for definition in assets:
        for key, metadata in definition.metadata_by_key.items():
            if ROW_GROUP_ROWS in metadata:
                value = metadata[ROW_GROUP_ROWS]
                sizes[asset_name(key)] = getattr(value, "value", value)
    return sizes


def highest_risk_cell(user_id: str) -> str:
    """``user_id`` as ``predictions``' ``highest_risk`` shows it: a Markdown code span (``markdown_code``: fenced by
    more backticks when it holds one, cut at 100 characters) in a table cell (``\\`` and ``|`` escaped)."""
    return table_cell(markdown_code(user_id))


def event_log_text(user_id: str) -> str:
    """``user_id``'s ``highest_risk`` cell as the instance's event log stores it, in the JSON text of each event
    (``josé`` as ``jos\\u00e9``, a quote or a backslash escaped): what the scrub of docs/operations.md, "Erasing a
    user", replaces. ``python -c 'import sys; from churn_assets.erasure.erase import event_log_text;
    print(event_log_text(sys.argv[1]))' ID`` prints it."""
    return json.dumps(highest_risk_cell(user_id))[1:-1]


def _naming_events(instance: dg.DagsterInstance, user_ids: list[str]) -> int:
    """How many predictions materializations in the instance name one of ``user_ids`` in ``highest_risk``."""
    spans = [highest_risk_cell(user_id) for user_id in user_ids]
    count, cursor = 0, None
    while True:
        page = instance.fetch_materializations(asset_key("predictions"), limit=1000, cursor=cursor)
        for record in page.records:
            value = record.asset_materialization.metadata.get("highest_risk") if record.asset_materialization else None
            text = getattr(value, "value", None) or ""
            count += any(span in text for span in spans)
        if not page.has_more:
            return count
        cursor = page.cursor


def read_user_ids_file(path: str) -> list[str]:
    """The user ids of a text file, one a line (UTF-8; blank lines skipped, spaces around an id stripped)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except OSError as exc:
        raise ErasureRefused(f"cannot read the user ids file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ErasureRefused(
            f"{path} is not UTF-8 text (byte {exc.start} is not): give a text file of one user id a line"
        ) from exc
    user_ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        user_id = line.strip()
        if any(mark in user_id for mark in (",", "\t", "\x00", ";")):
            raise ErasureRefused(
                f"{path} line {number}: {quoted(repr(user_id), 100)} is not one user id (a comma, semicolon, tab or "
                "NUL: a CSV row?): give one user id a line, nothing else. Nothing was changed"
            )
        if user_id:
            user_ids.append(user_id)
    if not user_ids:
        raise ErasureRefused(f"{path} holds no user id (give one a line): nothing to erase. Nothing was changed")
    return user_ids
