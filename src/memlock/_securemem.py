"""Memory for secrets: guarded, locked, undumpable mappings and the small-secret pool.

A *mapping* here is one reservation made with raw ``mmap(2)`` (no Python object owns it,
so no file descriptor is kept and nothing unmaps it behind our back)::

    [guard page, PROT_NONE][data pages, locked][guard page, PROT_NONE]

Two backends fill the data pages:

* ``"anonymous"``: private anonymous memory, locked through the core registry
  (:func:`memlock.lock`, charged to RLIMIT_MEMLOCK), ``MADV_DONTDUMP`` and
  ``MADV_WIPEONFORK`` (a forked child sees zeros).
* ``"memfd_secret"`` (Linux 5.14+): ``memfd_secret(2)`` pages mapped over the data part
  with ``MAP_FIXED``. The kernel removes them from its direct map, locks them and charges
  RLIMIT_MEMLOCK at ``mmap`` time (EAGAIN over the limit), and refuses
  ``/proc/PID/mem``, ptrace peeks and get_user_pages (so ``mlock`` cannot be used on them;
  they are locked already). ``MADV_DONTFORK``: a forked child has no mapping there.
  The file descriptor is closed at once; the mapping keeps the memory alive.

Small secrets share *chunks* (mappings) of a size-class pool; each slot is the class size
followed by an 8-byte canary, written once when the slot is first used. At close the bytes
after the secret must still be zeros and the canary (an overrun of even one byte shows),
and the secret's part is wiped; a slot that fails the check is wiped and retired. Chunks
grow by doubling up to :data:`MAX_CHUNK`, never past what RLIMIT_MEMLOCK still allows, and
go back (wiped, unlocked, unmapped) when empty; one empty chunk per class is kept to avoid
map/unmap churn, and every empty chunk is returned before a lock failure is reported.

One mutex (``state.mutex``) guards the pool and the secure buffers' open/closed states. In a
forked child the generation bumps: buffers and chunks inherited from the parent are
abandoned (never touched, never unmapped: an inherited view may still point there).
"""

from __future__ import annotations

import errno
import os
import sys
import threading

from ._info import limits
from ._lock import Lock
from ._lock import lock as _lock_buffer
from ._pages import PAGE_SIZE
from ._platform import BACKEND
from ._platform._libc import real_libc
from .errors import MemlockError, UnsupportedOperation

__all__ = [
    "ANONYMOUS",
    "CANARY",
    "CANARY_SIZE",
    "CLASS_SIZES",
    "MAX_CLASS",
    "MEMFD_SECRET",
    "PROT_NONE",
    "PROT_READ",
    "PROT_RW",
    "Chunk",
    "Mapping",
    "Pool",
    "drain_pending",
    "map_pages",
    "pool",
    "pool_stats",
    "probe_memfd_secret",
    "resolve_backend",
    "state",
    "tail",
    "trim",
    "unmap_pages",
]

LIBC = real_libc()
ANONYMOUS = "anonymous"
MEMFD_SECRET = "memfd_secret"

PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
PROT_RW = PROT_READ | PROT_WRITE
_MAP_SHARED, _MAP_PRIVATE, _MAP_FIXED = 0x01, 0x02, 0x10
_MAP_ANONYMOUS, _MAP_FIXED_NOREPLACE = 0x20, 0x100000  # Linux values

# Platform constants (literal checks so mypy sees every OS from Linux).
_MADV_DONTDUMP: int | None = None  # keep out of core dumps (FreeBSD: MADV_NOCORE)
_MADV_WIPEONFORK: int | None = None  # child gets zero pages
_MADV_DONTFORK: int | None = None  # child gets no mapping
_O_CLOEXEC = 0
if sys.platform == "linux":
    _MAP_ANONYMOUS = 0x20
    _MADV_DONTDUMP, _MADV_WIPEONFORK, _MADV_DONTFORK = 16, 18, 10
    _O_CLOEXEC = 0o2000000
elif sys.platform == "darwin":
    _MAP_ANONYMOUS = 0x1000
elif sys.platform.startswith("freebsd"):
    _MAP_ANONYMOUS = 0x1000
    _MADV_DONTDUMP = 8  # MADV_NOCORE
elif sys.platform == "sunos5":
    _MAP_ANONYMOUS = 0x100
else:
    _MAP_ANONYMOUS = 0x20

#: Bytes of the canary that follows (pool) or precedes (own mapping) every secret.
CANARY_SIZE = 8
#: Per-process random canary value (not secret: it detects overruns, not attackers).
CANARY = os.urandom(CANARY_SIZE)
#: Pool size classes (bytes); larger secrets get their own mapping.
CLASS_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048)
MAX_CLASS = CLASS_SIZES[-1]
#: Chunk data sizes: the first chunk of a class, and the most one chunk may grow to.
MIN_CHUNK = 4 * PAGE_SIZE
MAX_CHUNK = max(64 * PAGE_SIZE, 256 * 1024)

