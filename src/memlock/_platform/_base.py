"""What every OS backend provides, and the errno translation they share.

A backend turns raw libc results (0 or errno) into memlock's exceptions, and answers the
questions only the OS can: limits, privilege, what is locked. One errno means different
things on different systems, so each backend may refine :meth:`Backend.lock_error`.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable

from .. import _hints
from ..errors import LockLimitError, LockPermissionError, MemlockError, UnsupportedOperation

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:  # records load on first use: dataclasses costs ~20 ms at import
    from typing import ClassVar

    from .._records import Limits, ProcessStatus, SystemStatus
    from ._libc import Libc

__all__ = ["Backend"]


class Backend:
    """Base class of the per-OS backends. Subclasses set the class attributes."""

    name: ClassVar[str] = "generic"
    #: C constant names and values this OS defines (MCL_CURRENT, ...).
    constants: ClassVar[dict[str, int]] = {}
    #: Whether mlock needs a page-aligned address (Solaris: EINVAL otherwise).
    requires_alignment: ClassVar[bool] = False
    #: mlock2(MLOCK_ONFAULT) / MCL_ONFAULT exist.
    supports_onfault: ClassVar[bool] = False
    #: mlockall/munlockall are implemented (not ENOSYS).
    supports_lock_all: ClassVar[bool] = True

    def __init__(
        self,
        libc: Libc,
        page_size: int | None = None,
        *,
        rlimit: Callable[[], tuple[int | None, int | None]] | None = None,
        euid: Callable[[], int] | None = None,
    ) -> None:
        self.libc = libc
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")
        #: Injected facts (tests of backends for other OSes run on a simulated libc).
        self._rlimit_source = rlimit
        self._euid = euid or os.geteuid

    # -- raw calls, translated -------------------------------------------------------

    def mlock(self, addr: int, length: int) -> None:
        """mlock(2); raises a MemlockError subclass on failure."""
        err = self.libc.mlock(addr, length)
        if err:
            raise self.lock_error("mlock", err, length)

    def munlock(self, addr: int, length: int) -> None:
        """munlock(2)."""
        err = self.libc.munlock(addr, length)
        if err:
            raise self.lock_error("munlock", err, length)

    def mlock_onfault(self, addr: int, length: int) -> None:
        """Lock pages as they fault in (Linux mlock2 MLOCK_ONFAULT)."""
        raise UnsupportedOperation(f"lock on fault is not available on {self.name}")

    def mlock2(self, addr: int, length: int, flags: int) -> None:
        """mlock2(2) (Linux only)."""
        raise UnsupportedOperation(f"mlock2 is not available on {self.name}")

    def mlockall(self, flags: int) -> None:
        """mlockall(2)."""
        err = self.libc.mlockall(flags)
        if err:
            raise self.lock_error("mlockall", err, None)

    def explain_range(self, start: int, end: int) -> str | None:
        """What in [start, end) the kernel cannot lock, where the OS tells; else None."""
        return None

    def mapped_ranges(self) -> list[tuple[int, int]] | None:
        """The process's mappings, sorted (start, end); None where the OS cannot tell."""
        return None

    def populate_plan(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """How to prefault [start, end): (start, end, advice) pieces; [] where unsupported."""
        return []

    def populate(self, start: int, end: int, advice: int) -> None:
        """Prefault [start, end) with ``advice`` from :meth:`populate_plan`; errors ignored."""

    def munlockall(self) -> None:
        """munlockall(2)."""
        err = self.libc.munlockall()
        if err:
            raise self.lock_error("munlockall", err, None)

    # -- facts -------------------------------------------------------------------------

    def rlimit(self) -> tuple[int | None, int | None]:
        """Soft and hard RLIMIT_MEMLOCK in bytes (None = unlimited)."""
        if self._rlimit_source is not None:
            return self._rlimit_source()
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

        def conv(v: int) -> int | None:
            return None if v == resource.RLIM_INFINITY else v

        return conv(soft), conv(hard)

    def privileged(self) -> bool:
        """The process may lock beyond RLIMIT_MEMLOCK (root on the BSDs)."""
        return self._euid() == 0

    def locked_bytes(self) -> int | None:
        """Bytes this process has locked, where the OS tells."""
        return None

    def limits(self) -> Limits:
        """The current limits and usage."""
        from .._records import Limits

        soft, hard = self.rlimit()
        privileged = self.privileged()
        locked = self.locked_bytes()
        available: int | None = None
        if soft is not None and not privileged:
            available = max(0, soft - (locked or 0))
        return Limits(soft, hard, locked, available, privileged)

    def process_status(self, pid: int) -> ProcessStatus:
        """What process ``pid`` has locked."""
        raise UnsupportedOperation(f"per-process lock status is not available on {self.name}")

    def system_status(self) -> SystemStatus:
        """Machine-wide locked/wired memory."""
        from .._records import SystemStatus

        return SystemStatus()

    # -- errors and hints --------------------------------------------------------------

    def permission_fix(self) -> str:
        """How to get the privilege to lock memory on this OS."""
        return _hints.permission_hint()

    def limit_fix(self, needed_total: int | None) -> str:
        """How to raise the limit to ``needed_total`` bytes on this OS."""
        return _hints.limit_hint(needed_total)

    def limit_error(
        self, op: str, err: int, requested: int | None, what: str = "RLIMIT_MEMLOCK"
    ) -> LockLimitError:
        """A LockLimitError with the numbers and the hint."""
        soft, _hard = self.rlimit()
        locked = self.locked_bytes()
        needed = None if requested is None else requested + (locked or 0)
        amount = "that" if requested is None else _hints.format_size(requested)
        msg = (
            f"{op}: cannot lock {amount}"
            f": over {what} (limit {_hints.format_size(soft)}, already locked "
            f"{_hints.format_size(locked) if locked is not None else 'unknown'})"
        )
        return LockLimitError(
            err, msg, hint=self.limit_fix(needed), requested=requested, limit=soft, locked=locked
        )

    def lock_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """Translate ``err`` from ``op`` into the right exception (POSIX defaults)."""
        text = os.strerror(err)
        if err == errno.EPERM:
            return LockPermissionError(
                err, f"{op}: {text}: this process may not lock memory",
                hint=self.permission_fix(), requested=requested, limit=self.rlimit()[0],
                locked=self.locked_bytes(),
            )
        if err == errno.ENOSYS:
            return UnsupportedOperation(f"{op} is not implemented on {self.name}")
        if err == errno.EAGAIN:
            return self.limit_error(op, err, requested, "a system limit on locked memory")
        return MemlockError(err, f"{op}: {text}", requested=requested)
