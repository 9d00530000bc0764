"""Sizes for people: format bytes in binary units, parse vmtouch-style sizes."""

from __future__ import annotations

__all__ = ["format_size", "parse_size"]

_SUFFIX = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$"


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


def parse_size(text: str) -> int:
    """A size as vmtouch writes it: ``4096``, ``512K``, ``4M``, ``2G`` (also ``4MiB``, ``1.5G``).

    Raises:
        ValueError: not a size.
    """
    import re  # here, not at the top: re costs ~6 ms of every CLI start

    m = re.match(_SIZE, text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 512K, 4M, 2G)")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])
