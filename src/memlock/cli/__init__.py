"""The ``memlock`` command line, built only on the public API.

Each subcommand group lives in its own module with a ``register(subparsers)`` function;
the module's handlers return the process exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _core, _files, _run

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="memlock",
        description="Keep memory in RAM: see what is locked, why locking fails here, and "
        "lock files or whole programs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (_core, _files, _run):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
