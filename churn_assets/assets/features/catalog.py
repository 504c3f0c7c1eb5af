"""The feature catalog: every column of a ``features`` partition, its type and what it means.

It is the single source of the features' schema: ``features`` casts to it, its asset metadata and
``docs/features.md`` are generated from it (``churn-assets features-doc > docs/features.md`` rewrites
the doc; a test keeps the committed one equal to the generated one), so code, UI and docs agree.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl

from churn_assets.assets.ingest.landing_files import ATTRIBUTES
from churn_assets.assets.ingest.user_daily import event_type_column
from churn_assets.config import DEFAULT_EVENT_TYPES
from churn_assets.resources.parquet_io_manager import column_schema

# Windows end on the snapshot day D: "7d" means the days D-6..D.
WINDOWS: tuple[int, ...] = (1, 7, 14, 28)
TYPE_WINDOWS: tuple[int, ...] = (7, 28)
LOOKBACK_DAYS = max(WINDOWS)
TREND_DAYS = 7

# user_daily columns summed over each window, with their feature dtype and meaning.
WINDOW_SUMS: tuple[tuple[str, pl.DataType, str], ...] = (
    ("n_events", pl.Int64(), "events (all types)"),
    ("n_sessions", pl.Int64(), "sessions"),
    ("session_minutes", pl.Float64(), "session minutes (first to last event of each session, to 1e-6 minute)"),
    ("revenue", pl.Float64(), "revenue (to 1e-6)"),
    ("n_purchases", pl.Int64(), "events with positive revenue"),
)
CATEGORICAL_COLUMNS: tuple[str, ...] = ATTRIBUTES  # the events' attributes, as user_daily carries them


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: pl.DataType
    kind: str  # "numeric" | "categorical"
    definition: str
    nullable: bool


def window_days(window: int) -> str:
    return "D" if window == 1 else f"D-{window - 1}..D"


def feature_catalog(event_types: Sequence[str]) -> list[Feature]:
    """The ordered columns of a ``features`` partition besides ``user_id``, for these tracked event types."""

    def numeric(name: str, dtype: pl.DataType, definition: str, nullable: bool = False) -> Feature:
        return Feature(name, dtype, "numeric", definition, nullable)

    catalog = [
        numeric(
            "history_days",
            pl.Int32(),
            f"Days of the window D-{LOOKBACK_DAYS - 1}..D on or after the first daily partition "
            f"(CHURN_START_DATE): {LOOKBACK_DAYS} except in the first weeks, when windows are shorter.",
        ),
        numeric("tenure_days", pl.Int32(), "D minus the (UTC) day of the user's install time."),
        numeric(
            "days_since_last_active",
            pl.Int32(),
            f"D minus the last day with activity in D-{LOOKBACK_DAYS - 1}..D (0: active on D).",
        ),
        numeric(
            "active_streak_days",
            pl.Int32(),
            "Consecutive active days ending on the last active day (within the window).",
        ),
    ]
    for window in WINDOWS:
        days = window_days(window)
        catalog.append(numeric(f"active_days_{window}d", pl.Int32(), f"Days with activity in {days}."))
        for column, dtype, meaning in WINDOW_SUMS:
            catalog.append(numeric(f"{column}_{window}d", dtype, f"Sum of {meaning} over {days}."))
    for window in TYPE_WINDOWS:
        for event_type in event_types:
            catalog.append(
                numeric(
                    f"{event_type_column(event_type)}_{window}d",
                    pl.Int64(),
                    f"Count of `{event_type}` events in {window_days(window)}.",
                )
            )
    recent, before = f"D-{TREND_DAYS - 1}..D", f"D-{2 * TREND_DAYS - 1}..D-{TREND_DAYS}"
    catalog += [
        numeric(
            "active_days_trend_7d",
            pl.Int32(),
            f"Active days in {recent} minus active days in {before} (days before the start count as inactive).",
        ),
        numeric(
            "n_events_trend_7d",
            pl.Float64(),
            f"ln((1 + events in {recent}) / (1 + events in {before})): > 0 rising, < 0 fading.",
        ),
        numeric(
            "session_minutes_trend_7d",
            pl.Float64(),
            f"ln((1 + session minutes in {recent}) / (1 + session minutes in {before})).",
        ),
        numeric(
            "activity_slope_28d",
            pl.Float64(),
            "Least-squares slope of ln(1 + events) per day against the day, over the window's "
            "history_days days (inactive days count as 0); null with fewer than 2 days of history.",
            nullable=True,
        ),
        numeric(
            "active_share_28d",
            pl.Float64(),
            "active_days_28d divided by the days the user could have been active: "
            "min(history_days, tenure_days + 1).",
        ),
    ]
    for column in CATEGORICAL_COLUMNS:
        catalog.append(
            Feature(
                column,
                pl.String(),
                "categorical",
                f"The user's last non-null `{column}` in D-{LOOKBACK_DAYS - 1}..D (from user_daily).",
                nullable=True,
            )
        )
    names = [f.name for f in catalog]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"feature names collide for event types {list(event_types)}: {duplicates}")
    return catalog


def features_schema(event_types: Sequence[str]) -> dict[str, pl.DataType]:
    """The stored columns of a ``features`` partition, in order."""
    return {"user_id": pl.String(), **{f.name: f.dtype for f in feature_catalog(event_types)}}


def table_schema(event_types: Sequence[str]) -> dg.TableSchema:
    """The catalog as a Dagster column schema, with each column's definition as its description."""
    catalog = feature_catalog(event_types)
    return column_schema(
        features_schema(event_types),
        {"user_id": "The user.", **{f.name: f.definition for f in catalog}},
        key="user_id",
        not_null=[f.name for f in catalog if not f.nullable],
    )


