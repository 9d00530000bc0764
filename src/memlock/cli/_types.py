"""argparse ``type=`` converters shared by the subcommands: our messages, not argparse's.

Each rejects what the command could not use (negative, NaN, infinite, too large, empty)
while parsing, so that a bad argument is a usage error (exit 2) before any work starts.
"""

from __future__ import annotations

import argparse
import math

from .._units import parse_size, quote_arg

__all__ = ["process_id", "seconds", "size"]

#: The largest process id (pid_t is a 32-bit signed integer on every supported system).
PID_MAX = 2**31 - 1
#: The longest polling interval (a day): longer is a mistake, and select() has a limit.
SECONDS_MAX = 86400.0


def size(text: str) -> int:
    """A size as vmtouch writes it (``4096``, ``512K``, ``4M``, ``2G``), for ``type=``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def process_id(text: str) -> int:
    """A process id: a whole number from 1 to :data:`PID_MAX`."""
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 10 or not (
            1 <= int(stripped) <= PID_MAX):
        raise argparse.ArgumentTypeError(
            f"not a process id: {quote_arg(text)} (a whole number from 1 to {PID_MAX})")
    return int(stripped)


def seconds(text: str) -> float:
    """A time in seconds: finite, more than 0, at most :data:`SECONDS_MAX`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= SECONDS_MAX:  # also false for NaN
        raise argparse.ArgumentTypeError(
            f"not a number of seconds above 0 and up to {SECONDS_MAX:g}: {quote_arg(text)}")
    return value
