"""Command-line arguments: argparse converters, ``--range``, ``--files-from``, a program.

The program is what ``run`` and ``latency`` take: ``script.py ARGS`` or ``-m module ARGS``.

The converters give our messages, not argparse's.

Each converter rejects what the command could not use (negative, NaN, infinite, too large, empty)
while parsing, so that a bad argument is a usage error (exit 2) before any work starts.
"""

from __future__ import annotations

import os
import sys

from .._cli_api import SizeTooLargeError, parse_size, quote_arg

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["PRINTABLE", "add_program", "invalid", "module_found", "parse_range", "process_id",
           "program_target", "read_list", "seconds", "size", "user_name"]

#: The largest process id (pid_t is a 32-bit signed integer on every supported system).
PID_MAX = 2**31 - 1
#: The longest polling interval (a day): longer is a mistake, and select() has a limit.
SECONDS_MAX = 86400.0


def invalid(message: str) -> Exception:
    """The error a converter raises for ``message``: a usage error, as argparse reports it.

    argparse's ArgumentTypeError, loaded only now (see :mod:`._quickparse`).
    """
    import argparse

    return argparse.ArgumentTypeError(message)


def size(text: str) -> int:
    """A size as vmtouch writes it (``4096``, ``512K``, ``4M``, ``2G``), for ``type=``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def process_id(text: str) -> int:
    """A process id: a whole number from 1 to :data:`PID_MAX`."""
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 10 or not (
            1 <= int(stripped) <= PID_MAX):
        raise invalid(
            f"not a process id: {quote_arg(text)} (a whole number from 1 to {PID_MAX})")
    return int(stripped)


def user_name(text: str) -> str:
    """A user as the host scan names it: a name this host knows, or a uid.

    A uid becomes its name where it has one; a uid without a name stays a number, as ps
    shows it.
    """
    import pwd

    uid = text.isascii() and text.isdigit() and len(text) <= 10
    try:
        return pwd.getpwuid(int(text)).pw_name if uid else pwd.getpwnam(text).pw_name
    except KeyError:
        if uid:
            return str(int(text))
    except (OverflowError, ValueError):  # a uid out of range, a NUL in the name
        pass
    raise invalid(f"no such user: {quote_arg(text)} (a user name of "
                                     "this host, or a uid)")


def seconds(text: str) -> float:
    """A time in seconds: finite, more than 0, at most :data:`SECONDS_MAX`."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= SECONDS_MAX:  # also false for NaN
        raise invalid(
            f"not a number of seconds above 0 and up to {SECONDS_MAX:g}: {quote_arg(text)}")
    return value


def parse_range(text: str, parse_size: Callable[[str], int]) -> tuple[int, int | None]:
    """``START-END`` (either side may be empty; END exclusive) as (start, end or None).

    A single size ``N`` means ``0-N`` (vmtouch ``-p``).

    Raises:
        ValueError: not a range (the message quotes the whole of ``text``), END before
            START, or a size too large (the message names that size).
    """
    lo, dash, hi = text.strip().partition("-")
    try:
        if not dash:
            return 0, parse_size(lo)
        start = parse_size(lo) if lo.strip() else 0
        end = parse_size(hi) if hi.strip() else None
    except SizeTooLargeError:
        raise
    except ValueError:
        raise ValueError(f"not a range: {quote_arg(text)}") from None
    if end is not None and end < start:
        raise ValueError(f"range end {end} is before its start {start}: {quote_arg(text)}")
    return start, end


def read_list(source: str, nul: bool) -> list[str]:
    """Paths from a list file (``-`` for stdin), one a line or NUL-separated."""
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(source, "rb") as f:
            data = f.read()
    parts = data.split(b"\0") if nul else data.splitlines()
    return [os.fsdecode(p) for p in parts if p]


#: ``str.translate`` table that shows control characters as ``?``: command lines and
#: cgroup names come from other processes, which must not drive the terminal.
PRINTABLE = {c: "?" for c in [*range(32), 127]}


def add_program(p: argparse.ArgumentParser, module_help: str, script_help: str) -> None:
    """``-m module [ARGS]`` and ``script.py [ARGS]``: the program a command runs."""
    import argparse  # run and latency need argparse anyway (REMAINDER)

    p.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="module [ARGS]",
                   help=module_help)
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="script.py [ARGS]",
                   help=script_help)


def program_target(args: argparse.Namespace) -> tuple[str | None, str | None, list[str]]:
    """(module, script, argv tail) of :func:`add_program`'s arguments.

    ``module`` is ``""`` for a ``-m`` without a name; (None, None, []) without a program.
    """
    program: list[str] = list(args.program)
    if args.module is not None:
        return (args.module[0] if args.module else ""), None, [*args.module[1:], *program]
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        return None, None, []
    return None, program[0], program[1:]


def module_found(module: str) -> bool:
    """Whether ``python -m module`` would find ``module``.

    The working directory becomes ``sys.path[0]``, as it does for ``python -m``.
    """
    import importlib.util

    sys.path[0:1] = [os.getcwd()]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