_TAILS: dict[int, bytes] = {}


def tail(n: int) -> bytes:
    """What follows an ``n``-byte secret in its slot: zeros to the class size, the canary."""
    t = _TAILS.get(n)
    if t is None:
        t = _TAILS[n] = bytes(CLASS_SIZES[_CLASS_OF[n]] - n) + CANARY
    return t


_CLASS_OF = [0] * (MAX_CLASS + 1)
for _n in range(MAX_CLASS + 1):
    _CLASS_OF[_n] = next(i for i, c in enumerate(CLASS_SIZES) if _n <= c)
del _n


class _State:
    """Process-wide mutable state, replaced wholesale in a forked child."""

    __slots__ = ("gen", "memfd_error", "memfd_ok", "mutex", "own", "pending")

    def __init__(self, gen: int) -> None:
        self.gen = gen
        #: Guards the pools, ``own``, ``pending`` and the buffers' open/closed states.
        #: Never taken by a finalizer: finalizers only append to ``pending``.
        self.mutex = threading.Lock()
        #: Mappings of live buffers that have their own (isolated or large).
        self.own: set[Mapping] = set()
        self.memfd_ok: bool | None = None  # probed on first use
        self.memfd_error = 0
        #: What finalizers wiped but could not free: (chunk, slot offset) or (mapping, -1).
        #: Freed at the next operation of this module.
        self.pending: list[tuple[Chunk | Mapping, int]] = []


#: Replaced in a forked child: always read it as ``_securemem.state``.
state = _State(0)


class Mapping:
    """One guarded mapping: ``size`` data bytes at ``base``, a PROT_NONE page either side."""

    __slots__ = ("addr", "backend", "base", "lock", "size", "total", "view")

    def __init__(self, addr: int, total: int, size: int, backend: str, lock: Lock | None,
                 view: memoryview) -> None:
        self.addr = addr
        self.total = total
        self.base = addr + PAGE_SIZE
        self.size = size
        self.backend = backend
        self.lock = lock
        #: A byte view of the data pages, for the library's own reads and writes.
        self.view = view


def _fail(op: str, err: int) -> MemlockError:
    return MemlockError(err, f"{op}: {os.strerror(err)}")


def _mmap_error(err: int, total: int) -> BaseException:
    if err == errno.ENOMEM:
        return MemlockError(
            err, f"mmap of {total} bytes: {os.strerror(err)} (out of address space, memory, "
            "or vm.max_map_count mappings)", requested=total)
    return _fail("mmap", err)


def probe_memfd_secret() -> bool:
    """Whether the kernel grants memfd_secret(2) (asked once per process)."""
    st = state
    if st.memfd_ok is None:
        if sys.platform != "linux":
            st.memfd_ok, st.memfd_error = False, errno.ENOSYS
        else:
            fd, err = LIBC.memfd_secret(_O_CLOEXEC)
            if err:
                st.memfd_ok, st.memfd_error = False, err
            else:
                os.close(fd)
                st.memfd_ok = True
    return st.memfd_ok


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
            err = state.memfd_error
            raise UnsupportedOperation(
                f"memfd_secret(2) is refused here: {os.strerror(err)} (needs Linux 5.14+ "
                "with CONFIG_SECRETMEM and secretmem not disabled on the kernel command "
                "line); use backend='anonymous' or 'auto'")
        return MEMFD_SECRET
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, not {type(backend).__name__}")
    raise ValueError(
        f"unknown backend {backend!r}; expected 'auto', 'anonymous' or 'memfd_secret'")


def _map_secretmem(base: int, size: int) -> None:
    """Map ``size`` bytes of a new memfd_secret file at ``base`` (MAP_FIXED)."""
    fd, err = LIBC.memfd_secret(_O_CLOEXEC)
    if err:
        raise UnsupportedOperation(f"memfd_secret(2): {os.strerror(err)}")
    try:
        os.ftruncate(fd, size)
        _, err = LIBC.mmap(base, size, PROT_RW, _MAP_SHARED | _MAP_FIXED, fd)
    finally:
        os.close(fd)
    if err in (errno.EAGAIN, errno.ENOMEM, errno.EPERM):
        # The kernel charges RLIMIT_MEMLOCK at mmap time and says EAGAIN when over it.
        raise BACKEND.limit_error("mmap(memfd_secret)", err, size)
    if err:
        raise _fail("mmap(memfd_secret)", err)


