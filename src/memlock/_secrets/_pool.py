"""The small-secret pool, its slots and canaries, and the leases of every SecureBuffer.

Small secrets share *chunks* (mappings) of a size-class pool. Each slot is a canary, the
class size, and another canary, written when the slot is first used: at close the canary
before the secret must be intact (an underrun shows) and the bytes after it must still be
zeros and the canary (an overrun of even one byte shows); the secret's part is wiped, and
a slot that fails the check is wiped whole and retired. Chunks grow by doubling up to
:data:`MAX_CHUNK`, never past what RLIMIT_MEMLOCK still allows, and go back (wiped,
unlocked, unmapped) when empty; one empty chunk per class is kept to avoid map/unmap
churn, and every empty chunk is returned before a lock failure is reported.

**Leases and interrupts.** What a SecureBuffer holds, a slot or a mapping of its own, is
recorded in its :class:`Lease`: ``home`` is the Chunk or Mapping, None once closed. The
pool and the leases change only under ``state.mutex``, taken through
:func:`memlock._critical.under`, and each change is one statement made after the work it
stands for (see memlock._registry: Interrupts): a slot is wiped before the statement that
closes its lease and frees it, so an interrupted close leaves the buffer open and
``close()`` retryable, never closed and unwiped; a slot leaves the free list in the
statement that gives it to a lease, so none is handed out twice or lost. A lease whose
buffer dies open is queued by the weakref machinery (C code, which no interrupt skips)
and wiped and given back at the next operation of this module or garbage collection.

In a forked child (by Python or by C: see ``memlock._platform.ForkWatch``) the generation
bumps: buffers and chunks inherited from the parent are abandoned (never touched, never
unmapped: an inherited view may still point there).

The mappings themselves (guard pages, locking, undumpable, fork-proof) are made in
:mod:`memlock._secrets._mappings`; every system call goes through ``memlock._platform``.
"""

from __future__ import annotations

import gc
import os
import threading
import warnings
import weakref
from collections.abc import Callable

from .._critical import new_mutex, try_under, under
from .._lock import REGISTRY
from .._pages import PAGE_SIZE
from .._platform import BACKEND, FORK_WATCH, SECRETS_SLOT
from .._status import limits
from ..errors import MemlockError
from ._mappings import MEMFD_SECRET, Mapping, map_pages, probe_memfd_secret, resolve_backend

__all__ = [
    "CANARY",
    "CANARY_SIZE",
    "CLASS_SIZES",
    "CLOSED",
    "MAX_CLASS",
    "PROT_NONE",
    "PROT_READ",
    "PROT_RW",
    "Chunk",
    "Lease",
    "Mapping",
    "Pool",
    "caught_up",
    "forked",
    "give_back",
    "grow",
    "map_pages",
    "pool_stats",
    "probe_memfd_secret",
    "release_unmapped",
    "resolve_backend",
    "settle",
    "state",
    "take_slot",
    "trim",
    "wipe_secret",
]

PROT_NONE, PROT_READ, PROT_RW = BACKEND.PROT_NONE, BACKEND.PROT_READ, BACKEND.PROT_RW
#: Pre-bound: mprotect(2) (0 or errno) and the wipe (a memset no compiler can elide).
MPROTECT, WIPE = BACKEND.secret_calls()[:2]

#: Bytes of each canary: one before and one after every pooled secret, one before an
#: isolated secret (the guard page follows it).
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
_FORK_PAGE = FORK_WATCH.page


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


class Lease(weakref.ref):  # type: ignore[type-arg]
    """What one SecureBuffer holds: a pool slot or a mapping of its own.

    ``home`` is its Chunk or Mapping (None once closed), ``off`` where its ``size`` bytes
    start there.

    A weak reference to the buffer whose callback queues the lease: if the buffer dies
    open (its finalizer interrupted, say), the weakref machinery, in C, queues it for
    :func:`give_back`. ``state.live`` keeps every open lease reachable, so the callback
    runs even when the buffer dies in a reference cycle.
    """

    __slots__ = ("home", "off", "size")

    home: Chunk | Mapping | None
    off: int
    size: int

    # By identity, alive or dead (a weakref hashes its referent, and a dead one that was
    # never hashed cannot be): leases are keys of ``state.live`` from birth to death.
    __hash__ = object.__hash__
    __eq__ = object.__eq__


class _Anchor:
    """Referent of :data:`CLOSED`: lives as long as the module."""

    __slots__ = ("__weakref__",)


