"""What the blocking checks of daily assets share: a result from failure counts, and a pass over the checked
days a batch of days at a time, so that a check's memory follows a batch (or its largest day), not the
length of the range."""

import datetime as dt
from collections.abc import Callable, Iterator
from typing import TypeVar

import dagster as dg
import polars as pl

from churn_assets.partitions import rows_per_day
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
    not zero, and the text of ``metadata`` (the days or columns it names)."""
    failed = {name: int(count) for name, count in failures.items() if count}
    description = None
    if failed:
        named = [f"{k}: {v}" for k, v in metadata.items() if isinstance(v, str) and v not in ("", "{}", "[]")]
        description = "failed: " + ", ".join(f"{name} = {count:,}" for name, count in failed.items())
        description += f" ({'; '.join(named)})" if named else ""
        dg.get_dagster_logger().error(description)
    return dg.AssetCheckResult(
        passed=not failed,
        metadata={**{k: int(v) for k, v in failures.items()}, **metadata},
        description=description,
    )


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


def sum_per_batch(
    each_batch: EachBatch,
    frame: pl.LazyFrame,
    *stats: pl.Expr,
    also: Callable[[list[dt.date]], pl.LazyFrame] | None = None,
) -> dict[str, int]:
    """``stats`` (one count each) of every checked day, summed; with ``also``, the counts of the one-row
    frame ``also(days)`` too, collected together with them (one ``pl.collect_all`` per batch of days)."""
    total = {stat.meta.output_name(): 0 for stat in stats}

    def of_days(days: list[dt.date], engine: str) -> dict[str, int | None]:
        queries = [frame.filter(in_days(days)).select(*stats), *([also(days)] if also else [])]
        return {k: v for row in pl.collect_all(queries, engine=engine) for k, v in row.row(0, named=True).items()}

    for counts in each_batch(of_days):
        for name, value in counts.items():
            total[name] = total.get(name, 0) + int(value or 0)
    return total
