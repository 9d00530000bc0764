"""macOS backend: mlock/munlock only; XNU's mlockall/munlockall return ENOSYS.

Written from the BSD mlock(2)/mlockall(2) manual pages (``shared/seeds``) and XNU's
``bsd/kern/kern_mman.c``; tested only against a simulated libc: never run on macOS.

What XNU does, and what this backend does with it:

* mlock wires the pages; when the wiring would exceed RLIMIT_MEMLOCK, ``vm.user_wire_limit``
  (per process) or ``vm.global_user_wire_limit`` (all users) it returns **EAGAIN**
  (KERN_RESOURCE_SHORTAGE) -> :class:`LockLimitError`, never BlockingIOError. Root is not
  exempt: no privilege lifts these limits.
* ENOMEM: part of the range is not mapped (any other wiring failure) -> :class:`MemlockError`.
* EACCES: the pages cannot be wired with their protections -> :class:`MemlockError`.
* EINVAL: the range wraps around zero -> :class:`MemlockError`.
* RLIMIT_MEMLOCK 0 (EAGAIN for every mlock) -> :class:`LockPermissionError` (the rule of
  :meth:`Backend.lock_error`).
* mlockall/munlockall always fail with ENOSYS: :meth:`DarwinBackend.mlockall` raises
  :class:`UnsupportedOperation` without making the call.

Unlike Linux, XNU counts user wirings per mapping (nested mlock calls need as many munlock
calls); memlock's registry makes one kernel call per transition, so this does not show.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from .. import _hints
from .._records import SystemStatus
from ..errors import MemlockError, UnsupportedOperation
from ._base import Backend

__all__ = ["MCL_CURRENT", "MCL_FUTURE", "DarwinBackend"]

if TYPE_CHECKING:
    from ._libc import Libc

#: <sys/mman.h> values on macOS (defined, though mlockall is not implemented).
MCL_CURRENT = 0x0001
MCL_FUTURE = 0x0002

USER_WIRE_LIMIT = "vm.user_wire_limit"
GLOBAL_USER_WIRE_LIMIT = "vm.global_user_wire_limit"

_NO_LOCK_ALL = (
    "{op} is not implemented on macOS (the XNU kernel returns ENOSYS): lock the buffers "
    "that matter with memlock.lock() instead"
)


class DarwinBackend(Backend):
    """macOS: mlock works, mlockall does not; verified only against a simulated libc.

    Args:
        libc: The C library (or a simulation with ``sysctl_int``).
        page_size: Bytes per page; default: this machine's (16 KiB on Apple silicon).
        rlimit: Returns soft and hard RLIMIT_MEMLOCK in bytes; default: getrlimit.
        euid: Returns the effective user id; default: :func:`os.geteuid`.

    Availability: macOS.
    """

    name = "darwin"
    constants: ClassVar[dict[str, int]] = {"MCL_CURRENT": MCL_CURRENT, "MCL_FUTURE": MCL_FUTURE}
    supports_lock_all = False

    def __init__(
        self,
        libc: Libc | None = None,
        page_size: int | None = None,
        *,
        rlimit: Callable[[], tuple[int | None, int | None]] | None = None,
        euid: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(libc, page_size, rlimit=rlimit, euid=euid)

    # -- calls ---------------------------------------------------------------------

    def mlockall(self, flags: int) -> None:
        """Not implemented by macOS: raises UnsupportedOperation without a system call."""
        raise UnsupportedOperation(_NO_LOCK_ALL.format(op="mlockall"))

    def munlockall(self) -> None:
        """Not implemented by macOS: raises UnsupportedOperation without a system call."""
        raise UnsupportedOperation(_NO_LOCK_ALL.format(op="munlockall"))

    # --- secrets: guarded, locked, undumpable mappings ---

    # macOS has no madvise advice that keeps pages out of core dumps, and memlock does
    # not use minherit(2) there: a forked child's copies are zeroed by memlock itself
    # (Backend.wipe_inherited); guard pages and locking are as everywhere.

    # --- end of secrets ---

    def evict(self, fd: int, offset: int, length: int) -> None:
        """macOS has no posix_fadvise: raises UnsupportedOperation."""
        raise UnsupportedOperation("evict needs posix_fadvise, which macOS lacks")

    # -- facts -----------------------------------------------------------------------

    def privileged(self) -> bool:
        """Always False: on macOS no privilege lifts the wire limits (root included)."""
        return False

    def system_status(self) -> SystemStatus:
        """Physical memory and the system-wide user wire limit; None where unreadable."""
        return SystemStatus(
            total_bytes=self.libc.sysctl_int("hw.memsize"),
            max_user_wired_bytes=self.libc.sysctl_int(GLOBAL_USER_WIRE_LIMIT),
        )

    # -- errors ------------------------------------------------------------------------

    def translate_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """Translate XNU's errno for ``op`` (see the module docstring)."""
        text = os.strerror(err)
        if err == errno.ENOSYS and op in ("mlockall", "munlockall"):
            return UnsupportedOperation(_NO_LOCK_ALL.format(op=op))
        if err == errno.EAGAIN:
            return self.limit_error(
                op, err, requested,
                f"RLIMIT_MEMLOCK, {USER_WIRE_LIMIT} or {GLOBAL_USER_WIRE_LIMIT}",
            )
        if err == errno.ENOMEM:
            return MemlockError(
                err, f"{op}: {text}: part of the range is not mapped", requested=requested
            )
        if err == errno.EACCES:
            return MemlockError(
                err, f"{op}: {text}: the pages cannot be wired with their protections",
                requested=requested,
            )
        if err == errno.EINVAL:
            return MemlockError(
                err, f"{op}: {text}: the address range wraps around zero", requested=requested
            )
        return super().translate_error(op, err, requested)

    # -- hints -------------------------------------------------------------------------

    def permission_hint(self, needed_total: int | None = None) -> str:
        """macOS needs no privilege to lock memory; only the limits can refuse it."""
        return "macOS needs no privilege for mlock; " + self.limit_hint(needed_total)

    def zero_limit_reason(self) -> str:
        """macOS: no privilege lifts the limit."""
        return "RLIMIT_MEMLOCK is 0 (on macOS no privilege lifts it)"

    def limit_hint(self, needed_total: int | None, environment: str | None = None) -> str:
        """How to raise RLIMIT_MEMLOCK and the XNU wire limits to allow ``needed_total``."""
        kib = "unlimited" if needed_total is None else str(max(1, -(-needed_total // 1024)))
        nbytes = "BYTES" if needed_total is None else str(needed_total)
        hard = self.hard_limit_too_low(needed_total)
        if hard is None:
            shell = f"`ulimit -l {kib}` (KiB) in the shell that starts it, or"
        else:
            shell = _hints.hard_limit_note(hard, needed_total, "only root can raise it") + ";"
        return (
            f"How to fix (macOS): raise RLIMIT_MEMLOCK: {shell} for launchd jobs `sudo "
            f"launchctl limit memlock {nbytes} "
            f"{nbytes}` (or MemoryLock in the plist's SoftResourceLimits/HardResourceLimits); "
            f"the kernel also caps each process at `sysctl {USER_WIRE_LIMIT}` and all users "
            f"at `sysctl {GLOBAL_USER_WIRE_LIMIT}` (bytes): as root `sudo sysctl "
            f"{USER_WIRE_LIMIT}={nbytes}`"
        )
