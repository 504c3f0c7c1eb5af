"""``training_set``: the labelled feature rows a month's model is trained on."""

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl

from churn_assets.apps import key_string
from churn_assets.assets.features.catalog import features_schema, table_schema
from churn_assets.assets.features.labels import HORIZON_DAYS, LABELS_SCHEMA
from churn_assets.config import SETTINGS
from churn_assets.partitions import MONTH_FORMAT, daily_partitions, monthly_partitions
from churn_assets.resources import ChurnParameters, LakeResource
from churn_assets.resources.lake import LOCAL_COPIES, Lake, partition_key, some_keys, step_owner
from churn_assets.resources.parquet_io_manager import PartitionStream, column_schema

# The partition mapping is static, so L is fixed when the definitions load; the resource must agree.
LOOKBACK_MONTHS = SETTINGS.lookback_months
MIN_TRAINING_ROWS = 1000
MIN_CLASS_ROWS = 50
SAMPLE_SEED = 20250101


def training_set_schema(event_types: list[str]) -> dict[str, pl.DataType]:
    """``user_id``, ``snapshot_date``, ``label_date``, ``churned``, then the feature catalog's columns."""
    return {
        "user_id": pl.String(),
        "snapshot_date": pl.Date(),
        "label_date": pl.Date(),
        "churned": pl.Int8(),
        **{k: v for k, v in features_schema(event_types).items() if k != "user_id"},
    }


def training_set_column_schema(event_types: list[str]) -> dg.TableSchema:
    """The column schema the UI shows: the label's columns, then the feature catalog's (``table_schema``)."""
    schema = training_set_schema(event_types)
    label = ["user_id", "snapshot_date", "label_date", "churned"]
    label_columns = column_schema(
        {c: schema[c] for c in label},
        {
            "user_id": "A user at risk on snapshot_date whose label was known in the month's lookback.",
            "snapshot_date": "S, the day of the features (the time split orders rows by it).",
            "label_date": "S + H, the day the label became known (a labels partition of the L months before M).",
            "churned": "1 when the user had no activity in S+1..S+H, 0 when they came back.",
        },
        not_null=label,
    ).columns
    feature_columns = [c for c in table_schema(event_types).columns if c.name != "user_id"]
    return dg.TableSchema(columns=[*label_columns, *feature_columns])


@dataclass(frozen=True)
class MonthWindow:
    """The label days a month's training set covers: the L whole months before it."""

    month: str
    first_label_day: dt.date
    last_label_day: dt.date

    @classmethod
    def of(cls, month: str, lookback_months: int) -> "MonthWindow":
        start = dt.date.fromisoformat(f"{month}-01")
        return cls(month, add_months(start, -lookback_months), start - dt.timedelta(days=1))

    def __str__(self) -> str:
        return f"{self.first_label_day}..{self.last_label_day}"


def add_months(first_of_month: dt.date, months: int) -> dt.date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def months_to_train(start: dt.date, last: dt.date, horizon_days: int, lookback_months: int) -> list[str]:
    """The months up to ``last``'s that a backfill from ``start`` can train a model for, in order.

    A month can have a model when its snapshots (label days minus H, none before ``start``) span the
    2H + 3 days the model's time split needs (``training.time_split``). When ``last`` reaches it, the
    list starts at the first month whose whole lookback lies after ``start``: the months before it have
    a short training block, where the first challenger can lose to the logistic baseline and, with no
    champion to fall back on, fail the run.
    """

    def trainable(month: dt.date) -> bool:
        return snapshot_days(month.strftime(MONTH_FORMAT), start, horizon_days, lookback_months) >= 2 * horizon_days + 3

    month = start.replace(day=1)
    while not trainable(month):
        month = add_months(month, 1)
    full_lookback = month
    while MonthWindow.of(full_lookback.strftime(MONTH_FORMAT), lookback_months).first_label_day < start:
        full_lookback = add_months(full_lookback, 1)
    if full_lookback <= last:
        month = full_lookback
    months = []
    while month <= last:
        months.append(month.strftime(MONTH_FORMAT))
        month = add_months(month, 1)
    return months


