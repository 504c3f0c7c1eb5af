"""The named benchmark scales and the runs ("pieces") each one measures.

A piece is one Dagster run, exactly as a user starts it: a selection of assets (with their blocking
checks) over one partition or one single-run range. Pieces marked ``setup`` prepare history and are not
part of the scale's totals.
"""

import datetime as dt
from dataclasses import dataclass, field, replace

START = dt.date(2025, 1, 1)

DATA_CHAIN = ("raw_events", "install_times", "user_daily", "features", "labels")
TRAINING = ("training_set", "model")
SCORING = ("predictions", "drift_report")


@dataclass(frozen=True)
class Piece:
    name: str
    assets: tuple[str, ...]
    first: str
    last: str
    setup: bool = False  # prepares history: measured and printed, but outside the scale's totals

    @property
    def partitions(self) -> str:
        return "monthly" if len(self.first) == 7 else "daily"

    @property
    def days(self) -> list[dt.date]:
        """The days of the landing data this piece ingests (daily pieces that include raw_events)."""
        if self.partitions != "daily" or "raw_events" not in self.assets:
            return []
        first, last = dt.date.fromisoformat(self.first), dt.date.fromisoformat(self.last)
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class Scale:
    name: str
    users: int
    days: int
    description: str
    file_format: str = "jsonl.gz"
    seed: int = 7
    pieces: tuple[Piece, ...] = field(default=())
    thin_before: str | None = None  # simulate --thin-before: a history of one event per active user and day
    # simulate --event-share: the share of each session's events kept besides its start, which sizes the
    # scale to the event count the targets give it (issue 6) without changing who is active when
    event_share: float = 1.0

    def chain_only(self) -> "Scale":
        """The scale with its data-chain pieces only (setup included)."""
        pieces = tuple(p for p in self.pieces if p.setup or p.assets == DATA_CHAIN)
        return replace(self, pieces=pieces, description=self.description.replace("full graph", "data chain"))

    def simulation(self) -> dict:
        """The simulator's arguments: a landing zone is reused only when they are equal."""
        return {"users": self.users, "days": self.days, "start": START.isoformat(), "seed": self.seed,
                "file_format": self.file_format, "event_share": self.event_share,
                **({"thin_before": self.thin_before} if self.thin_before else {})}


def backfill_scale(name: str, users: int, days: int, description: str, event_share: float = 1.0) -> Scale:
    """A backfill of every day: the data chain over the whole range in one run, then (full graph) the
    training sets and models of the months a backfill can train (``months_to_train``: from the first
    with a whole lookback when the days reach it), and the predictions and drift report of the last day.
    """
    from churn_assets.assets.ml.training_set import months_to_train
    from churn_assets.config import SETTINGS

    last = START + dt.timedelta(days=days - 1)
    pieces = [Piece("data chain", DATA_CHAIN, START.isoformat(), last.isoformat())]
    months = months_to_train(START, last, SETTINGS.horizon_days, SETTINGS.lookback_months)
    if not months:
        raise ValueError(f"the full graph needs a month with a model, which {days} days from {START} do not reach")
    pieces += [
        Piece("training", TRAINING, months[0], months[-1]),
        Piece("scoring", SCORING, last.isoformat(), last.isoformat()),
    ]
    return Scale(name, users, days, description, pieces=tuple(pieces), event_share=event_share)


def day_scale(users: int, description: str, name: str = "day", history_days: int = 28,
              event_share: float = 1.0) -> Scale:
    """One daily refresh after ``history_days`` days: the history is ingested once by the pipeline itself
    (setup pieces, cached with --reuse), then the refresh of the last day is measured alone.

    The history is simulated thin (``--thin-before`` D: one event per active user and day), so that
    28 days of a population with ~1M daily users take minutes, not an hour, to write and ingest, while
    what the refresh reads has its full size: ``install_times[D-1]`` holds every user seen, each
    ``user_daily`` partition one row per active user. Day D itself is simulated in full.

    The refresh of D reads raw_events[D], install_times[D-1], user_daily[D-27..D], features[D-H] and
    user_daily[D-H+1..D]: the setup builds exactly those (features only for D-H).
    """
    from churn_assets.config import SETTINGS

    last = START + dt.timedelta(days=history_days)
    snapshot = last - dt.timedelta(days=SETTINGS.horizon_days)
    pieces = (
        Piece("history: ingest", DATA_CHAIN[:3], START.isoformat(), (last - dt.timedelta(days=1)).isoformat(),
              setup=True),
        Piece("history: snapshot D-H", ("features",), snapshot.isoformat(), snapshot.isoformat(), setup=True),
        Piece("daily refresh of D", DATA_CHAIN, last.isoformat(), last.isoformat()),
    )
    return Scale(name, users, history_days + 1, description, pieces=pieces, thin_before=last.isoformat(),
                 event_share=event_share)


# The simulator's users send ~30 events a day when active. Issue 6 sizes its scales by events as well as
# users: `small` ~5 M events, `day` ~10 M events from ~1 M active users. Those scales keep that share of
# each session's events (simulate --event-share; the same users active on the same days, in the same
# sessions): 4.93 M events at `small`, 10.2 M on the refreshed day (measured with the simulator).
# `medium` keeps `small`'s share, so that it measures linearity in users at the same events per user.
SCALES: dict[str, Scale] = {
    scale.name: scale
    for scale in (
        backfill_scale("tiny", 3000, 75, "smoke run: 3k users × 75 days, full graph"),
        backfill_scale("small", 20_000, 120, "20k users × 120 days (~5M events), full graph",
                       event_share=0.6),
        backfill_scale("medium", 200_000, 120, "200k users × 120 days (~49M events), full graph",
                       event_share=0.6),
        # Users over the whole run; ~24 % of them are active on day 29 (measured with the simulator).
        day_scale(3_900_000, "one day with ~1M active users and ~10M events after 28 days of history",
                  event_share=0.3),
    )
}
