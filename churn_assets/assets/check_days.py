"""What the checks share: a result from failure counts, one evaluation per partition of the run, and a pass
over the checked days a batch of days at a time, so that a check's memory follows a batch (or its largest
day), not the length of the range."""

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import dagster as dg
import polars as pl
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from churn_assets.apps import asset_key
from churn_assets.partitions import latest_materializations, rows_per_day
from churn_assets.threads import engine_for, ordered_map, workers_for

Out = TypeVar("Out")
EachBatch = Callable[[Callable[[list[dt.date], str], Out]], Iterator[Out]]

# A check reads consecutive days together up to this many rows (a larger day alone): one query per day
# cost ~4 ms of fixed work each (0.4 s per check over 120 small days), one query over the whole range held
# every day's keys at once (1.5 GB for medium's 120 days of features).
BATCH_ROWS = 1_000_000


def check_result(failures: dict[str, int], **metadata: object) -> dg.AssetCheckResult:
    """Passed when every failure count is zero; the counts and ``metadata`` are the check's metadata. A failed
    check also says why in its description and in the run's log (what the CLI prints): the counts that are
    not zero, and the text of ``metadata`` (the days or columns it names). A text that names nothing ("",
    "[]", "{}": no wrong column, no problem found) is left out, so the UI shows no empty row for it."""
    failed = {name: int(count) for name, count in failures.items() if count}
    metadata = {k: v for k, v in metadata.items() if not (isinstance(v, str) and v in ("", "{}", "[]"))}
    description = None
    if failed:
        named = [f"{k}: {v}" for k, v in metadata.items() if isinstance(v, str)]
        description = "failed: " + ", ".join(f"{name} = {count:,}" for name, count in failed.items())
        description += f" ({'; '.join(named)})" if named else ""
        dg.get_dagster_logger().error(description)
    return dg.AssetCheckResult(
        passed=not failed,
        metadata={**{k: int(v) for k, v in failures.items()}, **metadata},
        description=description,
    )


def partition_check(
    name: str,
    asset: dg.AssetsDefinition,
    description: str,
    blocking: bool = True,
    additional_deps: Sequence[str] = (),
) -> Callable:
    """The decorator of one check of ``asset``, partitioned like it, so a run checks (and loads) only the
    partitions it wrote, each evaluated on its own (the function yields :func:`each_partition`)."""
    spec = dg.AssetCheckSpec(
        name,
        asset=asset,
        additional_deps=[asset_key(name) for name in additional_deps] or None,
        partitions_def=asset.partitions_def,
        blocking=blocking,
        description=description,
    )
    # The inputs named after additional_deps read them under the app's prefix too (apps.with_app_keys moves the rest).
    ins = {name: dg.AssetIn(key=asset_key(name)) for name in additional_deps}
    return dg.multi_asset_check(specs=[spec], can_subset=True, ins=ins or None)


def each_partition(
    context: dg.AssetCheckExecutionContext, results: Mapping[str, dg.AssetCheckResult]
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """The check's evaluation of each partition of the run, from ``results`` (by partition key): a range run
    records one per day (or month), each with its own status, where one result would have none (Dagster
    gives an ``AssetCheckResult`` the partition of a single-partition run only). Each names the partition's
    latest materialization, without which the UI counts the evaluation as outdated (no status). Then the
    check's output, as Dagster hands it on for an ``AssetCheckResult``."""
    [spec] = context.check_specs
    keys = list(context.partition_keys)
    latest = latest_materializations(context.instance, spec.asset_key, keys)
    for key in keys:
        result, record = results[key], latest.get(key)
        target = record and AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
        )
        yield dg.AssetCheckEvaluation(
            asset_key=spec.asset_key,
            check_name=spec.name,
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=target,
            severity=result.severity,
            description=result.description,
            blocking=spec.blocking,
            partition=key,
        )
    # Without it every run logged "did not yield or return expected outputs" and "Blocking asset check …
    # emitted no result …; downstream step … will proceed without gating on it" for each check. The gate never
    # depended on it: a failed blocking evaluation fails this step, and what reads the asset is not run.
    checks = context.op_execution_context.assets_def
    yield dg.Output(None, output_name=checks.get_output_name_for_asset_check_key(spec.key))


