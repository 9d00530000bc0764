"""The ``memlock`` command line, built only on the public API.

Each subcommand group lives in its own module with a ``register(subparsers)`` function;
the module's handlers return the process exit status: 0 done, 1 failed (a one-line
message on stderr says why), 2 a usage error. Never a Python traceback.

A run loads only its subcommand's module (:data:`COMMANDS`) and builds only its parser:
start-up is most of a ``memlock status`` run. ``--help`` and mistakes get every one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["COMMANDS", "build_parser", "main"]

#: Each subcommand and the module (of this package) that registers and runs it, in the
#: order ``--help`` lists them.
COMMANDS = {
    "doctor": "_inspect", "limits": "_inspect", "status": "_status", "top": "_top",
    "resident": "_files", "touch": "_files", "evict": "_files", "lock": "_files",
    "run": "_run", "verify": "_verify", "exporter": "_exporter", "latency": "_latency",
}


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
        __import__(f"{__name__}.{name}", fromlist=["register"]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    # Paths that are not UTF-8 arrive as surrogate escapes: print their bytes as they were
    # (as ls does), not a UnicodeEncodeError.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv[0] if argv else None).parse_args(argv)
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
