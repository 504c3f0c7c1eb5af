"""The ``churn-assets erase`` subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from churn_assets.stops import INTERRUPTED, sigterm_as_ctrl_c


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "erase",
        help="erase users from every table of the lake (GDPR art. 17), and keep them out of later runs",
        description="Add the users to the lake's erased-users list (CHURN_DATA_URL/erased_users/), which raw_events "
        "applies to every day it reads, rewrite every stored partition that holds them without their rows, and "
        "record the rewritten partitions in the Dagster instance (DAGSTER_HOME). Prints per table the partitions "
        "and rows changed, and what it does not change. Run it with no run of the lake in progress.",
    )
    parser.add_argument("--user-id", dest="user_ids", action="append", default=[], metavar="ID",
                        help="a user id to erase, exactly as raw_events stores it: case, spaces and accents "
                        "as exported, a JSON number 12345 or 12345.0 as 12345 (repeat for more)")
    parser.add_argument("--user-ids-file", metavar="FILE", help="a UTF-8 text file of user ids, one a line")
    parser.add_argument("--allow-unseen", action="store_true",
                        help="list ids no stored partition holds (a user whose events are not ingested yet) "
                        "instead of refusing them as a likely typo")
    parser.set_defaults(func=run, parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    # SIGTERM (a container or CI job stopped) stops it as Ctrl-C does: what it rewrote so far is recorded.
    with sigterm_as_ctrl_c():
        try:
            return _run(args)
        except KeyboardInterrupt:  # before the erasure began (reading the ids, opening the instance)
            sys.stderr.write("churn-assets erase: stopped before changing anything: interrupted (Ctrl-C or SIGTERM): "
                             "nothing was changed: run churn-assets erase again with the same ids\n")
            return INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from churn_assets.erasure.erase import ErasureRefused, ErasureStopped, erase, read_user_ids_file

    if not args.user_ids and not args.user_ids_file:
        args.parser.error("give the users to erase: --user-id ID (repeatable) or --user-ids-file FILE")
    if not os.environ.get("DAGSTER_HOME"):
        args.parser.error("DAGSTER_HOME is not set: set it to the instance that runs this lake's assets, whose "
                          "records of the rewritten partitions the erasure updates")
    import dagster as dg

    from churn_assets.config import SETTINGS
    from churn_assets.definitions import all_assets
    from churn_assets.resources.lake import Lake

    try:
        user_ids = list(args.user_ids)
        if args.user_ids_file:
            user_ids += read_user_ids_file(args.user_ids_file)
        with dg.DagsterInstance.get() as instance:
            report = erase(Lake(SETTINGS.data_url), user_ids, instance, all_assets, allow_unseen=args.allow_unseen)
    except ErasureRefused as exc:
        sys.stderr.write(f"churn-assets erase: {exc}\n")
        return 2
    except ErasureStopped as exc:
        sys.stderr.write("".join(f"churn-assets erase: {line}\n" for line in exc.lines()))
        return exc.exit_status
    print("\n".join(report.lines()))
    return 0
