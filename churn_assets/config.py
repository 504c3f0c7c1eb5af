"""The platform's configuration: every environment variable is read here, once, when definitions load.

Asset code never calls ``os.getenv``; it receives a :class:`ChurnSettings` (through resources or the
module-level ``SETTINGS``) so that a test or a deployment changes behaviour in one place.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# The event types the simulator emits; counted one by one unless CHURN_EVENT_TYPES says otherwise.
DEFAULT_EVENT_TYPES: tuple[str, ...] = (
    "session_start",
    "screen_view",
    "feature_use",
    "content_create",
    "share",
    "paywall_view",
    "purchase",
    "ad_impression",
    "push_open",
    "app_error",
)


# The count columns user_daily always has (``TOTAL_COLUMNS`` in assets/ingest/user_daily.py): no tracked
# event type may be counted under one of these names.
TOTAL_COUNT_COLUMNS: tuple[str, ...] = ("n_events", "n_sessions", "n_purchases")


def event_type_column(event_type: str) -> str:
    """The count column of one tracked event type, e.g. ``paywall_view`` → ``n_paywall_view``."""
    return "n_" + re.sub(r"[^0-9a-zA-Z]+", "_", event_type).strip("_").lower()


def parse_event_types(value: str, name: str = "CHURN_EVENT_TYPES") -> tuple[str, ...]:
    """The comma-separated event types, each counted in a column of its own (``name``: where they come from,
    for the messages)."""
    event_types = tuple(t for t in (t.strip() for t in value.split(",")) if t)
    if not event_types:
        raise ValueError(f"{name} is set but names no event type")
    by_column: dict[str, list[str]] = {}
    for event_type in event_types:
        by_column.setdefault(event_type_column(event_type), []).append(event_type)
    for column, types in by_column.items():
        if column == "n_":
            raise ValueError(f"{name}: {types[0]!r} has no letter or digit to name its count column")
        if len(types) > 1:
            raise ValueError(
                f"{name}: {' and '.join(map(repr, types))} would both be counted in {column}: "
                "name each type once (names differing only in case or punctuation are the same column)"
            )
        if column in TOTAL_COUNT_COLUMNS:
            raise ValueError(
                f"{name}: {types[0]!r} would be counted in {column}, a total user_daily always has: "
                "rename the type"
            )
    return event_types


def bucket_of(url: str) -> str:
    """The bucket an ``s3://`` URL names ("" when it names none)."""
    return url.removeprefix("s3://").split("/", 1)[0]


def resolve_url(url: str) -> str:
    """An ``s3://`` URL as it is; a local path made absolute (so runs started elsewhere agree)."""
    url = url.strip()  # an env file's stray space would otherwise become part of every key or folder name
    if "://" in url:
        if not url.startswith(("s3://", "file://")):
            raise ValueError(f"unsupported storage URL {url!r}: use a local path or s3://bucket/prefix")
        if url.startswith("file://"):
            url = url[len("file://") :]
        else:
            if not bucket_of(url):
                raise ValueError(f"storage URL {url!r} names no bucket: use s3://bucket/prefix")
            return url.rstrip("/")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", url):  # "s3:/bucket": a slash short, not a folder named "s3:"
        raise ValueError(
            f"storage URL {url!r} is not s3://bucket/prefix nor a local path: write s3://… in full "
            f"(or ./{url} for a local folder of that name)"
        )
    return str(Path(url).expanduser().resolve())


