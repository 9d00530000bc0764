"""lock_all()/unlock_all(): the whole address space (mlockall/munlockall)."""

from __future__ import annotations

from ._lock import REGISTRY
from ._platform import BACKEND
from .errors import UnsupportedOperation

__all__ = ["lock_all", "unlock_all"]


def lock_all(*, current: bool = True, future: bool = True, onfault: bool = False) -> None:
    """Lock every page of the process (mlockall).

    Args:
        current: Lock everything mapped now (MCL_CURRENT).
        future: Lock everything mapped later (MCL_FUTURE); allocations past the limit then
            fail (MemoryError in Python).
        onfault: Lock pages as they fault in (MCL_ONFAULT, Linux 4.4+).

    Raises:
        TypeError: a flag that is not a bool.
        ValueError: neither ``current`` nor ``future``.
        LockLimitError: Unprivileged and the whole address space (VmSize on Linux, not
            resident memory) exceeds RLIMIT_MEMLOCK.
        UnsupportedOperation: The OS has no mlockall (macOS), or no MCL_ONFAULT.

    Availability: Linux, FreeBSD, illumos/Solaris; not macOS (ENOSYS).
    """
    for name, flag in (("current", current), ("future", future), ("onfault", onfault)):
        if flag is not True and flag is not False:
            raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
    if not (current or future):
        raise ValueError("lock_all() needs current=True or future=True")
    c = BACKEND.constants
    if not BACKEND.supports_lock_all:
        BACKEND.mlockall(c.get("MCL_CURRENT", 1))  # raises the backend's explanation
    if onfault and "MCL_ONFAULT" not in c:
        raise UnsupportedOperation(f"MCL_ONFAULT is not available on {BACKEND.name}")
    flags = (c["MCL_CURRENT"] if current else 0) | (c["MCL_FUTURE"] if future else 0)
    if onfault:
        flags |= c["MCL_ONFAULT"]
    REGISTRY.lock_all(flags)


def unlock_all() -> None:
    """Undo :func:`lock_all` (munlockall), keeping the pages of live Locks locked.

    Availability: Linux, FreeBSD, illumos/Solaris; not macOS (ENOSYS).
    """
    REGISTRY.unlock_all()