def snapshot_days(month: str, start: dt.date, horizon_days: int, lookback_months: int) -> int:
    """The days of snapshots the training set of ``month`` can span: those of its label days minus H, none
    before ``start``."""
    window = MonthWindow.of(month, lookback_months)
    horizon = dt.timedelta(days=horizon_days)
    first_snapshot = max(start, window.first_label_day - horizon)
    return max(0, (window.last_label_day - horizon - first_snapshot).days + 1)


def too_early_to_train(
    month: str, start: dt.date | None = None, horizon_days: int = HORIZON_DAYS, lookback_months: int = LOOKBACK_MONTHS
) -> str | None:
    """Why no model can be trained for ``month`` because its lookback begins before ``start`` (by default
    ``CHURN_START_DATE``: the first months after it), naming the first month that can have one; None when it
    can, or when a later month could not either (a horizon too long for the lookback: training says so)."""
    start = start or daily_partitions.start.date()
    needed = 2 * horizon_days + 3

    def cut_by_start(first_of_month: dt.date) -> bool:
        window = MonthWindow.of(first_of_month.strftime(MONTH_FORMAT), lookback_months)
        return window.first_label_day - dt.timedelta(days=horizon_days) < start

    def span(first_of_month: dt.date) -> int:
        return snapshot_days(first_of_month.strftime(MONTH_FORMAT), start, horizon_days, lookback_months)

    first = dt.date.fromisoformat(f"{month}-01")
    if not cut_by_start(first) or span(first) >= needed:
        return None
    later = first
    while cut_by_start(later) and span(later) < needed:
        later = add_months(later, 1)
    if span(later) < needed:
        return None
    days = span(first)
    return (
        f"model[{month}] cannot be trained: its lookback ({MonthWindow.of(month, lookback_months)}) begins before "
        f"CHURN_START_DATE {start}, so its training set's snapshots span {days} day{'s' if days != 1 else ''}, "
        f"where the time split needs {needed} (2 x H + 3, H = {horizon_days}); the first month with a model is "
        f"{later.strftime(MONTH_FORMAT)}"
    )


