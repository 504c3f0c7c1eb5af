"""The erased users: the user ids whose data the platform erased (GDPR art. 17) and keeps out for good.

One table, ``{CHURN_DATA_URL}/erased_users/data.parquet`` (``user_id``, ``erased_at``), on the local disk or S3 like
the rest of the lake and written the same way (atomically, ``Lake.write_table``). ``churn-assets erase`` adds to it;
``raw_events`` reads it once a run and leaves these users' rows out of every day it reads, so a re-run or a backfill
from the landing files, which still hold them (the platform never changes the landing zone), never brings them back.
No file: nobody was erased, and ``raw_events`` does nothing more than find that out.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable

import polars as pl

from churn_assets.resources.lake import Lake

ERASED_USERS = "erased_users"
ERASED_USERS_SCHEMA = {"user_id": pl.String(), "erased_at": pl.Datetime("us", "UTC")}


def erased_users_url(lake: Lake) -> str:
    return lake.table_url(ERASED_USERS)


def read_erased_users(lake: Lake) -> pl.DataFrame | None:
    """The erased users' table, or None when the lake has none (nobody was erased): one read of a file that is
    not there (on S3 one GET, answered 404), and nothing else."""
    url = erased_users_url(lake)
    try:
        data = lake.read_bytes(url)
    except FileNotFoundError:
        return None
    return pl.read_parquet(io.BytesIO(data))


def erased_user_ids(lake: Lake) -> pl.Series | None:
    """The erased user ids, or None when nobody was erased."""
    table = read_erased_users(lake)
    return None if table is None else table.get_column("user_id")


def add_erased_users(lake: Lake, user_ids: Iterable[str], now: dt.datetime) -> pl.DataFrame:
    """Adds ``user_ids`` (those not on it yet, erased at ``now``) to the table and stores it in one atomic write;
    returns the table as stored. The ids already on it keep their ``erased_at``."""
    before = read_erased_users(lake)
    before = pl.DataFrame(schema=ERASED_USERS_SCHEMA) if before is None else before
    new = sorted(set(user_ids) - set(before.get_column("user_id").to_list()))
    added = pl.DataFrame({"user_id": new, "erased_at": [now] * len(new)}, schema=ERASED_USERS_SCHEMA)
    table = pl.concat([before, added]).sort("user_id")
    if new:
        lake.write_table(erased_users_url(lake), table)
    return table


def without_erased(frame: pl.DataFrame, erased: pl.Series) -> pl.DataFrame:
    """``frame``'s rows of users other than ``erased``, in their order (rows without a user id stay)."""
    return frame.filter(pl.col("user_id").is_null() | ~pl.col("user_id").cast(pl.String).is_in(erased.implode()))
