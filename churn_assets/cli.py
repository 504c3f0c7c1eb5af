"""``churn-assets``: the command line, a tiny dispatcher over subcommands."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from churn_assets.adoption import cli as adopt_cli
    from churn_assets.erasure import cli as erase_cli
    from churn_assets.simulate import cli as simulate_cli

    parser = argparse.ArgumentParser(prog="churn-assets", description="Churn platform tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    simulate_cli.add_subcommand(subparsers)
    erase_cli.add_subcommand(subparsers)
    adopt_cli.add_subcommand(subparsers)
    catalog = subparsers.add_parser(
        "features-doc",
        help="print the feature catalog as Markdown (churn-assets features-doc > docs/features.md)",
        description="Print docs/features.md: the feature catalog (assets/features/catalog.py) as a Markdown table.",
    )
    catalog.add_argument(
        "--event-types",
        metavar="TYPES",
        help="comma-separated event types whose per-type columns to list, as CHURN_EVENT_TYPES (e.g. "
        '--event-types "$CHURN_EVENT_TYPES"); default: the default types, as docs/features.md',
    )
    catalog.set_defaults(func=_print_features_doc)
    return parser


def _print_features_doc(args: argparse.Namespace) -> int:
    from churn_assets.assets.features.catalog import catalog_markdown
    from churn_assets.config import DEFAULT_EVENT_TYPES, parse_event_types

    event_types = DEFAULT_EVENT_TYPES
    try:  # the types CHURN_EVENT_TYPES would refuse (a shared column, a total's name, a colliding feature)
        if args.event_types is not None:
            event_types = parse_event_types(args.event_types, "--event-types")
        text = catalog_markdown(event_types)
    except ValueError as error:
        sys.stderr.write(f"churn-assets features-doc: {error}\n")
        return 2
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        import churn_assets.config  # noqa: F401  (reads the CHURN_* settings, which every subcommand imports)
    except ValueError as error:  # a setting that cannot work: its message names the variable and the value
        sys.stderr.write(f"churn-assets: {error} (set it right or unset it: every command reads the CHURN_* "
                         "settings)\n")
        return 2
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