@dg.asset(
    group_name="ml",
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"polars", "parquet"},
    owners=["team:ml"],
    metadata={"dagster/column_schema": training_set_column_schema(SETTINGS.event_types)},
    ins={
        "labels": dg.AssetIn(
            # Offsets count downstream partitions (months): the days of months M-L .. M-1.
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-LOOKBACK_MONTHS, end_offset=-1, allow_nonexistent_upstream_partitions=True
            )
        ),
    },
    deps=[
        dg.AssetDep(
            "features",
            # The labels' snapshots, H days before each label, lie inside the days of months M-L-1 .. M-1: the
            # offsets count months and cannot shift by H days, so the lineage holds a month more than is read.
            # Read from the lake (with_snapshot_features): the snapshot days of the rows kept, and no others.
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-LOOKBACK_MONTHS - 1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
)
def training_set(
    context: dg.AssetExecutionContext, churn: ChurnParameters, lake: LakeResource, labels: pl.LazyFrame | None
) -> PartitionStream:
    """The rows the model of month M is trained on: every label resolved in the L months before M
    (L = ``CHURN_TRAINING_LOOKBACK_MONTHS``), i.e. ``labels`` of those days with ``label_date`` = the day
    the label became known, ``snapshot_date`` = the day of its features (for time-based splits),
    ``churned``, then the user's feature columns of ``features[snapshot_date]``. Above
    ``CHURN_MAX_TRAINING_ROWS`` rows it keeps a seeded sample stratified by ``churned``, chosen from the
    labels before any feature is read. Reads ``labels`` of those days, then from the lake the
    ``features`` partitions of the kept rows' snapshot days only, never the whole window at once beyond
    the cap. A month with too few labelled rows or a single class fails with the month, the row count and
    the class counts; a label whose user is missing from its snapshot (features rematerialized after the
    labels) fails with the snapshot days to label again.
    """
    if churn.lookback_months != LOOKBACK_MONTHS:
        raise dg.Failure(
            f"churn.lookback_months={churn.lookback_months} but the partition mapping was built with "
            f"L={LOOKBACK_MONTHS} (CHURN_TRAINING_LOOKBACK_MONTHS when the definitions loaded): set both "
            "to the same value",
            allow_retries=False,
        )
    schema = training_set_schema(churn.event_types)
    feature_columns = [c for c in features_schema(churn.event_types) if c != "user_id"]
    windows = [MonthWindow.of(month, LOOKBACK_MONTHS) for month in context.partition_keys]
    scans = {w.month: _labels_in(labels, w) for w in windows}
    # Validate every month before writing any, so a failing month fails the run with a clear message.
    counts = {w.month: _class_counts(scans[w.month]) for w in windows}
    for window in windows:
        _require_enough_labels(window, counts[window.month])

    step = step_owner(context.get_step_execution_context())

    def stream():
        for window in windows:
            class_counts = counts[window.month]
            rows = stratified_rows(scans[window.month], class_counts, churn.max_training_rows).collect()
            frame = with_snapshot_features(window, rows, lake.lake, feature_columns, owner=step)
            frame = frame.select(list(schema)).cast(schema)
            frame = frame.sort("snapshot_date", "user_id")
            labelled = sum(class_counts.values())
            context.add_asset_metadata(
                {
                    "label_window": str(window),
                    "labelled_rows": labelled,
                    "churned_rows": class_counts[1],
                    "retained_rows": class_counts[0],
                    "label_rate": round(class_counts[1] / labelled, 4),
                    "sampled": frame.height < labelled,
                    "first_snapshot": str(frame.get_column("snapshot_date").min()),
                    "last_snapshot": str(frame.get_column("snapshot_date").max()),
                },
                partition_key=window.month,
            )
            yield window.month, frame

    return PartitionStream(stream())


def _labels_in(labels: pl.LazyFrame | None, window: MonthWindow) -> pl.LazyFrame:
    """The window's labels: ``user_id``, ``snapshot_date``, ``churned`` and ``label_date`` (label partitions
    written before their features moved out of them hold feature columns too; they are not read)."""
    if labels is None:
        return pl.LazyFrame(schema={**LABELS_SCHEMA, "label_date": pl.Date()})
    return labels.filter(pl.col("date").is_between(window.first_label_day, window.last_label_day)).select(
        *LABELS_SCHEMA, pl.col("date").alias("label_date")
    )


def with_snapshot_features(
    window: MonthWindow, rows: pl.DataFrame, lake: Lake, columns: Sequence[str], owner: str
) -> pl.DataFrame:
    """``rows`` (labels) with their user's ``columns`` (the catalog's) of ``features[snapshot_date]``, in the
    rows' order.

    Only the rows' snapshot days are read, and cut to the rows' keys as they are read (a semi-join builds
    on the rows, which the cap bounds, and streams the features), so memory follows the rows kept, not the
    window's features.
    """
    keys = ["user_id", "snapshot_date"]
    days = [d.isoformat() for d in rows.get_column("snapshot_date").unique().sort()]
    urls, missing = lake.stored_tables("features", "date", days)
    if missing:
        raise dg.Failure(
            f"training_set[{window.month}]: features has no stored partition {some_keys(missing)} under "
            f"{lake.root_url}, the snapshots of labels of this window: materialize {key_string('features')} "
            f"(then {key_string('labels')}) for those days first",
            allow_retries=False,
        )
    # rows is never empty: the month passed _require_enough_labels. The days are read as they were when the
    # month began, whatever a features backfill rewrites meanwhile (the step's ``owner``: LocalCopies.scanning).
    try:
        with LOCAL_COPIES.scanning(lake, urls, {"date": pl.Date()}, owner=owner) as snapshots:
            found = (
                snapshots.rename({"date": "snapshot_date"})
                .select(*keys, *columns)
                .join(rows.lazy().select(keys), on=keys, how="semi")
                .collect(engine="streaming")
            )
    except pl.exceptions.ColumnNotFoundError as exc:
        # Partitions written before the catalog (or CHURN_EVENT_TYPES) gained columns: polars names one
        # column, whether the scan's first file or a later one lacks it, and no day.
        lacking = _days_lacking(lake, urls, columns)
        if not lacking:
            raise
        days, missing = sorted(lacking), sorted({c for cs in lacking.values() for c in cs})
        raise dg.Failure(
            f"training_set[{window.month}]: features of snapshot days {some_keys(days)} ({len(days)} days) lack "
            f"the feature columns {some_keys(missing)}: they were materialized before the feature catalog or "
            f"CHURN_EVENT_TYPES gained them. Materialize {key_string('features')} again for those days "
            f"(--partition-range {days[0]}...{days[-1]}; a new event type needs user_daily of their windows first, "
            "which features names), then this month.",
            metadata={"features_days_lacking_columns": len(days), "missing_columns": dg.MetadataValue.json(missing)},
            allow_retries=False,
        ) from exc
    frame = rows.join(found.with_columns(pl.lit(True).alias("_found")), on=keys, how="left", maintain_order="left")
    lost = frame.filter(pl.col("_found").is_null())
    if not lost.is_empty():
        lost_days = [d.isoformat() for d in lost.get_column("snapshot_date").unique().sort()]
        raise dg.Failure(
            f"training_set[{window.month}]: labels whose user has no row in their snapshot's features: "
            f"{lost.height} (snapshot days {some_keys(lost_days)}); "
            f"features were rematerialized after those labels. Materialize {key_string('labels')} again for the "
            f"label days (snapshot day + {HORIZON_DAYS} days), then this month.",
            metadata={"labels_without_features": lost.height},
            allow_retries=False,
        )
    return frame.drop("_found")


def _days_lacking(lake: Lake, urls: list[str], columns: Sequence[str]) -> dict[str, list[str]]:
    """The days of the ``features`` tables ``urls`` whose file lacks some of ``columns``, with those columns."""
    lacking = {}
    for url in urls:
        stored = lake.table_schema(url)
        missing = [c for c in columns if c not in stored]
        if missing:
            lacking[partition_key(url, "date")] = missing
    return lacking


def _class_counts(scan: pl.LazyFrame) -> dict[int, int]:
    found = scan.group_by("churned").len().collect(engine="streaming")
    counts = {0: 0, 1: 0}
    for label, n in found.iter_rows():
        counts[int(label)] = n
    return counts


def _require_enough_labels(window: MonthWindow, counts: dict[int, int]) -> None:
    total = sum(counts.values())
    problem = None
    if total < MIN_TRAINING_ROWS:
        problem = f"too few labelled rows ({total} < {MIN_TRAINING_ROWS})"
    elif min(counts.values()) < MIN_CLASS_ROWS:
        problem = f"a class has fewer than {MIN_CLASS_ROWS} rows"
    if problem:
        early = too_early_to_train(window.month)
        todo = f"{early}." if early else f"Materialize {key_string('labels')} for those days, or train a later month."
        raise dg.Failure(
            f"training_set[{window.month}]: {problem}: {total} labelled rows in label days {window} "
            f"(churned=1: {counts[1]}, churned=0: {counts[0]}). {todo}",
            metadata={"labelled_rows": total, "churned_rows": counts[1], "retained_rows": counts[0]},
            allow_retries=False,
        )


def stratified_rows(scan: pl.LazyFrame, counts: dict[int, int], cap: int) -> pl.LazyFrame:
    """All rows of ``scan`` when they fit under ``cap``; otherwise ``cap`` rows keeping each class's share:
    per class, the k rows with the smallest seeded hash of (user_id, snapshot_date), so every run picks
    the same rows. To hold about k rows rather than the whole window, a streaming pass first keeps only
    hashes under a threshold a little above the k-th's expected value; when (rarely) too few pass, the
    exact bottom-k runs over the whole class instead. Both give the same rows."""
    total = sum(counts.values())
    if total <= cap:
        return scan
    churned = min(counts[1], max(1, round(cap * counts[1] / total)))
    keep = {1: churned, 0: min(counts[0], cap - churned)}
    order = pl.struct("user_id", "snapshot_date").hash(seed=SAMPLE_SEED).alias("_order")
    by = ["_order", "user_id", "snapshot_date"]
    parts = []
    for label, k in keep.items():
        if k == 0:
            continue
        rows = scan.filter(pl.col("churned") == label).with_columns(order)
        share = min(1.0, (k + 6 * math.sqrt(k) + 100) / counts[label])  # hashes are uniform over u64
        threshold = min(int(share * 2**64), 2**64 - 1)
        candidates = rows.filter(pl.col("_order") <= pl.lit(threshold, pl.UInt64)).collect(engine="streaming")
        chosen = candidates.bottom_k(k, by=by) if candidates.height >= k else rows.bottom_k(k, by=by).collect()
        parts.append(chosen.drop("_order").lazy())
    return pl.concat(parts)