def catalog_markdown(event_types: Sequence[str] = DEFAULT_EVENT_TYPES) -> str:
    """``docs/features.md``: the catalog as a Markdown table (per-type columns for these event types)."""
    default = tuple(event_types) == DEFAULT_EVENT_TYPES
    which = "default types" if default else "types given to `churn-assets features-doc --event-types`"
    lines = [
        "# Features",
        "",
        "<!-- Generated from churn_assets/assets/features/catalog.py by",
        "     `churn-assets features-doc > docs/features.md`; do not edit by hand. -->",
        "",
        "`features[D]` holds one row per user *at risk* on D (installed on or before D, active at least once",
        f"in D-{LOOKBACK_DAYS - 1}..D), sorted by `user_id`, computed from `user_daily[D-{LOOKBACK_DAYS - 1}..D]`"
        " and `install_times[D]` only:",
        "nothing after the end of D. \"Active on a day\" means the user has a `user_daily` row for that",
        "export day. Categorical columns are strings; every other column is numeric.",
        "",
        "Choices real data meets ([operations.md, \"Extremes of real data\"](operations.md#extremes-of-real-data)):",
        "an event counts on the day it was exported, up to 7 days after it happened. A user's platform, country",
        "and app version are those of the last day in the window that had one, and on that day of the user's last",
        "event that had one by event time, ties going to the greatest event id: the same in every run. Revenue is",
        "summed as exported: no currency is converted, refunds (negative revenue) are quarantined, and a user's day",
        "of more than 10^11 fails `user_daily`. A day the app was down is a day without activity for every user.",
        "",
        "Per-event-type columns exist for each type in `CHURN_EVENT_TYPES`; this page lists them for the",
        f"{which} ({', '.join(f'`{t}`' for t in event_types)}).",
        "",
        "| column | type | kind | nullable | definition |",
        "|---|---|---|---|---|",
        "| `user_id` | String | key | no | The user. |",
    ]
    for f in feature_catalog(event_types):
        lines.append(
            f"| `{f.name}` | {f.dtype} | {f.kind} | {'yes' if f.nullable else 'no'} | {f.definition} |"
        )
    return "\n".join(lines) + "\n"
