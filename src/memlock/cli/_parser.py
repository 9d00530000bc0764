"""The ``memlock`` command line's argparse parser: for ``--help``, mistakes, and the rest.

It reads every command line that :mod:`._quickparse` leaves to it.

Loaded only then: ``import argparse`` costs ~7 ms of a run.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from . import COMMANDS

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["build_parser"]


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

    def error(self, message: str) -> NoReturn:
        """A usage error: one line on stderr (not the usage, which --help shows), exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: of every subcommand, or of ``command``'s module only."""
    parser = _Parser(
        prog="memlock",
        description="Keep memory in RAM: see what is locked, why locking fails here, and "
        "lock files or whole programs.",
    )
    parser.add_argument("--version", "-V", action="version", version=f"memlock {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                               parser_class=_Parser)
    names = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for name in names:
        __import__(f"{__package__}.{name}", fromlist=["register"]).register(sub)
    return parser