def map_pages(size: int, backend: str) -> Mapping:
    """A new guarded, locked, undumpable, fork-proof mapping of ``size`` bytes (pages).

    Raises:
        LockLimitError: Over RLIMIT_MEMLOCK (numbers and hint in the message).
        MemlockError: Any other refusal; nothing stays mapped.
    """
    total = size + 2 * PAGE_SIZE
    addr, err = LIBC.mmap(0, total, PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS)
    if err:
        raise _mmap_error(err, total)
    base = addr + PAGE_SIZE
    inner_mapped = True
    try:
        if _MADV_DONTDUMP is not None:
            err = LIBC.madvise(addr, total, _MADV_DONTDUMP)
            if err:
                raise _fail("madvise(MADV_DONTDUMP)", err)
        lock = None
        if backend == MEMFD_SECRET:
            try:
                _map_secretmem(base, size)
            except MemlockError:
                # A failed MAP_FIXED leaves a hole where the data pages were (checked on
                # Linux 6.x): unmap only the guards, never a range someone may now own.
                inner_mapped = False
                raise
            if _MADV_DONTFORK is not None:
                err = LIBC.madvise(base, size, _MADV_DONTFORK)
                if err:
                    raise _fail("madvise(MADV_DONTFORK)", err)
            arr = LIBC.exporter(base, size)
        else:
            err = LIBC.mprotect(base, size, PROT_RW)
            if err:
                raise _fail("mprotect", err)
            if _MADV_WIPEONFORK is not None:
                err = LIBC.madvise(base, size, _MADV_WIPEONFORK)
                if err:
                    raise _fail("madvise(MADV_WIPEONFORK)", err)
            arr = LIBC.exporter(base, size)
            lock = _lock_buffer(arr)
    except BaseException:
        if inner_mapped:
            LIBC.munmap(addr, total)
        else:
            LIBC.munmap(addr, PAGE_SIZE)
            LIBC.munmap(base + size, PAGE_SIZE)
        raise
    return Mapping(addr, total, size, backend, lock, memoryview(arr).cast("B"))


def unmap_pages(m: Mapping) -> None:
    """Wipe, unlock and unmap ``m`` (its data pages must be writable)."""
    LIBC.wipe(m.base, m.size)
    m.view.release()
    if m.lock is not None:
        m.lock.unlock()
    err = LIBC.munmap(m.addr, m.total)
    if err:
        raise _fail("munmap", err)


class Chunk:
    """A pool mapping cut into ``stride``-byte slots of one size class."""

    __slots__ = ("base", "bump", "cls", "free", "limit", "live", "map", "pool", "size",
                 "stride", "view", "zeros")

    def __init__(self, m: Mapping, cls: int, pool: Pool) -> None:
        self.map = m
        self.base = m.base
        self.view = m.view
        self.cls = cls
        self.pool = pool
        self.size = CLASS_SIZES[cls]
        self.stride = self.size + CANARY_SIZE
        self.zeros = bytes(self.size)
        self.limit = m.size - self.stride  # the last slot offset
        self.free: list[int] = []  # offsets of freed slots (wiped)
        self.bump = 0  # offset of the first never-used slot
        self.live = 0


