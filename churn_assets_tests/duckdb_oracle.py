"""An independent oracle of the daily chain: ``raw_events``, ``install_times``, ``user_daily``, ``features`` and
``labels`` of a local landing zone of JSON lines, in plain DuckDB SQL written from the contract (DESIGN.md,
docs/features.md, the assets' docstrings and column descriptions) and docs/operations.md's list of quarantine
reasons, not from the chain's code. What the docs leave open and the oracle had to choose is said where it is
chosen (rounding, which copy of a duplicate id stays, what a parsable time is).

Each table holds every partition day from the first partition to the last landing day, with a ``date`` column
(the partition): what the chain's ``{asset}/date=D/`` partitions hold, stacked.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl

# raw_events (DESIGN.md, "Landing zone"): the landing rows of complete days, each typed to the canonical columns;
# untrustworthy rows left out (DESIGN.md's list, and docs/operations.md's "The quarantine": a blank id or type,
# revenue above 10^9 or not a finite number, a session id not a whole number), then each event id once per export
# day: its first trusted copy, in the order of the files' names and of their lines.
RAW_EVENTS = """
CREATE TABLE raw_events AS
WITH landing AS (
  SELECT CAST(date AS DATE) AS date, "$insert_id" AS event_id, user_id,
         -- a time of day is required (a bare date is unparsable); an offset is honoured; the session's zone is UTC
         CAST(try_cast(CASE WHEN contains(event_time, ':') THEN trim(event_time) END AS TIMESTAMPTZ) AS TIMESTAMP)
           AS event_time, event_type, row_number() OVER () AS position,  -- files by name, then lines
         -- a whole number of milliseconds, as an integer or a float (1738108860000.0); anything else is unparsable
         CASE WHEN try_cast(session_id AS DOUBLE) % 1 = 0 THEN try_cast(session_id AS BIGINT) END AS session_id,
         session_id IS NOT NULL AS session_given, platform, country, version_name AS app_version,
         try_cast(revenue AS DOUBLE) AS revenue
  FROM read_json({files}, format = 'newline_delimited', hive_partitioning = true, union_by_name = true,
                 ignore_errors = true,  -- a malformed line is quarantined
                 columns = {{'$insert_id': 'VARCHAR', 'user_id': 'VARCHAR', 'event_time': 'VARCHAR',
                             'event_type': 'VARCHAR', 'session_id': 'VARCHAR', 'platform': 'VARCHAR',
                             'country': 'VARCHAR', 'version_name': 'VARCHAR', 'revenue': 'VARCHAR'}})
), trusted AS (
  SELECT * EXCLUDE (session_id, session_given), nullif(session_id, -1) AS session_id FROM landing
  WHERE ltrim(user_id) <> '' AND ltrim(event_id) <> '' AND ltrim(event_type) <> '' AND event_time IS NOT NULL
    AND event_time < date + INTERVAL 1 DAY AND event_time >= date - INTERVAL 7 DAY
    AND coalesce(revenue, 0) BETWEEN 0 AND 1e9 AND (session_id IS NOT NULL OR NOT session_given)
)
SELECT DISTINCT ON (date, event_id) * EXCLUDE (position) FROM trusted ORDER BY date, event_id, position
"""

# install_times[D]: every user seen in raw_events[..D]: the earliest event time, first and last export day.
INSTALL_TIMES = """
CREATE TABLE install_times AS
SELECT days.date, user_id, min(event_time) AS install_time,
       min(e.date) AS first_active_date, max(e.date) AS last_active_date
