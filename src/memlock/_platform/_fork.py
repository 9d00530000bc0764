"""Notice a fork, whoever made it: Python's os.fork() or a C library's fork().

``os.register_at_fork`` hooks run only for forks made through Python; a C library calling
fork() (or ``ctypes.CDLL(None).fork()``) bypasses them, and the child inherits memlock's
state (counts of pages the child has not locked, secrets it must not read). A
:class:`ForkWatch` is checked at the entry of every stateful operation instead:

* Linux: one private anonymous page with ``MADV_WIPEONFORK``. Each subsystem owns one byte
  of it and sets it to 1; in any child the kernel hands the page over zeroed, so a load
  tells (the C fast path reads the same byte).
* Elsewhere: the pid, compared with the one recorded per subsystem (a system call).
"""

from __future__ import annotations

import mmap
import os
import sys

__all__ = ["REGISTRY_SLOT", "SECRETS_SLOT", "ForkWatch"]

#: The byte of the page each subsystem owns.
REGISTRY_SLOT = 0
SECRETS_SLOT = 1
_SLOTS = 2


class ForkWatch:
    """One byte per subsystem that reads 0 in a forked child until it catches up.

    Attributes:
        page: The ``MADV_WIPEONFORK`` page (Linux), or None where the pid is compared.
        address: The page's address for C code, or 0.
    """

    __slots__ = ("_address", "_pids", "page")

    def __init__(self) -> None:
        self.page: mmap.mmap | None = None
        self._address: int | None = 0
        self._pids = [os.getpid()] * _SLOTS
        if sys.platform == "linux":
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            try:
                page.madvise(18)  # MADV_WIPEONFORK (Linux 4.14)
            except OSError:
                page.close()
            else:
                page[:_SLOTS] = b"\x01" * _SLOTS
                self.page = page
                self._address = None  # found on first use: ctypes loads only then

    @property
    def address(self) -> int:
        """The page's address for C code (0 where the pid is compared)."""
        address = self._address
        if address is None:
            from ._libc import real_libc

            assert self.page is not None
            address = self._address = real_libc().address_of(memoryview(self.page))
        return address

    def forked(self, slot: int) -> bool:
        """Whether this process was forked since ``slot`` last caught up."""
        page = self.page
        if page is not None:
            return not page[slot]
        return self._pids[slot] != os.getpid()

    def caught_up(self, slot: int) -> None:
        """``slot`` has reset its state for this process."""
        page = self.page
        if page is not None:
            page[slot] = 1
        else:
            self._pids[slot] = os.getpid()