_ANCHOR = _Anchor()
#: The lease of every closed buffer: its own lease is dropped at close, so the buffer's
#: death queues nothing.
CLOSED = Lease(_ANCHOR)
CLOSED.home = None
CLOSED.off = CLOSED.size = 0


class _State:
    """Process-wide mutable state, replaced wholesale in a forked child."""

    __slots__ = ("gen", "live", "mutex", "pending", "queue", "reopened", "unmap")

    def __init__(self, gen: int) -> None:
        self.gen = gen
        #: Guards the pools and the leases. Taken only through _critical.under/try_under,
        #: and before the registry's mutex, never after (give_back unlocks, pool growth
        #: locks): a thread that holds the registry's mutex gets Reentered instead of a wait
        #: (a signal handler calling close() inside lock()). C module only.
        self.mutex = new_mutex()
        set_outer = getattr(self.mutex, "set_outer", None)
        if set_outer is not None and type(REGISTRY._mutex) is type(self.mutex):
            set_outer(REGISTRY._mutex)
        #: Leases of buffers that died open; appended to by C only (weakref callbacks).
        self.pending: list[Lease] = []
        self.queue = self.pending.append
        #: Open leases (a dict used as a set).
        self.live: dict[Lease, None] = {}
        #: Mappings given back under the mutex, unlocked and unmapped after it (the
        #: registry's mutex is never taken under this one): release_unmapped().
        self.unmap: list[Mapping] = []
        #: Isolated buffers an ``access()`` block opened, with the protection to put back:
        #: listed before the block opens them, unlisted once it has put it back; what an
        #: interrupt left listed is put back by the module's next call (_secure_buffer._heal).
        self.reopened: dict[Lease, tuple[int, weakref.ref[object]]] = {}


#: Replaced in a forked child: always read it as ``_pool.state``.
state = _State(0)
_fork_lock = threading.Lock()


def forked() -> bool:
    """Whether this process is a fork child that has not caught up with its state yet."""
    page = _FORK_PAGE
    if page is not None:
        return not page[SECRETS_SLOT]
    return FORK_WATCH.forked(SECRETS_SLOT)


def caught_up() -> _State:
    """The state of this process (catching up after a fork first: cheap otherwise)."""
    page = _FORK_PAGE
    if page is not None and page[SECRETS_SLOT]:
        return state
    if FORK_WATCH.forked(SECRETS_SLOT):
        under(_fork_lock, _after_fork_in_child)
    return state


class Chunk:
    """A pool mapping cut into ``stride``-byte slots of one size class.

    Slot offsets (``off``) count from the start of the mapping (``base``; the data pages
    begin a page in) and point at the secret: its canaries are at ``off - CANARY_SIZE``
    and ``off + size``. ``free`` lists freed slots (wiped); ``bump`` is the offset of the
    first slot never used. The pool reads and writes slots through ``mem``, the mapping's
    mmap object (bytes comparisons are memcmp there).
    """

    __slots__ = ("base", "bump", "cls", "first", "free", "limit", "map", "mem", "pool",
                 "siblings", "size", "stride", "zeros")

    def __init__(self, m: Mapping, cls: int, pool: Pool) -> None:
        self.map = m
        self.mem = m.region
        #: The chunks of its class (the pool's list: read only here).
        self.siblings = pool.chunks[cls]
        self.base = m.addr
        self.cls = cls
        self.pool = pool
        self.size = CLASS_SIZES[cls]
        self.stride = self.size + 2 * CANARY_SIZE
        self.zeros = bytes(self.size)
        self.first = PAGE_SIZE + CANARY_SIZE
        self.limit = PAGE_SIZE + m.size - self.size - CANARY_SIZE  # the last slot offset
        self.free: list[int] = []
        self.bump = self.first

    def live(self) -> int:
        """Slots in use."""
        return (self.bump - self.first) // self.stride - len(self.free)