FROM days JOIN raw_events e ON e.date <= days.date
GROUP BY days.date, user_id
"""

# user_daily[D]: one row per user with events exported on D.
USER_DAILY = """
CREATE TABLE user_daily AS
WITH sessions AS (
  SELECT date, user_id, session_id,
         epoch_us(max(event_time)) - epoch_us(min(event_time)) AS span_us
  FROM raw_events WHERE session_id IS NOT NULL GROUP BY ALL
), per_user_sessions AS (
  SELECT date, user_id, count(*) AS n_sessions, sum(span_us) / 60e6 AS session_minutes
  FROM sessions GROUP BY ALL
), last_attributes AS (
  SELECT date, user_id,
    arg_max(platform, (event_time, event_id)) FILTER (WHERE platform IS NOT NULL) AS platform,
    arg_max(country, (event_time, event_id)) FILTER (WHERE country IS NOT NULL) AS country,
    arg_max(app_version, (event_time, event_id)) FILTER (WHERE app_version IS NOT NULL) AS app_version
  FROM raw_events GROUP BY ALL
)
SELECT e.date, e.user_id, {type_counts},
       count(*) AS n_events,
       coalesce(any_value(s.n_sessions), 0) AS n_sessions,
       coalesce(any_value(s.session_minutes), 0) AS session_minutes,
       coalesce(sum(e.revenue), 0) AS revenue,
       count(*) FILTER (WHERE e.revenue > 0) AS n_purchases,
       any_value(a.platform) AS platform, any_value(a.country) AS country, any_value(a.app_version) AS app_version,
       any_value(e.date - CAST(i.install_time AS DATE)) AS days_since_install
FROM raw_events e
LEFT JOIN per_user_sessions s USING (date, user_id)
JOIN last_attributes a USING (date, user_id)
JOIN install_times i USING (date, user_id)
GROUP BY e.date, e.user_id
"""

# features[D] (docs/features.md): the user_daily rows of D-27..D of the users installed by D.
FEATURES = """
CREATE TABLE features AS
WITH windows AS (
  SELECT days.date, u.date AS day, days.date - u.date AS ago,
         u.* EXCLUDE (date, session_minutes, revenue),  -- each day's to 1e-6, as the docs give them
         round_even(u.session_minutes * 1e6, 0) / 1e6 AS session_minutes,  -- a tie to the even millionth
         round_even(u.revenue * 1e6, 0) / 1e6 AS revenue,
         least(28, days.date - DATE '{start}' + 1) AS history_days
  FROM days JOIN user_daily u ON u.date BETWEEN days.date - 27 AND days.date
), islands AS (  -- consecutive active days share day - rank
  SELECT *, day - CAST(row_number() OVER (PARTITION BY date, user_id ORDER BY day) AS INTEGER) AS island
  FROM windows
), streaks AS (
  SELECT date, user_id, arg_max(island, day) AS last_island FROM islands GROUP BY ALL
), per_user AS (
  SELECT w.date, w.user_id, any_value(w.history_days) AS history_days,
    any_value(w.date - CAST(i.install_time AS DATE)) AS tenure_days,
    min(w.ago) AS days_since_last_active,
    count(*) FILTER (WHERE isl.island = st.last_island) AS active_days_streak,
    {windowed},
    {per_type},
    count(*) FILTER (WHERE w.ago BETWEEN 7 AND 13) AS active_days_prev_7d,
    coalesce(sum(w.n_events) FILTER (WHERE w.ago BETWEEN 7 AND 13), 0) AS n_events_prev_7d,
    coalesce(sum(w.session_minutes) FILTER (WHERE w.ago BETWEEN 7 AND 13), 0) AS session_minutes_prev_7d,
    -- slope over the x = the history's days, y = ln(1 + events), 0 on inactive days: sum((x - mean) y) / Sxx
    sum(((w.history_days - 1) / 2.0 - w.ago) * ln(1 + w.n_events)) AS slope_numerator,
    arg_max(w.platform, w.day) FILTER (WHERE w.platform IS NOT NULL) AS platform,
    arg_max(w.country, w.day) FILTER (WHERE w.country IS NOT NULL) AS country,
    arg_max(w.app_version, w.day) FILTER (WHERE w.app_version IS NOT NULL) AS app_version
  FROM windows w
  JOIN islands isl ON isl.date = w.date AND isl.user_id = w.user_id AND isl.day = w.day
  JOIN streaks st ON st.date = w.date AND st.user_id = w.user_id
  JOIN install_times i ON i.date = w.date AND i.user_id = w.user_id
  GROUP BY w.date, w.user_id
)
SELECT date, user_id, history_days, tenure_days, days_since_last_active,
       active_days_streak AS active_streak_days,
       {windowed_names},
       {per_type_names},
       active_days_7d - active_days_prev_7d AS active_days_trend_7d,
       ln((1 + n_events_7d) / (1 + n_events_prev_7d)) AS n_events_trend_7d,
       ln((1 + session_minutes_7d) / (1 + session_minutes_prev_7d)) AS session_minutes_trend_7d,
       CASE WHEN history_days >= 2
            THEN slope_numerator / (history_days * (history_days * history_days - 1) / 12.0) END
         AS activity_slope_28d,
       active_days_28d / least(history_days, tenure_days + 1) AS active_share_28d,
       platform, country, app_version
