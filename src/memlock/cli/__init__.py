"""The ``memlock`` command line, built only on the public API.

Each subcommand group lives in its own module with a ``register(subparsers)`` function;
the module's handlers return the process exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import _core, _files, _run

__all__ = ["main"]


def _columns() -> int:
    """The terminal's width as :func:`shutil.get_terminal_size` finds it, without shutil."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that asks for the terminal's width once.

    argparse builds a formatter on every ``add_argument`` (to check the metavar), and each
    one imports :mod:`shutil` and asks the terminal: ~5 ms of a ``memlock resident`` run.
    """

    _width: int | None = None

    def _get_formatter(self) -> argparse.HelpFormatter:
        if _Parser._width is None:
            _Parser._width = _columns() - 2
        return self.formatter_class(  # type: ignore[call-arg]  # every HelpFormatter takes it
            prog=self.prog, width=_Parser._width)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="memlock",
        description="Keep memory in RAM: see what is locked, why locking fails here, and "
        "lock files or whole programs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                               parser_class=_Parser)
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
