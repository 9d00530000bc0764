"""FreeBSD backend: mlock/mlockall, ``security.bsd.unprivileged_mlock``, ``vm.max_user_wired``.

Written from the FreeBSD mlock(2) and mlockall(2) manual pages (``shared/seeds``) and
tested only against a simulated libc that follows them: never run on a FreeBSD kernel.

What the pages say, and what this backend does with it:

* EPERM: ``security.bsd.unprivileged_mlock`` is 0 and the caller is not root (or a jail
  without ``allow.mlock``) -> :class:`LockPermissionError`.
* RLIMIT_MEMLOCK 0 binds root too: every mlock/mlockall answers ENOMEM (EAGAIN) ->
  :class:`LockPermissionError` (the rule of :meth:`Backend.lock_error`), with the hint to
  raise the limit.
* ENOMEM from mlock means three things: part of the range is not mapped, a page could not
  be faulted in, or the lock would exceed RLIMIT_MEMLOCK (which applies to root too) or the
  system-wide ``vm.max_user_wired``. The limit is told apart by redoing the kernel's
  arithmetic with the numbers it exposes (``vm.max_user_wired``,
  ``vm.stats.vm.v_user_wire_count``, RLIMIT_MEMLOCK) -> :class:`LockLimitError`;
  otherwise :class:`MemlockError`.
* EAGAIN (mlockall, and mlock on old releases that checked ``vm.max_wired`` there) ->
  :class:`LockLimitError`, never BlockingIOError.
* EINVAL: the range wraps around zero, or mlockall flags are 0 or unknown ->
  :class:`MemlockError`.

The limits count virtual memory: two locked mappings of one page count twice.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from .. import _hints
from .._records import Limits, SystemStatus
from ..errors import LockLimitError, MemlockError, UnsupportedOperation
from ._base import Backend

__all__ = ["MCL_CURRENT", "MCL_FUTURE", "FreeBSDBackend"]

if TYPE_CHECKING:
    from ._libc import Libc

#: <sys/mman.h> values on FreeBSD.
MCL_CURRENT = 0x0001
MCL_FUTURE = 0x0002

UNPRIVILEGED_MLOCK = "security.bsd.unprivileged_mlock"
MAX_USER_WIRED = "vm.max_user_wired"
USER_WIRE_COUNT = "vm.stats.vm.v_user_wire_count"
WIRE_COUNT = "vm.stats.vm.v_wire_count"


class FreeBSDBackend(Backend):
    """FreeBSD, written from its manual pages; verified only against a simulated libc.

    Args:
        libc: The C library (or a simulation with ``sysctl_int``).
        page_size: Bytes per page; default: this machine's.
        rlimit: Returns soft and hard RLIMIT_MEMLOCK in bytes (None = unlimited);
            default: :func:`resource.getrlimit`.
        euid: Returns the effective user id; default: :func:`os.geteuid`.
        locked_bytes: Returns the bytes this process has wired; default: unknown (FreeBSD
            has no cheap per-process counter).

    Availability: FreeBSD.
    """

    name = "freebsd"
    monotonic_abstime = (4, 1)  # <sys/_clock_id.h>: CLOCK_MONOTONIC 4, TIMER_ABSTIME 1
    constants: ClassVar[dict[str, int]] = {"MCL_CURRENT": MCL_CURRENT, "MCL_FUTURE": MCL_FUTURE}

    def __init__(
        self,
        libc: Libc | None = None,
        page_size: int | None = None,
        *,
        rlimit: Callable[[], tuple[int | None, int | None]] | None = None,
        euid: Callable[[], int] | None = None,
        locked_bytes: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(libc, page_size, rlimit=rlimit, euid=euid)
        self._locked_source = locked_bytes

    # --- secrets: guarded, locked, undumpable mappings ---

    #: madvise(2): "MADV_NOCORE: Region is not included in a core file".
    no_dump_advice = (8, "MADV_NOCORE")
    # No wipe-on-fork advice is used (minherit(2) INHERIT_ZERO exists since FreeBSD 12,
    # unverified here): memlock zeroes a forked child's copies itself (wipe_inherited).

    # --- end of secrets ---

    # -- facts ---------------------------------------------------------------------

    def sysctl_pages(self, name: str) -> int | None:
        """A sysctl counted in pages, in bytes (None where it cannot be read)."""
        value = self.libc.sysctl_int(name)
        return None if value is None else value * self.page_size

    def privileged(self) -> bool:
        """Root: may lock even when ``security.bsd.unprivileged_mlock`` is 0.

        Root is still bound by RLIMIT_MEMLOCK and ``vm.max_user_wired`` on FreeBSD.
        """
        return self._euid() == 0

    def rlimit_binds(self) -> bool:
        """Always: RLIMIT_MEMLOCK binds root too on FreeBSD."""
        return True

    def zero_limit_reason(self) -> str:
        """FreeBSD: root is bound by the limit too."""
        return "RLIMIT_MEMLOCK is 0 (on FreeBSD it binds root too)"

    def locked_bytes(self) -> int | None:
        """Bytes this process has wired, where known (injected; None on a real system)."""
        return None if self._locked_source is None else self._locked_source()

    def limits(self) -> Limits:
        """RLIMIT_MEMLOCK and the share of ``vm.max_user_wired`` still free.

        Unlike Linux, root is not exempt from the limits, so ``available_bytes`` is computed
        for root too: the smaller of what RLIMIT_MEMLOCK and the system-wide limit leave.
        """
        soft, hard = self.rlimit()
        locked = self.locked_bytes()
        candidates: list[int] = []
        if soft is not None:
            candidates.append(max(0, soft - (locked or 0)))
        system_left = self._system_headroom()
        if system_left is not None:
            candidates.append(system_left)
        available = min(candidates) if candidates else None
        return Limits(soft, hard, locked, available, self.privileged())

    def _system_headroom(self) -> int | None:
        """``vm.max_user_wired - vm.stats.vm.v_user_wire_count`` in bytes, where known."""
        max_wired = self.sysctl_pages(MAX_USER_WIRED)
        user_wired = self.sysctl_pages(USER_WIRE_COUNT)
        if max_wired is None or user_wired is None:
            return None
        return max(0, max_wired - user_wired)

    def system_status(self) -> SystemStatus:
        """Wired, user-wired and the user-wired limit from sysctl; None where unreadable."""
        return SystemStatus(
            wired_bytes=self.sysctl_pages(WIRE_COUNT),
            user_wired_bytes=self.sysctl_pages(USER_WIRE_COUNT),
            max_user_wired_bytes=self.sysctl_pages(MAX_USER_WIRED),
            total_bytes=self.libc.sysctl_int("hw.physmem"),
        )

    # -- errors --------------------------------------------------------------------

    def translate_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """Translate FreeBSD's errno for ``op`` (see the module docstring)."""
        text = os.strerror(err)
        if err == errno.EPERM:
            return self.permission_error(
                op, err, requested,
                f"{UNPRIVILEGED_MLOCK} is 0 and the process is not root (or the jail lacks "
                "allow.mlock)", self.permission_hint(),
            )
        if err == errno.ENOSYS:
            return UnsupportedOperation(f"{op} is not implemented by this kernel")
        if err == errno.EINVAL:
            why = (
                "flags are 0 or include flags this kernel does not implement"
                if op == "mlockall"
                else "the address range wraps around zero"
            )
            return MemlockError(err, f"{op}: {text}: {why}", requested=requested)
        if err == errno.ENOMEM and op == "munlock":
            return MemlockError(
                err, f"munlock: {text}: part of the range is not mapped", requested=requested
            )
        if err == errno.ENOMEM and op == "mlockall":
            return self._limit("mlockall", err, None, "RLIMIT_MEMLOCK or vm.max_user_wired")
        if err == errno.ENOMEM and op.startswith("mlock"):
            which = self._limit_hit(requested)
            if which is not None:
                return self._limit(op, err, requested, which)
            known = self.locked_bytes() is not None
            return MemlockError(
                err,
                f"{op}: {text}: part of the range is not mapped, or a page could not be "
                "faulted in"
                + ("" if known else " (or RLIMIT_MEMLOCK, counting memory already wired by "
                   "this process, which FreeBSD does not report)"),
                hint=None if known else self.limit_hint(requested),
                requested=requested,
            )
        if err == errno.EAGAIN:
            return self._limit(op, err, requested, "vm.max_user_wired (system resources)")
        return super().translate_error(op, err, requested)

    def _limit_hit(self, requested: int | None) -> str | None:
        """Which limit the kernel's checks, redone with its numbers, would refuse."""
        if requested is None:
            return None
        page = self.page_size
        npages = -(-requested // page)
        max_wired = self.libc.sysctl_int(MAX_USER_WIRED)
        if max_wired is not None and npages > max_wired:
            return MAX_USER_WIRED
        soft, _ = self.rlimit()
        if soft is not None and requested + (self.locked_bytes() or 0) > soft:
            return "RLIMIT_MEMLOCK"
        user_wired = self.libc.sysctl_int(USER_WIRE_COUNT)
        if max_wired is not None and user_wired is not None and npages + user_wired > max_wired:
            return MAX_USER_WIRED
        return None

    def _limit(self, op: str, err: int, requested: int | None, what: str) -> LockLimitError:
        """A LockLimitError with the numbers of the limit ``what`` names."""
        soft, _ = self.rlimit()
        locked = self.locked_bytes()
        fmt = _hints.format_size
        if what == MAX_USER_WIRED:
            limit = self.sysctl_pages(MAX_USER_WIRED)
            user_wired = self.sysctl_pages(USER_WIRE_COUNT)
            detail = (
                f"system-wide {MAX_USER_WIRED} {fmt(limit)}, wired by all users now "
                f"{fmt(user_wired) if user_wired is not None else 'unknown'}"
            )
        else:
            limit = soft
            detail = (
                f"RLIMIT_MEMLOCK {fmt(soft)}, already locked "
                f"{fmt(locked) if locked is not None else 'unknown'}"
            )
        size = fmt(requested) if requested is not None else "the address space"
        needed = None if requested is None else requested + (locked or 0)
        return LockLimitError(
            err,
            f"{op}: cannot lock {size}: over {what} ({detail})",
            hint=self.limit_hint(needed),
            requested=requested,
            limit=limit,
            locked=locked,
        )

    # -- hints -----------------------------------------------------------------------

    def permission_hint(self, needed_total: int | None = None) -> str:
        """How to let unprivileged processes lock memory on FreeBSD."""
        return (
            f"How to fix (FreeBSD): as root, `sysctl {UNPRIVILEGED_MLOCK}=1` (persist it in "
            "/etc/sysctl.conf), or run the program as root; inside a jail, start the jail "
            "with `allow.mlock`"
        )

    def limit_hint(self, needed_total: int | None, environment: str | None = None) -> str:
        """How to raise RLIMIT_MEMLOCK and ``vm.max_user_wired`` to allow ``needed_total``."""
        kib = "unlimited" if needed_total is None else str(max(1, -(-needed_total // 1024)))
        size = "unlimited" if needed_total is None else f"{max(1, -(-needed_total // 2**20))}M"
        hard = self.hard_limit_too_low(needed_total)
        if hard is None:
            rlimit = (f"`ulimit -l {kib}` (KiB) in the shell that starts it, `limits -l {size} "
                      "COMMAND`, or")
        else:
            rlimit = (_hints.hard_limit_note(hard, needed_total, "only root can raise it")
                      + f"; as root `limits -l {size} COMMAND`, or")
        wired = self.libc.sysctl_int(USER_WIRE_COUNT)
        if needed_total is not None and wired is not None:
            pages = wired + -(-needed_total // self.page_size)
            sysctl = f"`sysctl {MAX_USER_WIRED}={pages}` (in pages)"
        else:
            sysctl = f"raise `sysctl {MAX_USER_WIRED}` (in pages)"
        return (
            f"How to fix (FreeBSD): raise RLIMIT_MEMLOCK: {rlimit} for a login class "
            f"`:memorylocked={size}:` in /etc/login.conf then `cap_mkdb /etc/login.conf` and "
            f"log in again; and if the system-wide limit is the one hit, as root {sysctl}, "
            "persisted in /etc/sysctl.conf"
        )
