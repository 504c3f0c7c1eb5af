"""The ``churn-assets simulate`` subcommand."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from churn_assets.simulate.writer import FORMATS


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date in YYYY-MM-DD form") from exc


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} must be at least 1")
    return number


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from exc
    if not 0.0 < share <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a share in (0, 1]")
    return share


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "simulate",
        help="write realistic, seeded landing data (event exports + ground truth)",
        description="Simulate app users and write daily event exports under OUT/events/date=YYYY-MM-DD/ "
        "(with _SUCCESS markers) and the ground truth under OUT/truth/.",
    )
    parser.add_argument("--out", default="./data/landing", help="landing root: a local path or s3://bucket/prefix "
                        "(default: %(default)s)")
    parser.add_argument("--users", type=_positive, default=500, help="users over the whole run (default: %(default)s)")
    parser.add_argument("--days", type=_positive, default=21, help="export days (default: %(default)s)")
    parser.add_argument("--start", type=_date, default=dt.date(2025, 1, 1), help="first day, YYYY-MM-DD "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: %(default)s)")
    parser.add_argument("--dirty", action="store_true", help="also write malformed rows, 3 of each kind a day: "
                        "no user id, no event id, an unparsable time, a time after the export day or 9 days "
                        "before it, negative revenue")
    parser.add_argument("--format", dest="file_format", choices=FORMATS, default="jsonl.gz",
                        help="landing file format (default: %(default)s)")
    parser.add_argument("--files-per-day", type=_positive, default=1, help="files per export day "
                        "(default: %(default)s)")
    parser.add_argument("--thin-before", type=_date, default=None, metavar="YYYY-MM-DD",
                        help="days before this one hold only each active user's first event: a cheap long "
                        "history for benchmarks (default: every day in full)")
    parser.add_argument("--event-share", type=_share, default=1.0, metavar="SHARE",
                        help="keep this share (0 < SHARE <= 1) of each session's events besides its start: the "
                        "same users, days and sessions with fewer events (default: %(default)s, all)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run, parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from churn_assets.stops import INTERRUPTED, sigterm_as_ctrl_c

    # SIGTERM (a container or a CronJob stopped) stops it as Ctrl-C does: the files queued are written, then it says
    # what stands (without it, SIGTERM ended it at once, with no word).
    with sigterm_as_ctrl_c():
        try:
            return _simulate(args)
        except KeyboardInterrupt:
            sys.stderr.write(
                "churn-assets simulate: stopped: interrupted (Ctrl-C or SIGTERM): each day marked complete (its "
                "_SUCCESS) holds all its files, and no other day is marked complete (the landing sensor does not take "
                "it as complete): run the same command again, which writes every day again\n"
            )
            return INTERRUPTED


def _simulate(args: argparse.Namespace) -> int:
    from churn_assets.resources.filesystems import StorageSettingsError
    from churn_assets.simulate import SimulationRefused, simulate
    from churn_assets.stops import FAILED

    try:
        summary = simulate(
            args.out,
            users=args.users,
            days=args.days,
            start=args.start,
            seed=args.seed,
            dirty=args.dirty,
            file_format=args.file_format,
            files_per_day=args.files_per_day,
            progress=args.progress,
            thin_before=args.thin_before,
            event_share=args.event_share,
        )
    except SimulationRefused as exc:  # an argument it refuses: a usage error (exit 2), not a traceback
        args.parser.error(str(exc))
    except (OSError, StorageSettingsError) as exc:  # a write refused or failed, S3 set wrong: what stands
        sys.stderr.write(
            f"churn-assets simulate: stopped: {exc}\nnothing was written after it: no day with a file still to write "
            "has its _SUCCESS (the landing sensor does not take it as complete), the days before stand complete: run "
            "the same command again, which writes every day again\n"
        )
        return FAILED
    print(summary.line())
    return 0
