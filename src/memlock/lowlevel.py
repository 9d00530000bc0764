"""Raw memory-locking calls on integer addresses, with the kernel's own semantics.

.. warning::
   These calls do **not nest** and bypass memlock's registry: one ``munlock`` undoes any
   number of ``mlock`` calls on the same pages, including pages that :func:`memlock.lock`
   holds. A wrong address can unlock or fault memory the interpreter relies on, and a
   failed call may leave part of the range locked (Linux). Prefer :func:`memlock.lock`.

Arguments are checked before any system call: a negative integer raises ValueError, one
that does not fit in ``size_t`` raises OverflowError; they never wrap. Failures raise the
same exceptions as the rest of memlock (:class:`memlock.MemlockError` and subclasses).
"""

from __future__ import annotations

import sys

from ._pages import as_size
from ._platform import BACKEND

__all__ = ["mlock", "mlockall", "munlock", "munlockall"]
if sys.platform == "linux":
    __all__ += ["mlock2"]


def mlock(addr: int, length: int) -> None:
    """Lock [addr, addr+length) with the mlock system call; the kernel rounds to pages."""
    BACKEND.mlock(as_size(addr, "addr"), as_size(length, "length"))


def munlock(addr: int, length: int) -> None:
    """Unlock [addr, addr+length) with the munlock system call, whoever locked it."""
    BACKEND.munlock(as_size(addr, "addr"), as_size(length, "length"))


if sys.platform == "linux":

    def mlock2(addr: int, length: int, flags: int) -> None:
        """Lock with the mlock2 system call (Linux 4.4+): ``flags`` 0 or ``MLOCK_ONFAULT``.

        Availability: Linux.
        """
        f = as_size(flags, "flags")
        if f > 0xFFFFFFFF:
            raise OverflowError(f"flags {f} does not fit in unsigned int")
        BACKEND.mlock2(as_size(addr, "addr"), as_size(length, "length"), f)


def mlockall(flags: int) -> None:
    """Lock the whole address space (the mlockall system call) with ``MCL_*`` flags."""
    f = as_size(flags, "flags")
    if f > 0x7FFFFFFF:
        raise OverflowError(f"flags {f} does not fit in int")
    BACKEND.mlockall(f)


def munlockall() -> None:
    """Unlock every page of the process (munlockall), memlock's Locks included."""
    BACKEND.munlockall()