class Pool:
    """Size-class pool of one backend. Call with ``state.mutex`` held."""

    __slots__ = ("avail", "backend", "chunks", "empty")

    def __init__(self, backend: str) -> None:
        self.backend = backend
        n = len(CLASS_SIZES)
        self.avail: list[list[Chunk]] = [[] for _ in range(n)]  # chunks with free slots
        self.chunks: list[list[Chunk]] = [[] for _ in range(n)]
        self.empty = [0] * n  # empty chunks kept per class (at most 1)

    def alloc(self, n: int) -> tuple[Chunk, int]:
        """A zeroed slot for an ``n``-byte secret, its canary written: (chunk, offset)."""
        if state.pending:
            drain_pending()
        ci = _CLASS_OF[n]
        avail = self.avail[ci]
        c = avail[-1] if avail else self._grow(ci)
        free = c.free
        if free:
            off = free.pop()
        else:
            off = c.bump
            c.bump = off + c.stride
            c.view[off + c.size:off + c.stride] = CANARY  # carved: the canary stays
        if not c.live:
            self.empty[ci] -= 1
        c.live += 1
        if not free and c.bump > c.limit:
            avail.remove(c)
        return c, off

    def free(self, c: Chunk, off: int) -> None:
        """Return a slot the caller wiped."""
        free = c.free
        if not free and c.bump > c.limit:  # was full
            self.avail[c.cls].append(c)
        free.append(off)
        c.live -= 1
        if not c.live:
            self.emptied(c)

    def emptied(self, c: Chunk) -> None:
        """``c`` has no live slot left: keep it as the class's spare, or return it."""
        ci = c.cls
        if self.empty[ci]:
            self._release(c)
        else:
            self.empty[ci] = 1

    def _release(self, c: Chunk) -> None:
        ci = c.cls
        self.avail[ci].remove(c)
        self.chunks[ci].remove(c)
        unmap_pages(c.map)

    def release_empty(self) -> int:
        """Return every empty chunk; how many."""
        done = 0
        for ci in range(len(CLASS_SIZES)):
            for c in [c for c in self.chunks[ci] if not c.live]:
                self._release(c)
                done += 1
            self.empty[ci] = 0
        return done

    def _grow(self, ci: int) -> Chunk:
        stride = CLASS_SIZES[ci] + CANARY_SIZE
        least = -(-stride // PAGE_SIZE) * PAGE_SIZE
        have = sum(c.map.size for c in self.chunks[ci])
        for attempt in (0, 1):
            lim = limits()
            first = MIN_CHUNK
            if lim.soft is not None and not lim.privileged:
                # Small limits: first chunks of 1/16 of the limit, so all classes fit.
                first = max(PAGE_SIZE, min(MIN_CHUNK, lim.soft // 16 // PAGE_SIZE * PAGE_SIZE))
            size = max(least, min(MAX_CHUNK, max(first, have)))
            free = lim.available_bytes
            if free is not None and free < size:
                size = max(least, free - free % PAGE_SIZE)
            try:
                m = map_pages(size, self.backend)
                break
            except MemlockError:
                if attempt or not _release_all_empty():
                    raise
        c = Chunk(m, ci, self)
        self.chunks[ci].append(c)
        self.avail[ci].append(c)
        self.empty[ci] += 1  # counted empty until its first slot is taken
        return c

    def stats(self) -> list[tuple[int, int, int, int]]:
        """(class size, chunks, chunk bytes, live slots) per class, for tests."""
        return [
            (CLASS_SIZES[ci], len(cs), sum(c.map.size for c in cs), sum(c.live for c in cs))
            for ci, cs in enumerate(self.chunks)
        ]


_POOLS: dict[str, Pool] = {}


def pool(backend: str) -> Pool:
    """The pool of ``backend`` (created on first use). Call with ``state.mutex`` held."""
    p = _POOLS.get(backend)
    if p is None:
        p = _POOLS[backend] = Pool(backend)
    return p


def _release_all_empty() -> int:
    return sum(p.release_empty() for p in _POOLS.values())


def drain_pending() -> None:
    """Free the slots finalizers wiped (call with ``state.mutex`` held)."""
    pending = state.pending
    while pending:
        home, off = pending.pop()  # atomic: a finalizer may append meanwhile
        if isinstance(home, Chunk):
            home.pool.free(home, off)
        else:
            state.own.discard(home)
            unmap_pages(home)


def trim() -> int:
    """Return every empty pool chunk now; how many were returned."""
    with state.mutex:
        if state.pending:
            drain_pending()
        return _release_all_empty()


def pool_stats() -> dict[str, list[tuple[int, int, int, int]]]:
    """Per backend: (class size, chunks, chunk bytes, live slots) per class."""
    with state.mutex:
        return {name: p.stats() for name, p in _POOLS.items()}


def _after_fork_in_child() -> None:
    """Abandon the parent's pools and buffers: never touch or unmap their memory here."""
    global state
    old = state
    if _MADV_WIPEONFORK is None:
        # No kernel wipe on fork (not Linux): zero our copies of the parent's anonymous
        # mappings (copy-on-write: the parent keeps its secrets). Untested off Linux.
        maps = [c.map for p in _POOLS.values() for cs in p.chunks for c in cs]
        for m in maps + list(old.own):
            if m.backend == ANONYMOUS and LIBC.mprotect(m.base, m.size, PROT_RW) == 0:
                LIBC.wipe(m.base, m.size)
    if sys.platform == "linux":
        # MADV_DONTFORK left holes where the parent's memfd_secret pages are. Fill them
        # with PROT_NONE (MAP_FIXED_NOREPLACE: only where nothing is mapped yet), so an
        # inherited view faults instead of one day reaching a mapping the child makes there.
        maps = [c.map for p in _POOLS.values() for cs in p.chunks for c in cs]
        for m in maps + list(old.own):
            if m.backend == MEMFD_SECRET:
                LIBC.mmap(m.base, m.size, PROT_NONE,
                          _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_FIXED_NOREPLACE)
    _ABANDONED.append((list(_POOLS.values()), old.own))
    _POOLS.clear()
    state = _State(old.gen + 1)
    state.memfd_ok, state.memfd_error = old.memfd_ok, old.memfd_error


#: Pools inherited from parents: kept referenced, never unmapped in this process.
_ABANDONED: list[tuple[list[Pool], set[Mapping]]] = []
os.register_at_fork(after_in_child=_after_fork_in_child)