def _parse_url(name: str, value: str) -> str:
    try:
        return resolve_url(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


# The variable holding the alert webhook's URL: the resource reads it through dg.EnvVar (resources.build_resources).
WEBHOOK_VARIABLE = "CHURN_ALERT_WEBHOOK"


def _parse_webhook(name: str, value: str) -> str | None:
    """An http(s) URL, or None. Refused when it loads, not when the first failed run's alert cannot be posted
    (``hooks.example.com/x`` without its scheme, say): that alert would be lost."""
    value = value.strip()
    if not value:
        return None
    if not value.lower().startswith(("http://", "https://")) or not value.split("://", 1)[1].split("/", 1)[0]:
        raise ValueError(f"{name}={redacted_url(value)!r} is not an http:// or https:// URL")
    return value


def redacted_url(url: str) -> str:
    """``url`` as messages, logs and the UI may show it: its scheme and host, with ``/…`` for the rest. A
    webhook's path or query is its token (``hooks.slack.com/services/T…/B…/SECRET``), and a ``user:password@``
    before the host is a password: anyone who reads a sensor's log or a code location's load error could post
    to it."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        scheme, rest = "", scheme
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host = authority.rsplit("@", 1)[-1]
    return f"{scheme}{separator}{host}{'/…' if rest != host else ''}"


def _parse_app(name: str, value: str) -> str | None:
    """The app's name, or None: it becomes the first part of every asset key and of the jobs', schedules' and sensors'
    names, which Dagster allows letters, digits and ``_`` in."""
    value = value.strip()
    if value and not re.fullmatch(r"[a-z][a-z0-9_]*", value):
        raise ValueError(
            f"{name}={value!r} is not an app name: use lowercase letters, digits and _, starting with a letter "
            "(e.g. puzzle)"
        )
    return value or None


def _parse_date(name: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{name}={value!r} is not a date in YYYY-MM-DD form") from exc


def _parse_int(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise ValueError(f"{name}={value!r} is not a whole number") from exc
    if number < minimum:
        raise ValueError(f"{name}={number} must be at least {minimum}")
    return number


def _parse_deadline(name: str, value: str) -> int | None:
    """Whole hours from 1 to 48, or ``off``."""
    if value.strip().lower() == "off":
        return None
    hours = _parse_int(name, value.strip(), 1)
    if hours > 48:
        raise ValueError(f"{name}={hours} must be at most 48 (hours after the day's end), or off")
    return hours


def _parse_share(name: str, value: str) -> float:
    try:
        share = float(value)
    except ValueError as exc:
        raise ValueError(f"{name}={value!r} is not a number") from exc
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name}={share} must be between 0 and 1")
    return share


DEFAULT_DATA_URL = "./data/lake"
DEFAULT_LANDING_URL = "./data/landing"


@dataclass(frozen=True)
class ChurnSettings:
    data_url: str = field(default_factory=lambda: resolve_url(DEFAULT_DATA_URL))
    landing_url: str = field(default_factory=lambda: resolve_url(DEFAULT_LANDING_URL))
    start_date: dt.date = dt.date(2025, 1, 1)
    # The app this code location is for when one Dagster instance holds several (docs/operations.md, "More than one
    # app"): its asset keys are prefixed with it (``puzzle/raw_events``) and its automation named after it
    # (``puzzle_daily_refresh``). None: DESIGN.md's keys and names as they are.
    app: str | None = None
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    alert_webhook: str | None = None
    # Whether alert_webhook was read from the process's WEBHOOK_VARIABLE (not given in code): the alerts
    # resource then takes the variable as a dg.EnvVar, so the UI's resource page shows its name, not the
    # URL, which is a credential of its own (a Slack or Teams webhook posts for whoever holds it).
    alert_webhook_from_env: bool = False
    horizon_days: int = 14
    lookback_months: int = 3
    # Cap on the rows of one monthly training set (a seeded, stratified sample beyond it): bounds memory.
    max_training_rows: int = 500_000
    # Above this share of a day's rows quarantined, raw_events' blocking check fails the day: a broken
    # export (a changed time format, renamed keys), not a dirty one.
    max_quarantined_share: float = 0.5
    # Automation (churn_assets/automation): how often the landing zone is polled, what share of drifted
    # columns asks for a retraining, and the least time between two retraining requests.
    landing_sensor_interval_seconds: int = 60
    # Hours after a day's end (UTC) by which its export's _SUCCESS is due; later, landing_sensor alerts (None: never).
    landing_deadline_hours: int | None = 6
    drift_threshold: float = 0.5
    retraining_cooldown_days: int = 7
    # Fewer users compared than this, and a day's drift report concludes nothing (no dataset drift, not counted by
    # drift_retraining_sensor): Evidently's distance tests call 88-98 % of the columns of 1-50 users of the
    # reference's own population drifted, up to 71 % of 200, at most 9 % of 500 (docs/operations.md, "Drift on a
    # day of few users").
    drift_min_rows: int = 500

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ChurnSettings:
        """The settings the ``CHURN_*`` variables of ``env`` (default: the process's) give; a variable unset or
        empty takes the field's default above, the one place defaults are written (README's table shows them)."""
        from_process = env is None  # a dg.EnvVar resolves from the process's environment only
        env = dict(os.environ if env is None else env)

        def setting(name: str, default: object) -> str:
            return env.get(name) or str(default)

        event_types = parse_event_types(setting("CHURN_EVENT_TYPES", ",".join(cls.event_types)))
        alert_webhook = _parse_webhook(WEBHOOK_VARIABLE, env.get(WEBHOOK_VARIABLE) or "")
        return cls(
            data_url=_parse_url("CHURN_DATA_URL", setting("CHURN_DATA_URL", DEFAULT_DATA_URL)),
            landing_url=_parse_url("CHURN_LANDING_URL", setting("CHURN_LANDING_URL", DEFAULT_LANDING_URL)),
            app=_parse_app("CHURN_APP", env.get("CHURN_APP") or ""),
            start_date=_parse_date("CHURN_START_DATE", setting("CHURN_START_DATE", cls.start_date)),
            event_types=event_types,
            alert_webhook=alert_webhook,
            alert_webhook_from_env=bool(alert_webhook) and from_process,
            horizon_days=_parse_int("CHURN_HORIZON_DAYS", setting("CHURN_HORIZON_DAYS", cls.horizon_days), 1),
            # Two at least: the time-based split needs 31 days of snapshots, more than one month holds after
            # the horizon (a 28- or 30-day month's model failed, a 31-day month's trained on one day a block).
            lookback_months=_parse_int(
                "CHURN_TRAINING_LOOKBACK_MONTHS", setting("CHURN_TRAINING_LOOKBACK_MONTHS", cls.lookback_months), 2
            ),
            max_training_rows=_parse_int(
                "CHURN_MAX_TRAINING_ROWS", setting("CHURN_MAX_TRAINING_ROWS", cls.max_training_rows), 1
            ),
            max_quarantined_share=_parse_share(
                "CHURN_MAX_QUARANTINED_SHARE", setting("CHURN_MAX_QUARANTINED_SHARE", cls.max_quarantined_share)
            ),
            landing_sensor_interval_seconds=_parse_int(
                "CHURN_LANDING_SENSOR_INTERVAL",
                setting("CHURN_LANDING_SENSOR_INTERVAL", cls.landing_sensor_interval_seconds),
                1,
            ),
            landing_deadline_hours=_parse_deadline(
                "CHURN_LANDING_DEADLINE_HOURS", setting("CHURN_LANDING_DEADLINE_HOURS", cls.landing_deadline_hours)
            ),
            drift_threshold=_parse_share(
                "CHURN_DRIFT_THRESHOLD", setting("CHURN_DRIFT_THRESHOLD", cls.drift_threshold)
            ),
            retraining_cooldown_days=_parse_int(
                "CHURN_RETRAINING_COOLDOWN_DAYS",
                setting("CHURN_RETRAINING_COOLDOWN_DAYS", cls.retraining_cooldown_days),
                0,
            ),
            drift_min_rows=_parse_int("CHURN_DRIFT_MIN_ROWS", setting("CHURN_DRIFT_MIN_ROWS", cls.drift_min_rows), 1),
        )


SETTINGS = ChurnSettings.from_env()
