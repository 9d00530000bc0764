"""argparse ``type=`` converters shared by the subcommands: our messages, not argparse's."""

from __future__ import annotations

import argparse

from .._units import parse_size

__all__ = ["size"]


def size(text: str) -> int:
    """A size as vmtouch writes it (``4096``, ``512K``, ``4M``, ``2G``), for ``type=``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