class Pool:
    """Size-class pool of one backend. Call with ``state.mutex`` held."""

    __slots__ = ("avail", "backend", "chunks")

    def __init__(self, backend: str) -> None:
        self.backend = backend
        n = len(CLASS_SIZES)
        #: Per class, chunks that may have room: a hint, repaired by :meth:`_roomy`.
        self.avail: list[list[Chunk]] = [[] for _ in range(n)]
        self.chunks: list[list[Chunk]] = [[] for _ in range(n)]

    def find(self, ci: int) -> Chunk | None:
        """A chunk of class ``ci`` with room (a freed slot, or one never used).

        None when every chunk is full (grow it: :func:`grow`, outside the mutex). Changes
        only the hints: :func:`take_slot` takes the slot.
        """
        avail = self.avail[ci]
        while True:
            while avail:
                c = avail[-1]
                if c.free or c.bump <= c.limit:
                    return c
                avail.pop()  # full: the hint goes
            roomy = self._roomy(ci)
            if roomy is None:
                return None
            avail.append(roomy)

    def _roomy(self, ci: int) -> Chunk | None:
        for c in self.chunks[ci]:
            if c.free or c.bump <= c.limit:
                return c
        return None

    def after_free(self, c: Chunk) -> None:
        """Hints and spares after a slot of ``c`` went back (idempotent)."""
        avail = self.avail[c.cls]
        if c not in avail:
            avail.append(c)
        if not c.live():
            chunks = self.chunks[c.cls]
            if len(chunks) > 1 and any(x is not c and not x.live() for x in chunks):
                self._detach(c)  # one empty chunk per class is enough

    def _detach(self, c: Chunk) -> None:
        """Take an empty chunk out of the pool; its mapping goes back after the mutex."""
        ci = c.cls
        avail, chunks = self.avail[ci], self.chunks[ci]
        if c in avail:
            avail.remove(c)
        if c in chunks:
            m = c.map
            WIPE(m.base, m.size)
            k = len(state.unmap)
            chunks.remove(c)
            state.unmap[k:] = (m,)  # released by release_unmapped(), outside the mutex

    def detach_empty(self) -> int:
        """Take every empty chunk out (their mappings go back after the mutex); how many."""
        done = 0
        for ci in range(len(CLASS_SIZES)):
            for c in [c for c in self.chunks[ci] if not c.live()]:
                self._detach(c)
                done += 1
        return done

    def chunk_size(self, ci: int) -> int:
        """Bytes of the next chunk of class ``ci``: doubling, within what the limit allows."""
        stride = CLASS_SIZES[ci] + 2 * CANARY_SIZE
        least = -(-(stride + CANARY_SIZE) // PAGE_SIZE) * PAGE_SIZE
        have = sum(c.map.size for c in self.chunks[ci])
        lim = limits()
        first = MIN_CHUNK
        if lim.soft is not None and not lim.privileged:
            # Small limits: first chunks of 1/16 of the limit, so all classes fit.
            first = max(PAGE_SIZE, min(MIN_CHUNK, lim.soft // 16 // PAGE_SIZE * PAGE_SIZE))
        size = max(least, min(MAX_CHUNK, max(first, have)))
        free = lim.available_bytes
        if free is not None and free < size:
            size = max(least, free - free % PAGE_SIZE)
        return size

    def add_chunk(self, m: Mapping, ci: int) -> None:
        """Take a new chunk's mapping into the pool (mutex held)."""
        c = Chunk(m, ci, self)
        chunks = self.chunks[ci]
        n = len(chunks)
        chunks[n:] = (c,)  # the pool owns it from here (one statement)
        self.avail[ci].append(c)

    def stats(self) -> list[tuple[int, int, int, int]]:
        """(class size, chunks, chunk bytes, live slots) per class, for tests."""
        return [
            (CLASS_SIZES[ci], len(cs), sum(c.map.size for c in cs), sum(c.live() for c in cs))
            for ci, cs in enumerate(self.chunks)
        ]


_POOLS: dict[str, Pool] = {}


def _pool(backend: str) -> Pool:
    p = _POOLS.get(backend)
    if p is None:
        p = _POOLS[backend] = Pool(backend)
    return p


def _detach_all_empty() -> int:
    return sum(p.detach_empty() for p in _POOLS.values())


# -- leases: taking and giving back (all with state.mutex held) -----------------------------


def take_slot(lease: Lease, backend: str) -> BaseException | int | None:
    """Give ``lease`` a zeroed pool slot for its size (mutex held): the pool's one fast path.

    Returns None when done, the size class to grow when every chunk is full (call
    :func:`grow` without the mutex, then this again), or what it raised instead of raising
    (see _critical: nothing but an interrupt leaves the caller's one-line ``with`` as an
    exception). A slot leaves the free list (or the never-used end) in the statement that
    gives it to the lease, so none is handed out twice or lost.
    """
    try:
        if state.pending or state.reopened:
            settle()
        pool = _POOLS.get(backend) or _pool(backend)
        ci = _CLASS_OF[lease.size]
        avail = pool.avail[ci]
        c = avail[-1] if avail else None
        if c is None or not c.free:  # not the common case (a slot freed before)
            c = pool.find(ci)
            if c is None:
                return ci
        free = c.free
        if free:
            k = len(free) - 1
            lease.home, lease.off, free[k:] = c, free[k], ()
            return None
        off = c.bump
        mem = c.mem
        mem[off - CANARY_SIZE:off] = CANARY  # carved: the canaries stay
        mem[off + c.size:off + c.size + CANARY_SIZE] = CANARY
        lease.home, lease.off, c.bump = c, off, off + c.stride
        return None
    except BaseException as exc:
        return exc


def grow(backend: str, ci: int) -> None:
    """Add a chunk of class ``ci`` to ``backend``'s pool; call WITHOUT the mutex.

    The mapping is made (and, for the anonymous backend, locked through the registry)
    outside the secrets' mutex, which is never held while the registry's is taken (the
    lock order: see _State.mutex). Over the limit, the empty chunks of every class go back
    and it tries once more.

    Raises:
        LockLimitError, LockPermissionError, MemlockError: As :func:`map_pages`.
    """
    st = state
    for attempt in (0, 1):
        size = under(st.mutex, lambda: (_POOLS.get(backend) or _pool(backend)).chunk_size(ci))
        try:
            m = map_pages(size, backend)
            break
        except MemlockError:
            if attempt or not under(st.mutex, _detach_all_empty):
                raise
            release_unmapped()
    under(st.mutex, (_POOLS.get(backend) or _pool(backend)).add_chunk, m, ci)


def release_unmapped(wait: bool = True) -> None:
    """Unlock and unmap the mappings given back under the mutex; call WITHOUT it.

    ``wait`` False (finalizers, gc callbacks): never wait for the registry (see
    Mapping.release). Each leaves the list before its release: an interrupt in between
    leaves it unreferenced, and dropping a Mapping unmaps it and releases its Lock.
    """
    unmap = state.unmap
    while unmap:
        m = unmap.pop()
        m.release(wait)


def adopt(lease: Lease, m: Mapping, off: int) -> None:
    """Give ``lease`` the mapping ``m`` (its secret at ``m.base + off``)."""
    if state.pending or state.reopened:
        settle()
    lease.home, lease.off = m, off


def give_back(lease: Lease, prot: int | None) -> str | None:
    """Wipe what ``lease`` holds, close it and return the memory (mutex held; idempotent).

    ``prot``: the protection of an isolated mapping (None: unknown, made writable anyway).
    A mapping goes back by :func:`release_unmapped`, after the mutex. Returns None, or
    the description of a damaged canary (the slot is then retired).
    """
    home = lease.home
    if home is None:
        state.live.pop(lease, None)
        return None
    off, n = lease.off, lease.size
    if type(home) is Chunk:
        c = home
        mem = c.mem
        front = mem[off - CANARY_SIZE:off] == CANARY
        back = mem[off + n:off + c.size + CANARY_SIZE] == (_TAILS.get(n) or tail(n))
        note = None if front and back else _damage(c, off, n, front, back)
        # Wipe: a memcpy by CPython into memory the compiler knows nothing about, so no
        # optimiser can drop it as a dead store. The canaries stay.
        mem[off:off + c.size] = c.zeros
        if note is None:
            free = c.free
            k = len(free)
            lease.home, free[k:] = None, (off,)  # closed and free: one statement
            state.live.pop(lease, None)
            if (k == 0 and c.bump > c.limit) or (
                    len(c.siblings) > 1 and (c.bump - c.first) // c.stride == k + 1):
                c.pool.after_free(c)  # it was full, or it is empty and has siblings
            return None
        WIPE(c.base + off - CANARY_SIZE, c.stride)  # retired: wiped whole
        lease.home = None  # closed; the slot never goes back
        state.live.pop(lease, None)
        return note
    m = home
    assert isinstance(m, Mapping)
    wipe_secret(lease, prot)  # the secret (the rest was never written); canary stays
    note = None
    if m.view[off - CANARY_SIZE:off] != CANARY:
        note = (f"SecureBuffer canary overwritten: a write ran before the start of the "
                f"{n}-byte secret (an underrun; memory corruption); the secret was wiped")
    k = len(state.unmap)
    lease.home, state.unmap[k:] = None, (m,)  # closed; unmapped after the mutex
    state.live.pop(lease, None)
    return note


def wipe_secret(lease: Lease, prot: int | None) -> None:
    """Zero the secret's own bytes where ``lease`` holds them (its canaries stay).

    Needs no mutex (the bytes are the secret's alone): finalizers and closes that
    interrupted this module wipe at once. An isolated mapping is made writable first
    (``prot``: its protection; None: unknown).
    """
    home = lease.home
    assert home is not None
    if type(home) is not Chunk and prot != PROT_RW:
        MPROTECT(home.base, home.size, PROT_RW)
    WIPE(home.base + lease.off, lease.size)


def _damage(c: Chunk, off: int, n: int, front: bool, back: bool) -> str:
    """How the canaries of the slot at ``off`` were damaged, and by whom, honestly."""
    mem, size, stride = c.mem, c.size, c.stride
    before = off - stride  # the slot before, if any, and its canary after its secret
    prev_hit = before >= c.first and mem[before + size:before + size + CANARY_SIZE] != CANARY
    after = off + stride
    next_hit = after < c.bump and mem[after - CANARY_SIZE:after] != CANARY
    what = []
    if not front:
        what.append("before its start (an underrun" + (
            ", or an overrun of the slot before it, whose canary is damaged too)"
            if prev_hit else ")"))
    if not back:
        what.append("past its end (an overrun" + (
            ", or an underrun of the slot after it, whose canary is damaged too)"
            if next_hit else ")"))
    return (f"SecureBuffer canary overwritten: a write ran {' and '.join(what)} of this "
            f"{n}-byte secret (memory corruption); the secret was wiped and its slot "
            "retired")


def _drain() -> None:
    pending = state.pending
    notes = []
    while pending:
        lease = pending[-1]
        note = give_back(lease, None)
        if note:
            notes.append(note)
        pending.remove(lease)
    for note in notes:  # a collected buffer was overrun: never blamed on the slot's next owner
        try:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        except Exception:  # -W error: the warning is an error nobody can catch here
            pass


#: Narrows the protection interrupted ``access()`` blocks left open (set by _secure_buffer).
heal: Callable[[_State], None] | None = None


def drain_soon() -> None:
    """Settle what interrupted calls left, if the mutex is free (the gc callback).

    Gives back the leases of buffers that died open, and narrows protections interrupted
    ``access()`` blocks left open. Never waits (it may run anywhere), and does nothing in
    a child forked from C that has not caught up yet: what is queued there is the parent's.
    """
    if (state.pending or state.reopened) and not forked():
        try_under(state.mutex, settle)
        release_unmapped(wait=False)


def settle() -> None:
    """What each entry does first (mutex held).

    Gives back the leases of buffers that died or were closed later, and narrows the
    protections interrupted ``access()`` blocks left open.
    """
    if state.pending:
        _drain()
    if state.reopened and heal is not None:
        heal(state)


def _after_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and (state.pending or state.reopened):
        drain_soon()


gc.callbacks.append(_after_collection)


def trim() -> int:
    """Return every empty pool chunk now; how many were returned."""
    done = under(caught_up().mutex, _trim)
    release_unmapped()
    return done


def _trim() -> int:
    settle()
    return _detach_all_empty()


def pool_stats() -> dict[str, list[tuple[int, int, int, int]]]:
    """Per backend: (class size, chunks, chunk bytes, live slots) per class."""
    return under(caught_up().mutex, lambda: {name: p.stats() for name, p in _POOLS.items()})


def _after_fork_in_child() -> None:
    """Abandon the parent's pools and buffers: never touch or unmap their memory here."""
    global state
    if not FORK_WATCH.forked(SECRETS_SLOT):
        return
    old = state
    maps = [c.map for p in _POOLS.values() for cs in p.chunks for c in cs]
    maps += [lease.home for lease in old.live if isinstance(lease.home, Mapping)]
    for m in maps:
        # Without a kernel wipe on fork (not Linux): zero our copies of the parent's
        # anonymous mappings (copy-on-write: the parent keeps its secrets). Linux: fill
        # the holes MADV_DONTFORK left where the parent's memfd_secret pages are with
        # PROT_NONE, so an inherited view faults instead of one day reaching a mapping
        # the child makes there.
        BACKEND.wipe_inherited(m.base, m.size, m.backend == MEMFD_SECRET)
    _ABANDONED.append((list(_POOLS.values()), maps, old))
    _POOLS.clear()
    state = _State(old.gen + 1)
    FORK_WATCH.caught_up(SECRETS_SLOT)  # last: an interrupt before it redoes all


#: Pools and mappings inherited from parents: kept referenced, never unmapped here.
_ABANDONED: list[tuple[list[Pool], list[Mapping], _State]] = []
# A fork made through Python fills the memfd_secret holes at once (before the child maps
# anything there); one made from C is caught up at the child's next secure operation.
os.register_at_fork(after_in_child=_after_fork_in_child)