def each_checked_batch(context: dg.AssetCheckExecutionContext, frame: pl.LazyFrame) -> EachBatch:
    """A map over the checked days in batches: ``each_batch(of_days)`` yields ``of_days(days, engine)`` for
    consecutive days of ``frame`` holding up to ``BATCH_ROWS`` rows together (or one larger day), in order,
    two batches at once while they are small, with the polars engine for their size. The days' sizes are
    looked up once (0.5 s for a day of 28 M events), however many passes a check makes."""
    days = [dt.date.fromisoformat(key) for key in context.partition_keys]
    per_day = rows_per_day(frame) if days else {}
    batches: list[list[dt.date]] = []
    sizes: list[int] = []
    for day in days:
        rows = per_day.get(day, 0)
        if batches and sizes[-1] + rows <= BATCH_ROWS:
            batches[-1].append(day)
            sizes[-1] += rows
        else:
            batches.append([day])
            sizes.append(rows)
    largest = max(sizes, default=0)
    engine = engine_for(largest)

    def each_batch(of_days: Callable[[list[dt.date], str], Out]) -> Iterator[Out]:
        return ordered_map(lambda batch: of_days(batch, engine), batches, workers=workers_for(largest))

    return each_batch


def in_days(days: list[dt.date]) -> pl.Expr:
    """The rows of these days (the hive column prunes the scan to their files)."""
    return pl.col("date").is_in(days)


def counts_per_day(
    each_batch: EachBatch,
    frame: pl.LazyFrame,
    *stats: pl.Expr,
    also: Callable[[list[dt.date]], pl.LazyFrame] | None = None,
) -> dict[dt.date, dict[str, int]]:
    """``stats`` (one count each) of every checked day, by day (zero for a day without rows); with ``also``,
    the counts of the frame ``also(days)`` too (one row per day, by its ``date``), collected together with
    them (one ``pl.collect_all`` per batch of days)."""

    def of_days(days: list[dt.date], engine: str) -> dict[dt.date, dict[str, int]]:
        queries = [frame.filter(in_days(days)).group_by("date").agg(*stats), *([also(days)] if also else [])]
        counts: dict[dt.date, dict[str, int]] = {day: {} for day in days}
        for per_day in pl.collect_all(queries, engine=engine):
            for day in days:
                counts[day].update({name: 0 for name in per_day.columns if name != "date"})
            for row in per_day.iter_rows(named=True):
                day = row.pop("date")
                counts[day].update({name: int(value or 0) for name, value in row.items()})
        return counts

    return {day: counts for batch in each_batch(of_days) for day, counts in batch.items()}


def compare_keys(
    rows: pl.LazyFrame, expected: pl.LazyFrame, unmatched_rows: str, unmatched_expected: str
) -> pl.LazyFrame:
    """One row per ``date``: how many of ``rows`` have no match in ``expected`` (named ``unmatched_rows``), and
    how many of ``expected`` have none in ``rows`` (``unmatched_expected``), on their common columns (``date``
    among them): one full join counted on both sides, not two anti-joins (~30 % faster)."""
    on = rows.collect_schema().names()
    return (
        rows.with_columns(pl.lit(True).alias("_row"))
        .join(expected.with_columns(pl.lit(True).alias("_expected")), on=on, how="full", coalesce=True)
        .group_by("date")
        .agg(
            pl.col("_expected").is_null().sum().alias(unmatched_rows),
            pl.col("_row").is_null().sum().alias(unmatched_expected),
        )
    )


def without_rows(counts: dict[str, int]) -> dict[str, int]:
    """A day's failure counts: all of its counts but the ``rows`` it holds."""
    return {name: count for name, count in counts.items() if name != "rows"}
