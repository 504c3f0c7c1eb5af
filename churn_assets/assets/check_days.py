"""What the blocking checks of daily assets share: a result from failure counts, and a pass over the checked
days one day at a time, so that a check's memory follows the largest day, not the length of the range."""

import datetime as dt
from collections.abc import Callable, Iterator
from typing import TypeVar

import dagster as dg
import polars as pl

from churn_assets.partitions import largest_window
from churn_assets.threads import engine_for, ordered_map, workers_for

Out = TypeVar("Out")
EachDay = Callable[[Callable[[dt.date, str], Out]], Iterator[Out]]


def check_result(failures: dict[str, int], **metadata: object) -> dg.AssetCheckResult:
    """Passed when every failure count is zero; the counts and ``metadata`` are the check's metadata."""
    return dg.AssetCheckResult(
        passed=not any(failures.values()),
        metadata={**{k: int(v) for k, v in failures.items()}, **metadata},
    )


def each_checked_day(context: dg.AssetCheckExecutionContext, frame: pl.LazyFrame) -> EachDay:
    """A map over the checked days: ``each_day(of_day)`` yields ``of_day(day, engine)`` for every day, in
    order, two days at once while ``frame``'s days are small (memory is bounded by the largest partitions,
    not by the range), with the polars engine for that size. The days' sizes are looked up once (0.5 s for
    a day of 28 M events), however many passes a check makes."""
    days = [dt.date.fromisoformat(key) for key in context.partition_keys]
    largest = largest_window(frame, days, 1)
    engine = engine_for(largest)

    def each_day(of_day: Callable[[dt.date, str], Out]) -> Iterator[Out]:
        return ordered_map(lambda day: of_day(day, engine), days, workers=workers_for(largest))

    return each_day


def sum_per_day(
    each_day: EachDay, frame: pl.LazyFrame, *stats: pl.Expr, also: Callable[[dt.date], pl.LazyFrame] | None = None
) -> dict[str, int]:
    """``stats`` (one count each) of every checked day, summed; with ``also``, the counts of the one-row
    frame ``also(day)`` too, collected in the same pass over the day."""
    total = {stat.meta.output_name(): 0 for stat in stats}

    def of_day(day: dt.date, engine: str) -> dict[str, int | None]:
        queries = [frame.filter(pl.col("date") == day).select(*stats), *([also(day)] if also else [])]
        return {k: v for row in pl.collect_all(queries, engine=engine) for k, v in row.row(0, named=True).items()}

    for counts in each_day(of_day):
        for name, value in counts.items():
            total[name] = total.get(name, 0) + int(value or 0)
    return total
