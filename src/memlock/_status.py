"""limits(), set_limit(), status(), system_status(): what is locked and what may be."""

from __future__ import annotations

import errno
import os
import resource

from ._pages import as_size
from ._platform import BACKEND
from ._records import Limits, ProcessStatus, SystemStatus
from .errors import LockPermissionError

__all__ = ["limits", "set_limit", "status", "system_status"]


def limits() -> Limits:
    """RLIMIT_MEMLOCK, what is locked now, what may still be, and whether we are privileged."""
    return BACKEND.limits()


def set_limit(soft: int | None, hard: int | None = None) -> None:
    """Set RLIMIT_MEMLOCK for this process (and the children it starts later).

    Args:
        soft: New soft limit in bytes; None means unlimited.
        hard: New hard limit in bytes; None keeps the current hard limit. Lowering it is
            irreversible without privilege (CAP_SYS_RESOURCE on Linux).

    Raises:
        ValueError: soft above hard.
        LockPermissionError: Raising the hard limit without the privilege to.
    """
    inf = resource.RLIM_INFINITY
    s = inf if soft is None else as_size(soft, "soft")
    cur_hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    h = cur_hard if hard is None else as_size(hard, "hard")
    if h != inf and (s == inf or s > h):
        raise ValueError(f"soft limit {soft} is above the hard limit {h}")
    raising_hard = cur_hard != inf and (h == inf or h > cur_hard)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (s, h))
    except (ValueError, PermissionError) as exc:
        if not raising_hard:
            raise
        raise LockPermissionError(
            errno.EPERM,
            f"cannot raise the hard RLIMIT_MEMLOCK above {cur_hard} bytes without privilege "
            "(CAP_SYS_RESOURCE on Linux)",
            hint=BACKEND.limit_hint(None if h == inf else h),
        ) from exc


def status(pid: int | None = None) -> ProcessStatus:
    """What process ``pid`` (default: this one) has locked, region by region.

    Raises:
        ProcessLookupError: No such process.
        PermissionError: Not allowed to read its memory map.
    """
    return BACKEND.process_status(os.getpid() if pid is None else as_size(pid, "pid"))


def system_status() -> SystemStatus:
    """Machine-wide locked/unevictable/wired memory; fields the OS cannot tell are None."""
    return BACKEND.system_status()