FROM per_user
"""

# labels[D]: the users of features[D-H]; churned = 1 without a user_daily row in D-H+1..D.
LABELS = """
CREATE TABLE labels AS
SELECT days.date, f.user_id, f.date AS snapshot_date,
       CAST(NOT EXISTS (SELECT 1 FROM user_daily u WHERE u.user_id = f.user_id
                        AND u.date BETWEEN f.date + 1 AND days.date) AS TINYINT) AS churned
FROM days JOIN features f ON f.date = days.date - {horizon}
"""

WINDOWS = {"1d": 0, "7d": 6, "14d": 13, "28d": 27}  # the window's name -> the oldest day's distance from D
SUMMED = ("n_events", "n_sessions", "session_minutes", "revenue", "n_purchases")


def _windowed(names_only: bool) -> str:
    parts = []
    for name, oldest in WINDOWS.items():
        parts.append(f"active_days_{name}" if names_only else
                     f"count(*) FILTER (WHERE w.ago <= {oldest}) AS active_days_{name}")
        for column in SUMMED:
            parts.append(f"{column}_{name}" if names_only else
                         f"coalesce(sum(w.{column}) FILTER (WHERE w.ago <= {oldest}), 0) AS {column}_{name}")
    return ",\n    ".join(parts)


def _per_type(event_types: list[str], names_only: bool) -> str:
    parts = []
    for name in ("7d", "28d"):
        for event_type in event_types:
            column = f"n_{event_type}_{name}"
            parts.append(column if names_only else
                         f"coalesce(sum(w.n_{event_type}) FILTER (WHERE w.ago <= {WINDOWS[name]}), 0) AS {column}")
    return ",\n    ".join(parts)


def landing_days(landing: Path) -> list[dt.date]:
    """The complete export days of a local landing zone (a ``_SUCCESS`` in the day's folder)."""
    return sorted(dt.date.fromisoformat(p.parent.name.removeprefix("date="))
                  for p in (landing / "events").glob("date=*/_SUCCESS"))


def compute(landing: Path, start: dt.date, event_types: list[str], horizon: int) -> dict[str, pl.DataFrame]:
    """The oracle's ``raw_events``, ``install_times``, ``user_daily``, ``features`` and ``labels`` of every day from
    ``start`` to the last complete landing day, each a frame with its partition's ``date``."""
    complete = landing_days(landing)
    files = [str(f) for d in complete for f in sorted((landing / "events" / f"date={d}").glob("*.jsonl*"))]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET threads = 1")  # one reader: row_number() OVER () numbers the rows in file and line order
    con.execute(f"CREATE TABLE days AS SELECT CAST(range AS DATE) AS date "
                f"FROM range(DATE '{start}', DATE '{complete[-1]}' + 1, INTERVAL 1 DAY)")
    con.execute(RAW_EVENTS.format(files=files))
    con.execute(INSTALL_TIMES)
    type_counts = ", ".join(f"count(*) FILTER (WHERE e.event_type = '{t}') AS n_{t}" for t in event_types)
    con.execute(USER_DAILY.format(type_counts=type_counts))
    con.execute(FEATURES.format(
        start=start, windowed=_windowed(False), windowed_names=_windowed(True),
        per_type=_per_type(event_types, False), per_type_names=_per_type(event_types, True)))
    con.execute(LABELS.format(horizon=horizon))
    tables = ("raw_events", "install_times", "user_daily", "features", "labels")
    return {t: pl.from_arrow(con.sql(f"SELECT * FROM {t} ORDER BY ALL").to_arrow_table()) for t in tables}
