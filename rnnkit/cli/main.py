"""Entry point: dispatches to one module per command.

Each command module provides ``add_parser(subparsers)`` (registering its options,
with ``set_defaults(run=...)``) and is listed in COMMANDS.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["explain", "train", "predict", "bench", "verify"]


class UsageError(Exception):
    """Bad input on the command line: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent layers for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"rnnkit.cli.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except UsageError as e:
        print(f"rnnkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the places that handle it (before a run starts, say)
        print(f"rnnkit {args.command}: interrupted", file=sys.stderr)
        return 130
