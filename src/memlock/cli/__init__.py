"""The ``memlock`` command line, built only on the public API.

Each subcommand group lives in its own module with a ``register(subparsers)`` function;
the module's handlers return the process exit status: 0 done, 1 failed (a one-line
message on stderr says why), 2 a usage error. Never a Python traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from . import _exporter, _files, _inspect, _run, _verify

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import NoReturn

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

    def error(self, message: str) -> NoReturn:
        """A usage error: one line on stderr (not the usage, which --help shows), exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="memlock",
        description="Keep memory in RAM: see what is locked, why locking fails here, and "
        "lock files or whole programs.",
    )
    parser.add_argument("--version", "-V", action="version", version=f"memlock {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                               parser_class=_Parser)
    for module in (_inspect, _files, _run, _verify, _exporter):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    # Paths that are not UTF-8 arrive as surrogate escapes: print their bytes as they were
    # (as ls does), not a UnicodeEncodeError.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    try:
        args = build_parser().parse_args(argv)
        status: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the last resort: every known failure has its own message
        text = " ".join(str(exc).split()) or "no details"
        sys.stderr.write(f"memlock: internal error: {type(exc).__name__}: {text}\n")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
