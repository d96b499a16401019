"""The ``infopo-verl`` command: ``doctor`` (self-check), ``demo`` (the README's main job), ``prepare`` (data),
``report`` (figures and credit pages from a run's logs and dumps).

Each subcommand lives in its own module and adds itself through ``register_cli(subparsers)``; heavy imports
happen inside the subcommand, so ``infopo-verl --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module -> exposes register_cli(subparsers), which adds one subcommand with set_defaults(func=...)
SUBCOMMAND_MODULES = (
    "infopo_verl.doctor",
    "infopo_verl.demo",
    "infopo_verl.data.prepare",
    "infopo_verl.report.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infopo-verl", description="InfoPO for verl: self-check, CPU demo, data preparation and run reports."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
