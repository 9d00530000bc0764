"""Sizes, counts and errors for people: binary units, vmtouch-style sizes, one-line errors."""

from __future__ import annotations

__all__ = ["SIZE_MAX", "SizeTooLargeError", "describe_error", "format_size", "parse_size",
           "plural", "quote_arg"]

_SUFFIX = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = r"^\s*(\d+)(?:\.(\d+))?\s*([KMGT]?)(?:I?B)?\s*$"
#: The largest size :func:`parse_size` accepts: the largest file offset (off_t).
SIZE_MAX = 2**63 - 1


class SizeTooLargeError(ValueError):
    """A well-formed size above :data:`SIZE_MAX`."""


def format_size(n: int | None) -> str:
    """Bytes in human units (``8.0 MiB``); ``unlimited`` for None."""
    if n is None:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def plural(n: int, noun: str) -> str:
    """``1 file``, ``2 files``: a count and a noun that agree."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def parse_size(text: str) -> int:
    """A size as vmtouch writes it: ``4096``, ``512K``, ``4M``, ``2G`` (also ``4MiB``, ``1.5G``).

    Exact (no floating point): fractions of a unit are rounded down to whole bytes.

    Raises:
        ValueError: not a size.
        SizeTooLargeError: more than :data:`SIZE_MAX` bytes (a ValueError).
    """
    import re  # here, not at the top: re costs ~6 ms of every CLI start

    m = re.match(_SIZE, text, re.IGNORECASE | re.ASCII)
    if not m:
        raise ValueError(f"not a size: {quote_arg(text)} (examples: 4096, 512K, 4M, 2G)")
    whole, frac, suffix = m.group(1), m.group(2) or "", m.group(3).upper()
    # Past 20 digits it is too large anyway: no int() of 400 digits, no 4300-digit limit.
    if len(whole.lstrip("0")) > 20:
        raise SizeTooLargeError(f"size too large: {quote_arg(text)} (at most {SIZE_MAX} bytes)")
    frac = frac[:20]
    unit = _SUFFIX[suffix]
    scale: int = 10 ** len(frac)
    n = int(whole) * unit + int(frac or "0") * unit // scale
    if n > SIZE_MAX:
        raise SizeTooLargeError(f"size too large: {quote_arg(text)} (at most {SIZE_MAX} bytes)")
    return n


def quote_arg(text: str) -> str:
    """A command-line argument quoted for a message, cut short when long (400 digits)."""
    return repr(text) if len(text) <= 32 else repr(text[:24]) + f"... ({len(text)} characters)"


def describe_error(exc: BaseException, with_hint: bool = True) -> str:
    """``exc`` as one line: the system's text (no ``[Errno N]``), then memlock's hint.

    The hint of a :class:`memlock.MemlockError` says how to fix it; ``with_hint`` False
    leaves it out (a per-file reason). The exception's name stands in for an empty text.
    """
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    hint = getattr(exc, "hint", None) if with_hint else None
    if hint and str(hint) not in text:
        text = f"{text}. {hint}"
    return " ".join(text.split()) or type(exc).__name__
