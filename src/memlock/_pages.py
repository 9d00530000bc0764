"""Page size and range arithmetic: the one place a byte range is rounded to pages."""

from __future__ import annotations

import operator

from ._platform import BACKEND

__all__ = ["PAGE_SIZE", "SIZE_MAX", "as_size", "page_range", "page_span"]

PAGE_SIZE: int = BACKEND.page_size
SIZE_MAX = 2**64 - 1


def as_size(value: object, name: str) -> int:
    """``value`` as a non-negative size_t.

    Raises:
        TypeError: not an integer (bool included).
        ValueError: negative.
        OverflowError: does not fit in size_t.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    if n > SIZE_MAX:
        raise OverflowError(f"{name} {n} does not fit in size_t")
    return n


def page_span(address: int, nbytes: int) -> tuple[int, int]:
    """The page-aligned [start, end) covering every page that [address, address+nbytes) touches.

    An empty range covers no page: (start, start).
    """
    start = address - address % PAGE_SIZE
    if nbytes == 0:
        return start, start
    end = address + nbytes
    end += -end % PAGE_SIZE
    return start, end


def page_range(offset: int, nbytes: int) -> tuple[int, int]:
    """(first page, page count) of the pages [offset, offset+nbytes) touches.

    The pages of :func:`page_span`, counted; an empty range counts no page.
    """
    start, end = page_span(offset, nbytes)
    return start // PAGE_SIZE, (end - start) // PAGE_SIZE
