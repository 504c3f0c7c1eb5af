"""``churn-assets``: the command line, a tiny dispatcher over subcommands."""

from __future__ import annotations

import argparse
import sys

from churn_assets.simulate import cli as simulate_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churn-assets", description="Churn platform tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    simulate_cli.add_subcommand(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
