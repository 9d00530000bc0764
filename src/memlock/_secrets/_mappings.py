"""Guarded mappings: the memory a secret lives in, made only through the platform layer.

A *mapping* is one reservation owned by a Python ``mmap`` object (made PROT_NONE, so it
cannot be read through; no file descriptor)::

    [guard page, PROT_NONE][data pages, locked][guard page, PROT_NONE]

The mmap object owns the range from the moment the kernel made it: whatever interrupts
the making of a mapping, dropping it unmaps everything (its Lock, if any, goes the same
way). Two backends fill the data pages:

* ``"anonymous"``: private anonymous memory made readable and writable, locked through
  the core registry (:func:`memlock.lock`, charged to RLIMIT_MEMLOCK), kept out of core
  dumps (Linux ``MADV_DONTDUMP``, FreeBSD ``MADV_NOCORE``) and from forked children
  (Linux ``MADV_WIPEONFORK``: a child sees zeros; elsewhere the pool zeroes the child's
  copies at fork).
* ``"memfd_secret"`` (Linux 5.14+): ``memfd_secret(2)`` pages mapped over the data part
  with ``MAP_FIXED``. The kernel removes them from its direct map, locks them and charges
  RLIMIT_MEMLOCK at ``mmap`` time, and refuses ``/proc/PID/mem``, ptrace peeks and
  get_user_pages (so ``mlock`` cannot be used on them; they are locked already).
  ``MADV_DONTFORK``: a forked child has no mapping there.

Every system call, OS constant and errno translation is an operation of the backend
(``memlock._platform``: reserve_guarded, open_anonymous, map_secret_memory, ...).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._lock import Lock
from .._lock import lock as _lock_buffer
from .._pages import PAGE_SIZE
from .._platform import BACKEND
from ..errors import UnsupportedOperation

if TYPE_CHECKING:
    import mmap

__all__ = [
    "ANONYMOUS",
    "MEMFD_SECRET",
    "Mapping",
    "map_pages",
    "probe_memfd_secret",
    "resolve_backend",
]

ANONYMOUS = "anonymous"
MEMFD_SECRET = "memfd_secret"
#: The errno of memfd_secret(2) here (0: granted), asked once per process.
_memfd_errno: list[int] = []


class Mapping:
    """One guarded mapping: ``size`` data bytes at ``base``, a PROT_NONE page either side.

    ``region`` (a Python mmap object) owns the whole reservation: closing or dropping it
    unmaps it, the data pages included.
    """

    __slots__ = ("addr", "backend", "base", "lock", "region", "size", "total", "view")

    def __init__(self, region: mmap.mmap, addr: int, size: int, backend: str) -> None:
        self.region = region
        self.addr = addr
        self.total = len(region)
        self.base = addr + PAGE_SIZE
        self.size = size
        self.backend = backend
        self.lock: Lock | None = None
        #: A byte view of the data pages, for the library's own reads and writes.
        self.view: memoryview = memoryview(b"")

    def release(self, wait: bool = True) -> None:
        """Unlock and unmap (idempotent; the data must be wiped already).

        ``wait`` False (finalizers): never wait for the registry's mutex; if it is busy,
        the Lock goes with this object and its release is queued (memlock._registry).
        """
        self.view.release()
        lk = self.lock
        if lk is not None:
            if wait:
                lk.unlock()
            else:
                lk._release_soon()
        _release(self.region)


def probe_memfd_secret() -> bool:
    """Whether the kernel grants memfd_secret(2) (asked once per process)."""
    if not _memfd_errno:
        _memfd_errno[:] = (BACKEND.secret_memory_errno(),)
    return not _memfd_errno[0]


def resolve_backend(backend: object) -> str:
    """The backend name to use for ``backend`` ("auto" picks memfd_secret where granted).

    Raises:
        TypeError / ValueError: not one of "auto", "anonymous", "memfd_secret".
        UnsupportedOperation: "memfd_secret" where the kernel refuses it.
    """
    if backend == "auto":
        return MEMFD_SECRET if probe_memfd_secret() else ANONYMOUS
    if backend == ANONYMOUS:
        return ANONYMOUS
    if backend == MEMFD_SECRET:
        if not probe_memfd_secret():
            raise UnsupportedOperation(
                f"memfd_secret(2) is refused here: {os.strerror(_memfd_errno[0])} (needs "
                "Linux 5.14+ with CONFIG_SECRETMEM and secretmem not disabled on the kernel "
                "command line); use backend='anonymous' or 'auto'")
        return MEMFD_SECRET
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, not {type(backend).__name__}")
    raise ValueError(
        f"unknown backend {backend!r}; expected 'auto', 'anonymous' or 'memfd_secret'")


def map_pages(size: int, backend: str) -> Mapping:
    """A new guarded, locked, undumpable, fork-proof mapping of ``size`` bytes (pages).

    Raises:
        LockLimitError: Over RLIMIT_MEMLOCK (numbers and hint in the message).
        LockPermissionError: RLIMIT_MEMLOCK is 0 and the process lacks the privilege.
        MemlockError: Any other refusal (vm.max_map_count: named, with the fix); nothing
            stays mapped.
    """
    region, addr = BACKEND.reserve_guarded(size + 2 * PAGE_SIZE)
    m = Mapping(region, addr, size, backend)  # owns the reservation from here on
    base = m.base
    if backend == MEMFD_SECRET:
        BACKEND.map_secret_memory(base, size)
        arr = _exporter(base, size)
    else:
        BACKEND.open_anonymous(base, size)
        arr = _exporter(base, size)
        m.lock = _lock_buffer(arr)
    m.view = memoryview(arr).cast("B")
    return m


_exporter = BACKEND.secret_calls()[2]
_release = BACKEND.release_guarded
