"""The ``churn-assets adopt`` subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from churn_assets.stops import INTERRUPTED, sigterm_as_ctrl_c


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "adopt",
        help="record in a new Dagster instance every partition the lake already stores (a move to another instance, "
        "or an instance lost)",
        description="Record in the Dagster instance (DAGSTER_HOME) every partition the lake (CHURN_DATA_URL) stores of "
        "each asset of this code location (CHURN_APP's keys), as materializations outside a run with the metadata "
        "and data version their runs would have given them, so that the schedules and the landing sensor go on from "
        "the lake's history instead of computing it again. A raw_events day stored before its landing day's current "
        "_SUCCESS is recorded without its landing version: the landing sensor refreshes it. Refused when the instance "
        "already records any partition of these assets, unless --only-missing. Run it with no run of the lake in "
        "progress and the sensors and schedules stopped.",
    )
    parser.add_argument("--only-missing", action="store_true",
                        help="record only the stored partitions the instance does not record yet (an instance that "
                        "ran for a while before the lake's history was adopted); the others are left as they are")
    parser.add_argument("--without-landing", action="store_true",
                        help="adopt a lake none of whose raw_events days has a complete landing day under "
                        "CHURN_LANDING_URL (the landing zone no longer holds them); refused otherwise, as a wrong "
                        "CHURN_LANDING_URL would leave every day for the landing sensor to request again")
    parser.add_argument("--new-app-keys", action="store_true",
                        help="record the lake under this CHURN_APP's keys although the instance records it under "
                        "other keys (an app that ran without CHURN_APP, or under another name); refused otherwise, as "
                        "a wrong CHURN_APP would record the lake under keys of another app")
    parser.set_defaults(func=run, parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    # SIGTERM (a container or a Kubernetes Job stopped) stops it as Ctrl-C does: what it recorded so far stands.
    with sigterm_as_ctrl_c():
        try:
            return _run(args)
        except KeyboardInterrupt:  # before the adoption began (reading the landing zone, opening the instance)
            sys.stderr.write("churn-assets adopt: stopped before recording anything: interrupted (Ctrl-C or "
                             "SIGTERM): nothing was recorded: run churn-assets adopt again with the same options\n")
            return INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    if not os.environ.get("DAGSTER_HOME"):
        args.parser.error("DAGSTER_HOME is not set: set it to the instance that is to run this lake's assets")
    import dagster as dg

    from churn_assets.adoption.adopt import AdoptionRefused, AdoptionStopped, adopt
    from churn_assets.config import SETTINGS
    from churn_assets.definitions import all_assets
    from churn_assets.resources import LandingZone
    from churn_assets.resources.lake import Lake

    try:
        try:
            landing_days, _ = LandingZone(url=SETTINGS.landing_url).days()
        except OSError as exc:  # the landing zone unreachable, or access denied
            raise AdoptionStopped(None, "before recording anything, while reading the landing zone", exc) from exc
        with dg.DagsterInstance.get() as instance:
            report = adopt(Lake(SETTINGS.data_url), instance, all_assets, landing_days, only_missing=args.only_missing,
                           without_landing=args.without_landing, new_app_keys=args.new_app_keys)
    except AdoptionRefused as exc:
        sys.stderr.write(f"churn-assets adopt: {exc}\n")
        return 2
    except AdoptionStopped as exc:
        sys.stderr.write("".join(f"churn-assets adopt: {line}\n" for line in exc.lines()))
        return exc.exit_status
    print("\n".join(report.lines()))
    return 0
