"""The behavioural model: a population of app users whose daily activity is generated with numpy.

Every user is a position in a set of arrays of length ``users``; one call of :meth:`Population.step`
advances all of them by one day and returns that day's events as column arrays. Nothing loops over users
or events in Python.

The model, in short:

* Latent traits per user: ``engagement`` (Beta(2, 2)) and ``friction`` (Beta(1.5, 4)).
* Installs: a base cohort on the first day, then a steady stream of new installs every day.
* A churn hazard per day that falls with engagement and tenure and rises with friction, a low mood and
  recent frustration (app errors, paywalls). A churned user never comes back; their ``churn_date`` is the
  day after their last activity.
* A mood that drifts (AR(1)), so activity fades before users churn; quiet spells of 5-9 days after
  which users come back; activity that decays with friction over tenure; a weekly rhythm.
* Sessions per active day and events per session grow with engagement; ``app_error`` and
  ``paywall_view`` rates grow with friction (and errors with a buggy app release).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from churn_assets.config import DEFAULT_EVENT_TYPES

# The event types, in the order of their integer codes: the default tracked types are exactly these.
EVENT_TYPES: tuple[str, ...] = DEFAULT_EVENT_TYPES
ET = {name: code for code, name in enumerate(EVENT_TYPES)}
SESSION_START, PURCHASE, PUSH_OPEN, APP_ERROR, PAYWALL_VIEW = (
    ET["session_start"],
    ET["purchase"],
    ET["push_open"],
    ET["app_error"],
    ET["paywall_view"],
)
# Event types drawn inside a session after its session_start, in this order.
IN_SESSION_TYPES = np.array(
    [ET[t] for t in ("screen_view", "feature_use", "content_create", "share", "paywall_view", "purchase",
                     "ad_impression", "app_error")],
    dtype=np.int8,
)

PLATFORMS: tuple[str, ...] = ("iOS", "Android", "Web")
PLATFORM_WEIGHTS = np.array([0.46, 0.44, 0.10])

# ISO-2 country, share of users, UTC offset in hours (for the daily rhythm in local time).
COUNTRIES: tuple[tuple[str, float, float], ...] = (
    ("US", 0.30, -5.0),
    ("IN", 0.12, 5.5),
    ("BR", 0.10, -3.0),
    ("DE", 0.09, 1.0),
    ("GB", 0.08, 0.0),
    ("FR", 0.06, 1.0),
    ("JP", 0.05, 9.0),
    ("MX", 0.05, -6.0),
    ("CA", 0.04, -5.0),
    ("AU", 0.04, 10.0),
    ("ES", 0.04, 1.0),
    ("NG", 0.03, 1.0),
)
COUNTRY_CODES = tuple(c for c, _, _ in COUNTRIES)

# Event properties per event type: (value, weight); one entry is drawn per event.
PROPERTIES: dict[str, tuple[str, tuple[tuple[str, float], ...]]] = {
    "session_start": ("source", (("organic", 0.8), ("deeplink", 0.2))),
    "screen_view": ("screen", (("home", 0.30), ("feed", 0.25), ("search", 0.10), ("profile", 0.10),
                               ("detail", 0.15), ("settings", 0.04), ("notifications", 0.06))),
    "feature_use": ("feature", (("filters", 0.3), ("search", 0.25), ("sync", 0.2), ("export", 0.1),
                                ("collab", 0.1), ("dark_mode", 0.05))),
    "content_create": ("kind", (("post", 0.4), ("photo", 0.35), ("video", 0.1), ("note", 0.15))),
    "share": ("channel", (("whatsapp", 0.4), ("instagram", 0.3), ("email", 0.1), ("link", 0.2))),
    "paywall_view": ("placement", (("feature_gate", 0.6), ("onboarding", 0.2), ("settings", 0.2))),
    "purchase": ("product", (("pro_monthly", 0.5), ("credits_small", 0.3), ("credits_large", 0.15),
                             ("pro_yearly", 0.05))),
    "ad_impression": ("format", (("banner", 0.6), ("interstitial", 0.3), ("rewarded", 0.1))),
    "push_open": ("campaign", (("reengage", 0.4), ("digest", 0.4), ("promo", 0.2))),
    "app_error": ("code", (("E_NETWORK", 0.45), ("E_TIMEOUT", 0.25), ("E_SYNC", 0.2), ("E_CRASH", 0.1))),
}
PRICES = {"pro_monthly": 4.99, "credits_small": 0.99, "credits_large": 9.99, "pro_yearly": 39.99}


@dataclass(frozen=True)
class PropertyTable:
    """All (event type, property) combinations, indexed by one integer per event."""

    event_type: np.ndarray  # int8 per entry
    key: tuple[str, ...]
    value: tuple[str, ...]
    revenue: np.ndarray  # float64 per entry, NaN when not a purchase
    cum: np.ndarray  # event type code + cumulative weight within the type: searchsorted draws an entry


def build_property_table() -> PropertyTable:
    types, keys, values, revenue, cum = [], [], [], [], []
    for code, name in enumerate(EVENT_TYPES):
        key, choices = PROPERTIES[name]
        weights = np.array([w for _, w in choices])
        c = np.cumsum(weights / weights.sum())
        c[-1] = 1.0
        for (value, _), cw in zip(choices, c):
            types.append(code)
            keys.append(key)
            values.append(value)
            revenue.append(PRICES[value] if name == "purchase" else np.nan)
            cum.append(code + cw)
    cum_arr = np.array(cum)
    return PropertyTable(
        event_type=np.array(types, dtype=np.int8),
        key=tuple(keys),
        value=tuple(values),
        revenue=np.array(revenue),
        cum=cum_arr,
    )


PROPERTY_TABLE = build_property_table()

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND

# Local-time hour-of-day weights for session starts.
_WEEKDAY_HOURS = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.3, 0.9, 2.0, 3.0, 2.2, 1.6, 1.7, 2.6, 2.4, 1.7,
                           1.6, 1.8, 2.3, 2.9, 3.6, 4.0, 3.7, 2.6, 1.2])
_WEEKEND_HOURS = np.array([0.9, 0.6, 0.3, 0.2, 0.1, 0.1, 0.2, 0.5, 1.2, 2.2, 3.0, 3.2, 3.1, 2.9, 2.7,
                           2.6, 2.6, 2.7, 2.9, 3.2, 3.6, 3.4, 2.6, 1.6])
WEEKDAY_HOURS = _WEEKDAY_HOURS / _WEEKDAY_HOURS.sum()
WEEKEND_HOURS = _WEEKEND_HOURS / _WEEKEND_HOURS.sum()

# App releases: a new version every RELEASE_EVERY days; some releases are buggier than others.
RELEASE_EVERY = 14
FIRST_VERSION = 4  # the version current on the first day ("3.1.1")


def version_name(index: int) -> str:
    return f"3.{index // 3}.{index % 3}"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class DayEvents:
    """One day of generated events as parallel column arrays (already in export order)."""

    event_id: np.ndarray  # uint64 (rendered as hex)
    user: np.ndarray  # int32 user index
    time_us: np.ndarray  # int64 epoch microseconds, UTC
    event_type: np.ndarray  # int8 code into EVENT_TYPES
    session_id: np.ndarray  # int64 epoch milliseconds of the session start, -1 for none
    version: np.ndarray  # int16 index of the app version
    prop: np.ndarray  # int16 index into PROPERTY_TABLE

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> DayEvents:
        return DayEvents(*(getattr(self, f)[index] for f in _DAY_FIELDS))

    @staticmethod
    def concat(parts: list[DayEvents]) -> DayEvents:
        return DayEvents(*(np.concatenate([getattr(p, f) for p in parts]) for f in _DAY_FIELDS))

    @staticmethod
    def empty() -> DayEvents:
        return DayEvents(
            np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int8),
            np.empty(0, np.int64), np.empty(0, np.int16), np.empty(0, np.int16),
        )


_DAY_FIELDS = ("event_id", "user", "time_us", "event_type", "session_id", "version", "prop")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64, so distinct counters give distinct ids."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class Population:
    """All users of the simulation and their state; :meth:`step` generates one day."""

    def __init__(self, users: int, days: int, start_us: int, start_weekday: int, rng: np.random.Generator,
                 id_prefix: int):
        if users < 1:
            raise ValueError("users must be at least 1")
        if days < 1:
            raise ValueError("days must be at least 1")
        self.n = users
        self.days = days
        self.start_us = start_us
        self.start_weekday = start_weekday
        self.rng = rng
        # event ids: a per-run 24-bit prefix and a 40-bit counter, assigned in generation order (so the
        # events of a session carry consecutive ids, as a client SDK would number them)
        self.id_base = np.uint64((id_prefix & 0xFFFFFF) << 40)
        self.next_id = 0
        n = users

        self.engagement = rng.beta(2.0, 2.0, n)
        self.friction = rng.beta(1.5, 4.0, n)
        self.platform = rng.choice(len(PLATFORMS), n, p=PLATFORM_WEIGHTS).astype(np.int8)
        shares = np.array([s for _, s, _ in COUNTRIES])
        self.country = rng.choice(len(COUNTRIES), n, p=shares / shares.sum()).astype(np.int8)
        self.tz_us = (np.array([o for _, _, o in COUNTRIES]) * 3600 * US_PER_SECOND).astype(np.int64)[self.country]

        # Installs: 40 % on the first day, the rest spread evenly over the following days.
        base = rng.random(n) < (0.4 if days > 1 else 1.0)
        later = rng.integers(1, max(days, 2), n)
        self.install_day = np.where(base, 0, later).astype(np.int32)
        self.install_us = np.full(n, -1, np.int64)

        # Releases: a version every RELEASE_EVERY days; each with its own error multiplier.
        n_versions = FIRST_VERSION + 1 + days // RELEASE_EVERY + 1
        self.bugginess = rng.lognormal(0.0, 0.45, n_versions)
        self.version = np.full(n, FIRST_VERSION, np.int16)
        # the base cohort runs a mix of the current and the previous two versions
        self.version -= (rng.random(n) < 0.35).astype(np.int16) + (rng.random(n) < 0.15).astype(np.int16)

        self.alive = np.ones(n, bool)
        self.last_active = np.full(n, -1, np.int32)
        self.churn_day = np.full(n, -1, np.int32)  # the day the hazard fired (-1: never)
        self.quiet_left = np.zeros(n, np.int16)
        self.mood = rng.normal(0.0, 0.7, n)
        self.frustration = np.zeros(n)

    @property
    def n_versions(self) -> int:
        return len(self.bugginess)

    def churn_date_index(self) -> np.ndarray:
        """Day index of each user's churn date (day after the last activity), -1 if still active."""
        return np.where(self.alive, -1, self.last_active + 1).astype(np.int32)

    # ------------------------------------------------------------------------------------------------
    def step(self, d: int) -> DayEvents:
        """Advance every user to day ``d`` (0-based) and return the day's events in upload order."""
        rng = self.rng
        n = self.n
        weekend = (self.start_weekday + d) % 7 >= 5
        e, f = self.engagement, self.friction
        tenure = (d - self.install_day).astype(np.float64)
        installed_today = self.install_day == d
        existing = (self.install_day < d) & self.alive

        # app updates: the latest release is adopted gradually
        latest = min(FIRST_VERSION + d // RELEASE_EVERY, self.n_versions - 1)
        upgrade = (self.version < latest) & (rng.random(n) < 0.12 + 0.1 * e)
        self.version = np.where(upgrade | installed_today, latest, self.version).astype(np.int16)

        # mood drifts; friction pulls it down slightly
        self.mood = 0.78 * self.mood + rng.normal(0.0, 0.45, n) - 0.08 * f

        # churn hazard
        logit_h = (-3.5 - 2.6 * (e - 0.5) + 3.2 * (f - 0.27) - 0.55 * self.mood
                   + 0.45 * np.minimum(self.frustration, 5.0) + 1.2 * np.exp(-tenure / 4.0))
        churn = existing & (rng.random(n) < _sigmoid(logit_h))
        self.alive &= ~churn
        self.churn_day[churn] = d
        existing &= ~churn

        # quiet spells: users who go away for a week and come back
        self.quiet_left = np.maximum(self.quiet_left - 1, 0).astype(np.int16)
        go_quiet = existing & (self.quiet_left == 0) & (rng.random(n) < 0.006 + 0.015 * f)
        lengths = rng.integers(5, 10, n).astype(np.int16)
        self.quiet_left = np.where(go_quiet, lengths, self.quiet_left)

        # daily activity
        logit_a = (0.35 + 3.6 * (e - 0.5) - 2.2 * f * np.minimum(tenure, 60.0) / 30.0 + 0.8 * self.mood
                   - 0.25 * np.minimum(self.frustration, 5.0) + (-0.35 if weekend else 0.0))
        active = (existing & (self.quiet_left == 0) & (rng.random(n) < _sigmoid(logit_a))) | installed_today
        au = np.flatnonzero(active).astype(np.int32)
        self.last_active[au] = d
        n_active = len(au)
        if n_active == 0:
            self.frustration *= 0.6
            return DayEvents.empty()

        ea, fa = e[au], f[au]
        new_user = installed_today[au]

        # sessions
        lam_s = (0.3 + 2.2 * ea) * (1.3 if weekend else 1.0)
        n_sessions = 1 + rng.poisson(lam_s)
        s_active = np.repeat(np.arange(n_active), n_sessions)  # index into au per session
        n_s = len(s_active)
        s_user = au[s_active]
        hours = WEEKEND_HOURS if weekend else WEEKDAY_HOURS
        local_us = (rng.choice(24, n_s, p=hours) * 3600 * US_PER_SECOND
                    + rng.integers(0, 3600 * US_PER_SECOND, n_s))
        start_tod = (local_us - self.tz_us[s_user]) % US_PER_DAY
        # a push can bring the user back (push_open just before the session, outside it); not on the
        # install day, before the app has asked for notifications
        has_push = (rng.random(n_s) < 0.06 + 0.10 * (1.0 - ea[s_active])) & ~new_user[s_active]
        mu_ev = (2.5 + 12.0 * ea[s_active]) * (1.1 if weekend else 1.0)
        n_body = rng.poisson(mu_ev)  # events after session_start
        n_ev_s = 1 + n_body + has_push  # events per session, including session_start and push_open

        # events, in session-major order
        total = int(n_ev_s.sum())
        ev_sess = np.repeat(np.arange(n_s), n_ev_s)
        first_ev = np.cumsum(n_ev_s) - n_ev_s
        pos = np.arange(total) - first_ev[ev_sess]
        j = pos - has_push[ev_sess]  # -1: push_open, 0: session_start, >0: in-session events
        gaps = (rng.exponential(22.0, total) * US_PER_SECOND).astype(np.int64) + rng.integers(50_000, 1_500_000, total)
        gaps[j <= 0] = 0
        cs = np.cumsum(gaps)
        off = cs - cs[first_ev[ev_sess]]
        duration = off[first_ev + n_ev_s - 1]
        start = np.minimum(start_tod, US_PER_DAY - 1 - duration)
        start = np.maximum(start, 60 * US_PER_SECOND)
        push_lead = rng.integers(3 * US_PER_SECOND, 55 * US_PER_SECOND, n_s)
        off = np.where(j < 0, -push_lead[ev_sess], off)

        # in-session event types from per-user probabilities
        w = np.empty((n_active, len(IN_SESSION_TYPES)))
        w[:, 0] = 0.50  # screen_view
        w[:, 1] = 0.10 + 0.10 * ea  # feature_use
        w[:, 2] = 0.01 + 0.07 * ea  # content_create
        w[:, 3] = 0.005 + 0.035 * ea  # share
        w[:, 4] = 0.02 + 0.09 * fa  # paywall_view
        w[:, 5] = 0.001 + 0.008 * ea * (1.0 - fa)  # purchase
        w[:, 6] = 0.12  # ad_impression
        w[:, 7] = (0.003 + 0.06 * fa ** 1.5) * self.bugginess[self.version[au]]  # app_error
        cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
        cum[:, -1] = 1.0 + 1e-9
        ev_active = s_active[ev_sess]
        u = rng.random(total)
        pick = np.zeros(total, np.int8)
        for k in range(cum.shape[1] - 1):  # inverse CDF, one column at a time (no events x types matrix)
            pick += u >= cum[:, k][ev_active]
        body_type = IN_SESSION_TYPES[pick]
        etype = np.where(j < 0, PUSH_OPEN, np.where(j == 0, SESSION_START, body_type)).astype(np.int8)

        # properties (and so revenue) per event
        prop = np.searchsorted(PROPERTY_TABLE.cum, etype + rng.random(total) * 0.999999, side="right")
        prop = prop.astype(np.int16)

        # times and session ids
        day_us = self.start_us + d * US_PER_DAY
        s_start_us = day_us + start
        time_us = s_start_us[ev_sess] + off
        session_id = np.where(j < 0, -1, s_start_us[ev_sess] // 1000)

        ev_user = au[ev_active]
        # install time: the first event on the install day
        if new_user.any():
            new_sessions = new_user[s_active]
            first_times = np.full(n, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(first_times, s_user[new_sessions], s_start_us[new_sessions])
            newly = au[new_user]
            self.install_us[newly] = first_times[newly]

        # frustration from today's errors and paywalls feeds tomorrow's hazard and activity
        errors = np.bincount(ev_user[etype == APP_ERROR], minlength=n)
        paywalls = np.bincount(ev_user[etype == PAYWALL_VIEW], minlength=n)
        self.frustration = 0.6 * self.frustration + 0.5 * errors + 0.12 * paywalls

        # upload order: sessions sorted by their end time
        s_end = s_start_us + duration
        order = np.argsort(s_end, kind="stable")
        new_first = np.cumsum(n_ev_s[order]) - n_ev_s[order]
        perm = np.repeat(first_ev[order] - new_first, n_ev_s[order]) + np.arange(total)

        ids = np.arange(self.next_id, self.next_id + total, dtype=np.uint64) | self.id_base
        self.next_id += total
        return DayEvents(
            event_id=ids[perm],
            user=ev_user[perm].astype(np.int32),
            time_us=time_us[perm],
            event_type=etype[perm],
            session_id=session_id[perm],
            version=self.version[ev_user[perm]],
            prop=prop[perm],
        )
