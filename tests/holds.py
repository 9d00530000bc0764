"""Drive a PageRegistry directly, as memlock.lock() does, for tests of the registry itself."""

from __future__ import annotations

from memlock._registry import MODE_FULL, Hold, PageRegistry


class Owner:
    """Stands for a Lock: a hold is a weak reference to its owner, released when it dies."""

    __slots__ = ("__weakref__", "hold")

    hold: Hold


def acquire(reg: PageRegistry, start: int, end: int, mode: int = MODE_FULL) -> Owner:
    """Count and lock [start, end) in ``reg``; keep the returned owner alive while held."""
    owner = Owner()
    owner.hold = reg.new_hold(owner, start, end, mode)
    reg.acquire(owner.hold)
    return owner


def release(reg: PageRegistry, owner: Owner) -> None:
    """Release what :func:`acquire` counted."""
    reg.release(owner.hold)
