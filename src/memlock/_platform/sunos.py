"""illumos/Solaris backend: page-aligned mlock, PRIV_PROC_LOCK_MEMORY, project rctls.

Written from the Solaris munlock(3C)/mlock manual page (``shared/seeds``) and tested only
against a simulated libc that follows it: never run on an illumos or Solaris kernel.

What the page says, and what this backend does with it:

* EINVAL: ``addr`` is not a multiple of the page size (Linux rounds it down; this kernel
  refuses). :func:`memlock.lock` always passes page-aligned ranges; :mod:`memlock.lowlevel`
  passes yours through and gets :class:`MemlockError` naming the alignment.
  For mlockall, EINVAL means bad flags.
* EAGAIN: not enough system resources to lock the range (also how the
  ``project.max-locked-memory`` / ``zone.max-locked-memory`` resource controls refuse) ->
  :class:`LockLimitError`, never BlockingIOError.
* ENOMEM: part of the range is not mapped -> :class:`MemlockError`.
* EPERM: the process lacks the ``PRIV_PROC_LOCK_MEMORY`` privilege (the page says "not
  superuser"; since Solaris 10 the privilege decides) -> :class:`LockPermissionError`.
* ENOSYS: the system does not support memory locking -> :class:`UnsupportedOperation`.

On failure no lock changes (the page promises it). Within one mapping locks do not nest,
as on Linux; memlock's registry adds the nesting. There is no RLIMIT_MEMLOCK.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from .. import _hints
from .._records import Limits
from ..errors import LockLimitError, MemlockError, UnsupportedOperation
from ._base import Backend

__all__ = ["MCL_CURRENT", "MCL_FUTURE", "SunOSBackend"]

if TYPE_CHECKING:
    from ._libc import Libc

#: <sys/mman.h> values on illumos and Solaris.
MCL_CURRENT = 0x1
MCL_FUTURE = 0x2

#: The privilege that allows mlock (its name for priv_ineffect(3C) is "proc_lock_memory").
PRIV_PROC_LOCK_MEMORY = "proc_lock_memory"
RCTL = "project.max-locked-memory"


class SunOSBackend(Backend):
    """illumos and Solaris, written from the man page; verified only against a simulation.

    Args:
        libc: The C library (or a simulation with ``priv_ineffect``).
        page_size: Bytes per page; default: this machine's.
        rlimit: Returns soft and hard RLIMIT_MEMLOCK; default: (None, None), since
            illumos has no such limit.
        euid: Returns the effective user id (used only where priv_ineffect is missing).
        locked_bytes: Returns the bytes this process has locked; default: unknown.
        locked_memory_limit: Returns the ``project.max-locked-memory`` value in bytes;
            default: unknown (memlock does not bind getrctl(2)).

    Availability: illumos, Solaris.
    """

    name = "sunos"
    #: <sys/time_impl.h>: CLOCK_MONOTONIC 4 (CLOCK_HIGHRES), TIMER_ABSTIME 1
    monotonic_abstime = (4, 1)
    constants: ClassVar[dict[str, int]] = {"MCL_CURRENT": MCL_CURRENT, "MCL_FUTURE": MCL_FUTURE}
    requires_alignment = True

    def __init__(
        self,
        libc: Libc | None = None,
        page_size: int | None = None,
        *,
        rlimit: Callable[[], tuple[int | None, int | None]] | None = None,
        euid: Callable[[], int] | None = None,
        locked_bytes: Callable[[], int | None] | None = None,
        locked_memory_limit: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(libc, page_size, rlimit=rlimit, euid=euid)
        self._locked_source = locked_bytes
        self._rctl_source = locked_memory_limit

    # --- secrets: guarded, locked, undumpable mappings ---

    # illumos/Solaris: no madvise advice that keeps pages out of core dumps (coreadm(1M)
    # decides what a core holds), none that wipes on fork: a forked child's copies are
    # zeroed by memlock itself (Backend.wipe_inherited); guard pages and locking (with
    # page-aligned addresses, as every secret mapping has) are as everywhere.

    # --- end of secrets ---

    # -- facts -----------------------------------------------------------------------

    def rlimit(self) -> tuple[int | None, int | None]:
        """RLIMIT_MEMLOCK where the OS has one; (None, None) on illumos, which has none."""
        if self._rlimit_source is not None:
            return self._rlimit_source()
        which = getattr(resource, "RLIMIT_MEMLOCK", None)
        if which is None:
            return None, None
        soft, hard = resource.getrlimit(which)
        inf = resource.RLIM_INFINITY
        return (None if soft == inf else soft), (None if hard == inf else hard)

    def privileged(self) -> bool:
        """PRIV_PROC_LOCK_MEMORY is in the effective set (priv_ineffect(3C)).

        Falls back to "effective uid is 0" where the C library has no priv_ineffect.
        """
        effective = self.libc.priv_ineffect(PRIV_PROC_LOCK_MEMORY)
        if effective is None:
            return self._euid() == 0
        return effective

    def locked_bytes(self) -> int | None:
        """Bytes this process has locked, where known (injected; None on a real system)."""
        return None if self._locked_source is None else self._locked_source()

    def locked_memory_limit(self) -> int | None:
        """``project.max-locked-memory`` in bytes, where known."""
        return None if self._rctl_source is None else self._rctl_source()

    def limits(self) -> Limits:
        """What may be locked: the project's locked-memory cap stands in for RLIMIT_MEMLOCK."""
        soft, hard = self.rlimit()
        locked = self.locked_bytes()
        cap = self.locked_memory_limit()
        available = None if cap is None else max(0, cap - (locked or 0))
        return Limits(soft, hard, locked, available, self.privileged())

    # -- errors ----------------------------------------------------------------------

    def translate_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """Translate the errno of ``op`` (see the module docstring)."""
        text = os.strerror(err)
        if err == errno.EINVAL:
            why = (
                "flags are 0 or not a combination of MCL_CURRENT and MCL_FUTURE"
                if op == "mlockall"
                else f"the address is not a multiple of the page size ({self.page_size}); "
                "illumos/Solaris do not round it (memlock.lock() aligns for you)"
            )
            return MemlockError(err, f"{op}: {text}: {why}", requested=requested)
        if err == errno.EPERM:
            return self.permission_error(op, err, requested,
                                         "the process lacks the PRIV_PROC_LOCK_MEMORY privilege",
                                         self.permission_hint())
        if err == errno.ENOSYS:
            return UnsupportedOperation(f"{op}: this system does not support memory locking")
        if err == errno.EAGAIN:
            return self._limit(op, err, requested)
        if err == errno.ENOMEM:
            return MemlockError(
                err, f"{op}: {text}: part of the range is not mapped", requested=requested
            )
        return super().translate_error(op, err, requested)

    def _limit(self, op: str, err: int, requested: int | None) -> LockLimitError:
        locked = self.locked_bytes()
        cap = self.locked_memory_limit()
        fmt = _hints.format_size
        size = fmt(requested) if requested is not None else "the address space"
        msg = (
            f"{op}: cannot lock {size}: insufficient resources ({RCTL} "
            f"{fmt(cap) if cap is not None else 'unknown'}, already locked "
            f"{fmt(locked) if locked is not None else 'unknown'}, or system memory)"
        )
        needed = None if requested is None else requested + (locked or 0)
        return LockLimitError(
            err, msg, hint=self.limit_hint(needed), requested=requested, limit=cap, locked=locked
        )

    # -- hints -------------------------------------------------------------------------

    def permission_hint(self, needed_total: int | None = None) -> str:
        """How to grant PRIV_PROC_LOCK_MEMORY."""
        return (
            "How to fix (illumos/Solaris): grant the PRIV_PROC_LOCK_MEMORY privilege "
            "(proc_lock_memory): to a user with `usermod -K "
            "defaultpriv=basic,proc_lock_memory USER` (log in again), to a running process "
            "with `ppriv -s EIP+proc_lock_memory PID`, to an SMF service with "
            "`privileges=basic,proc_lock_memory` in its method context; in a zone, the "
            f"zone's limitpriv must include it; the amount is then capped by {RCTL}"
        )

    def limit_hint(self, needed_total: int | None, environment: str | None = None) -> str:
        """How to raise ``project.max-locked-memory`` to allow ``needed_total``."""
        size = "BYTES" if needed_total is None else f"{max(1, -(-needed_total // 2**20))}M"
        return (
            f"How to fix (illumos/Solaris): raise the project's cap: `prctl -n {RCTL} -r -v "
            f"{size} -i project PROJECT` (running processes), or persistently `projmod -s "
            f"-K '{RCTL}=(privileged,{size},deny)' PROJECT` (see `id -p` for the project); "
            "in a zone also zone.max-locked-memory (`zonecfg`: capped-memory locked=...); "
            "otherwise the machine is short of memory that can be locked"
        )
