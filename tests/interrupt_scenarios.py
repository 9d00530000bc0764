"""Scenarios for tests/test_interrupts.py, each run in a fresh child process.

A child starts with a small heap and few mappings, so each of the hundreds of runs of a
scenario (one per memlock event) is cheap, and nothing it does (mlockall, a broken copy
of memlock) can touch the test process. Run one with
``python -c "from tests.interrupt_scenarios import NAME; NAME()"`` from the repository;
MEMLOCK_PURE_PYTHON picks the path. Each prints ``events N`` at the end.
"""

from __future__ import annotations

import mmap
import os
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any

import memlock
from memlock._lock import REGISTRY

from .interrupts import every_interrupt, responsive
from .kernel import PAGE, address_of, anon, page_states, vmlck


@dataclass
class Got:
    """What the operation under test got, for the undo step."""

    things: list[Any] = field(default_factory=list)

    def keep(self, thing: Any) -> Any:
        self.things.append(thing)
        return thing

    def undo(self, n: int) -> None:
        """Unlock what was got (even runs) or just drop it (odd runs)."""
        things, self.things = self.things, []
        if n % 2 == 0:
            for t in things:
                t.unlock()
        del things


class LockChecks:
    """The invariants after an interrupted operation, through the kernel.

    Args:
        buf: The pages the operation locks; the first ``held`` of them stay locked by an
            outer lock (``held_state``: "full" or "onfault") all along.
        other: Pages another thread locks and unlocks (no mutex may be left held).
    """

    def __init__(self, buf: mmap.mmap, other: mmap.mmap, held: int = 0,
                 held_state: str = "full", sample: int = 1) -> None:
        self.buf = buf
        self.other = other
        self.addr = address_of(buf)
        self.pages = [self.addr + i * PAGE for i in range(0, len(buf) // PAGE, sample)]
        self.base_vmlck = vmlck()
        self.base_live = len(REGISTRY._live)
        self.held = held
        self.want = [held_state if (p - self.addr) // PAGE < held else "none"
                     for p in self.pages]

    def __call__(self, n: int, where: str) -> None:
        ctx = f"after an interrupt at memlock event {n}: {where}"
        assert REGISTRY.holds_pending() == 0, ctx
        assert len(REGISTRY._live) == self.base_live, ctx
        assert vmlck() == self.base_vmlck, (ctx, vmlck(), self.base_vmlck)
        assert page_states(self.pages) == self.want, ctx
        extra = self.held * PAGE
        counts = REGISTRY.counts(self.addr + extra, self.addr + len(self.buf))
        assert [c[2:] for c in counts] == [(0, 0)], ctx
        # (a): another thread can still lock and unlock
        responsive(lambda: memlock.lock(self.other).unlock())
        # a fresh lock+unlock of the same pages leaves nothing new locked
        memlock.lock(self.buf, extra).unlock()
        assert page_states(self.pages) == self.want, ctx
        assert vmlck() == self.base_vmlck, ctx


def _done(n: int) -> None:
    print("events", n)


def lock_unlock(onfault: bool) -> None:
    buf, other = anon(8), anon(2)
    got = Got()

    def op() -> None:
        got.keep(memlock.lock(buf, PAGE, 4 * PAGE, onfault=onfault)).unlock()

    _done(every_interrupt(op, got.undo, LockChecks(buf, other)))


def nested(inner_onfault: bool) -> None:
    buf, other = anon(8), anon(2)
    got = Got()
    outer = memlock.lock(buf, 0, 3 * PAGE)
    check = LockChecks(buf, other, held=3)

    def op() -> None:  # overlaps the outer lock (pages 1-2) and goes past it (pages 3-4)
        got.keep(memlock.lock(buf, PAGE, 4 * PAGE, onfault=inner_onfault)).unlock()

    n = every_interrupt(op, got.undo, check)
    assert outer.locked
    outer.unlock()
    assert vmlck() == 0
    _done(n)


def full_over_onfault() -> None:
    buf, other = anon(8), anon(2)
    got = Got()

    def op() -> None:
        a = got.keep(memlock.lock(buf, 0, 4 * PAGE, onfault=True))
        b = got.keep(memlock.lock(buf, 2 * PAGE, 4 * PAGE))  # full over on-fault
        a.unlock()
        b.unlock()

    _done(every_interrupt(op, got.undo, LockChecks(buf, other)))


def dropped() -> None:
    """A Lock released by its finalizer, interrupted there."""
    buf, other = anon(8), anon(2)
    got = Got()

    def op() -> None:
        held = memlock.lock(buf, 0, 2 * PAGE)
        del held

    _done(every_interrupt(op, got.undo, LockChecks(buf, other)))


def draining() -> None:
    """A Lock dropped while the registry is busy is queued; the next call drains it."""
    buf, other = anon(8), anon(2)
    extra = anon(4)
    extra_pages = [address_of(extra) + i * PAGE for i in range(4)]
    got = Got()

    def op() -> None:
        tracer = sys.gettrace()
        sys.settrace(None)  # untraced: the Lock dies while this thread holds the mutex
        queued = memlock.lock(extra)
        with REGISTRY._mutex:
            del queued
        assert REGISTRY.holds_pending() == 1
        sys.settrace(tracer)
        with memlock.lock(buf, 0, PAGE):  # drains the queue first
            pass

    n = every_interrupt(op, got.undo, LockChecks(buf, other))
    assert page_states(extra_pages) == ["none"] * 4
    _done(n)


def populate_path() -> None:
    """Ranges of PARALLEL_MIN_BYTES and up are populated from threads before one mlock:
    the same code with the threshold lowered to a few pages, so every event is hit."""
    from memlock import _registry

    _registry.PARALLEL_MIN_BYTES = 4 * PAGE
    _registry.PARALLEL_CHUNK_BYTES = PAGE
    REGISTRY.parallel_workers = 2
    calls = []
    real = REGISTRY._parallel_populate

    def spy(start: int, end: int) -> None:
        calls.append(start)
        real(start, end)

    REGISTRY._parallel_populate = spy  # type: ignore[method-assign]
    buf, other = anon(8), anon(2)
    got = Got()
    pin = memlock.lock(buf, 0, PAGE, onfault=True)  # the C fast path takes no overlap
    check = LockChecks(buf, other, held=1, held_state="onfault")

    def op() -> None:
        got.keep(memlock.lock(buf, PAGE, 6 * PAGE)).unlock()

    n = every_interrupt(op, got.undo, check)
    assert calls, "the parallel populate path was not taken"
    pin.unlock()
    _done(n)


def big() -> None:
    """The real size (64 MiB), at every 53rd event."""
    from memlock._registry import PARALLEL_MIN_BYTES

    size = PARALLEL_MIN_BYTES
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.write(b"\1" * size)  # resident: each run populates quickly
    other = anon(1)
    got = Got()

    def op() -> None:
        got.keep(memlock.lock(buf)).unlock()

    check = LockChecks(buf, other, sample=size // PAGE // 16)
    _done(every_interrupt(op, got.undo, check, step=53, limit=400))


def lock_file() -> None:
    buf, other = anon(8), anon(2)
    got = Got()
    with tempfile.NamedTemporaryFile() as f:
        f.write(os.urandom(3 * PAGE + 100))
        f.flush()
        path = f.name
        check = LockChecks(buf, other)
        fds = len(os.listdir("/proc/self/fd"))

        def mappings() -> int:
            with open("/proc/self/maps") as maps:
                return sum(1 for line in maps if line.rstrip().endswith(path))

        def op() -> None:
            got.keep(memlock.lock_file(path)).unlock()

        def check_file(n: int, where: str) -> None:
            check(n, where)
            assert mappings() == 0, f"event {n}: {where}: a mapping of the file is left"
            assert len(os.listdir("/proc/self/fd")) == fds, f"event {n}: {where}: fd left"

        _done(every_interrupt(op, got.undo, check_file))


def lock_all() -> None:
    """After any interrupt in lock_all()/unlock_all(), unlock_all() restores the state."""
    held = anon(2)
    keep = memlock.lock(held)  # a live Lock: its pages must stay locked
    pages = [address_of(held), address_of(held) + PAGE]
    other = anon(1)
    base = vmlck()

    def op() -> None:
        memlock.lock_all(current=True, future=True)
        memlock.unlock_all()

    def undo(n: int) -> None:
        memlock.unlock_all()

    def check(n: int, where: str) -> None:
        ctx = f"event {n}: {where}"
        assert REGISTRY.holds_pending() == 0, ctx
        assert not REGISTRY._lock_all_flags and not REGISTRY._unlock_all_due, ctx
        assert vmlck() == base, (ctx, vmlck(), base)
        assert page_states(pages) == ["full", "full"], ctx
        responsive(lambda: memlock.lock(other).unlock())

    n = every_interrupt(op, undo, check)
    keep.unlock()
    assert vmlck() == 0, vmlck()
    _done(n)


def planted_bug() -> None:
    """Run against a broken copy of memlock (see the test): must be caught."""
    assert "memlock-mutant" in memlock.__file__, memlock.__file__
    buf, other = anon(4), anon(1)
    try:
        every_interrupt(lambda: memlock.lock(buf, 0, 2 * PAGE, onfault=True).unlock(),
                        lambda n: None, LockChecks(buf, other))
    except Exception as exc:  # a failed check, or a check the broken state broke
        print("caught:", type(exc).__name__, str(exc).splitlines()[0])
    else:
        print("missed")


# -- secrets -----------------------------------------------------------------------------


class SecretChecks:
    """After an interrupted SecureBuffer operation: (a) no mutex held, (c) the secret wiped
    wherever it was written, (d) no pool slot lost or shared, and nothing locked or mapped
    that no buffer owns (VmLck and the mapping count as before)."""

    def __init__(self, backend: str, written: list[int], size: int) -> None:
        from memlock._secrets import _pool as _securemem

        self.mem = _securemem
        self.backend = backend
        self.written = written  # addresses the operation wrote its secret to
        self.size = size
        responsive(lambda: memlock.SecureBuffer(32, backend=backend).close())  # warm up
        _securemem.trim()
        self.base_vmlck = vmlck()
        self.base_live = len(_securemem.state.live)
        # Every mapping a SecureBuffer makes, weakly: none may stay mapped unowned.
        self.regions: list[Any] = []
        made = _securemem.Mapping.__init__

        def record(m: Any, region: Any, *args: Any) -> None:
            self.regions.append(weakref.ref(region))
            made(m, region, *args)

        _securemem.Mapping.__init__ = record  # type: ignore[method-assign]

    def __call__(self, n: int, where: str) -> None:
        mem = self.mem
        ctx = f"after an interrupt at memlock event {n}: {where}"
        st = mem.state
        assert not st.pending, ctx
        assert len(st.live) == self.base_live, ctx
        for a in self.written:  # (c): read through the kernel where it lets us
            if _ours(mem, a, self.size):  # else unmapped after its wipe, or reused since
                assert _read(a, self.size, self.backend) == bytes(self.size), (ctx, hex(a))
        self.written.clear()
        _check_pools(mem, ctx)
        responsive(lambda: memlock.SecureBuffer(32, backend=self.backend).close())
        mem.trim()
        assert vmlck() == self.base_vmlck, (ctx, vmlck(), self.base_vmlck)
        owned = {id(c.map.region) for p in mem._POOLS.values() for cs in p.chunks for c in cs}
        owned |= {id(lease.home.region) for lease in mem.state.live
                  if isinstance(lease.home, mem.Mapping)}
        for ref in self.regions:
            region = ref()
            assert region is None or region.closed or id(region) in owned, (
                ctx, "a mapping left with no owner")
        self.regions[:] = [r for r in self.regions if r() is not None and not r().closed]


def _ours(mem: Any, address: int, size: int) -> bool:
    """Whether [address, address+size) lies in a pool chunk or an open lease's mapping."""
    spans = [(c.base, c.base + c.map.total) for p in mem._POOLS.values() for cs in p.chunks
             for c in cs]
    spans += [(lease.home.base, lease.home.base + lease.home.size) for lease in mem.state.live
              if isinstance(lease.home, mem.Mapping)]
    return any(lo <= address and address + size <= hi for lo, hi in spans)


def _read(address: int, size: int, backend: str) -> bytes:
    """The bytes at ``address``: through /proc/self/mem, except for memfd_secret memory
    (which the kernel refuses to it: read directly then)."""
    if backend == "memfd_secret":
        import ctypes

        return ctypes.string_at(address, size)
    with open("/proc/self/mem", "rb", buffering=0) as f:
        f.seek(address)
        return f.read(size)


def _check_pools(mem: Any, ctx: str) -> None:
    """(d): every carved slot is either free (wiped, canaries intact) or held by exactly
    one open lease; free lists hold no duplicates."""
    held: dict[tuple[int, int], int] = {}
    for lease in mem.state.live:
        if isinstance(lease.home, mem.Chunk):
            key = (id(lease.home), lease.off)
            held[key] = held.get(key, 0) + 1
    assert all(v == 1 for v in held.values()), (ctx, "a slot held twice")
    for pool in mem._POOLS.values():
        for chunks in pool.chunks:
            for c in chunks:
                assert len(set(c.free)) == len(c.free), (ctx, "a slot freed twice")
                carved = range(c.first, c.bump, c.stride)
                for off in c.free:
                    assert off in carved, ctx
                    assert (id(c), off) not in held, (ctx, "a slot both free and held")
                    assert c.mem[off:off + c.size] == c.zeros, (ctx, "a free slot not wiped")
                    assert c.mem[off - 8:off] == mem.CANARY, ctx
                lost = [off for off in carved if off not in c.free and (id(c), off) not in held
                        and c.mem[off - 8:off] == mem.CANARY]  # retired slots have none
                assert not lost, (ctx, "slots neither free nor held", lost)


def secrets(backend: str, isolated: bool) -> None:
    import ctypes

    size = 40 if isolated else 32
    memlock.SecureBuffer(size, isolated=isolated, backend=backend).close()  # warm the pool
    keep = memlock.SecureBuffer(size, isolated=isolated, backend=backend)
    written: list[int] = []
    got = Got()
    check = SecretChecks(backend, written, size)

    def op() -> None:
        sb = got.keep(memlock.SecureBuffer(size, isolated=isolated, backend=backend))
        with sb.view() as v:
            written.append(ctypes.addressof(ctypes.c_char.from_buffer(v)))
            v[:] = os.urandom(size)
        if isolated:
            sb.noaccess()
            with sb.access() as r:
                assert len(r) == size
            sb.readwrite()
        sb.close()

    def undo(n: int) -> None:
        things, got.things = got.things, []
        if n % 2 == 0:
            for t in things:
                t.close()  # an interrupted close() can be called again
        del things

    n = every_interrupt(op, undo, check)
    keep.close()
    _done(n)
