"""An exception at any line of memlock leaves no mutex held and no page counted or locked
without an owner: proven by injecting KeyboardInterrupt at every memlock event in turn
(tests/interrupts.py) and reading the kernel's accounting after each run."""

from __future__ import annotations

import gc
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import memlock
from memlock._lock import REGISTRY

from .interrupts import every_interrupt, responsive
from .kernel import PAGE, REPO, address_of, anon, page_states, run_child, vmlck


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
    """The invariants after an interrupted operation, through the kernel."""

    def __init__(self, buf: mmap.mmap, other: mmap.mmap, locked_pages: int = 0) -> None:
        self.buf = buf
        self.other = other
        self.addr = address_of(buf)
        self.pages = [self.addr + i * PAGE for i in range(len(buf) // PAGE)]
        self.base_vmlck = vmlck()
        self.base_live = len(REGISTRY._live)
        self.locked_pages = locked_pages  # the first pages an outer lock still holds

    def __call__(self, n: int, where: str) -> None:
        ctx = f"after an interrupt at memlock event {n}: {where}"
        assert REGISTRY.holds_pending() == 0, ctx
        assert len(REGISTRY._live) == self.base_live, ctx
        extra = self.locked_pages * PAGE
        assert vmlck() == self.base_vmlck, ctx
        want = ["full"] * self.locked_pages + ["none"] * (len(self.pages) - self.locked_pages)
        assert page_states(self.pages) == want, ctx
        counts = REGISTRY.counts(self.addr + extra, self.addr + len(self.buf))
        assert [c[2:] for c in counts] == [(0, 0)], ctx
        # (a): another thread can still lock and unlock
        responsive(lambda: memlock.lock(self.other).unlock())
        # a fresh lock+unlock of the same pages leaves nothing new locked
        memlock.lock(self.buf, extra).unlock()
        assert page_states(self.pages) == want, ctx
        assert vmlck() == self.base_vmlck, ctx


@pytest.fixture
def buffers() -> Iterator[tuple[mmap.mmap, mmap.mmap]]:
    buf, other = anon(8), anon(2)
    yield buf, other
    buf.close()
    other.close()


@pytest.mark.parametrize("onfault", [False, True])
def test_lock_and_unlock_interrupted_anywhere(lock_path: str, onfault: bool,
                                              buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    buf, other = buffers
    got = Got()
    check = LockChecks(buf, other)

    def op() -> None:
        got.keep(memlock.lock(buf, PAGE, 4 * PAGE, onfault=onfault)).unlock()

    n = every_interrupt(op, got.undo, check)
    assert n > (3 if lock_path == "c" and not onfault else 20), n


@pytest.mark.parametrize("inner_onfault", [False, True])
def test_nested_lock_interrupted_anywhere_keeps_the_outer_lock(
        lock_path: str, inner_onfault: bool, buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    buf, other = buffers
    got = Got()
    with memlock.lock(buf, 0, 3 * PAGE) as outer:
        base = vmlck()
        check = LockChecks(buf, other, locked_pages=3)
        check.base_vmlck = base

        def op() -> None:
            # overlaps the outer lock (pages 1-2) and goes past it (pages 3-4)
            got.keep(memlock.lock(buf, PAGE, 4 * PAGE, onfault=inner_onfault)).unlock()

        n = every_interrupt(op, got.undo, check)
        assert n > 20
        assert outer.locked


def test_onfault_lock_under_a_full_one_interrupted_anywhere(
        lock_path: str, buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    buf, other = buffers
    got = Got()
    check = LockChecks(buf, other)

    def op() -> None:
        a = got.keep(memlock.lock(buf, 0, 4 * PAGE, onfault=True))
        b = got.keep(memlock.lock(buf, 2 * PAGE, 4 * PAGE))  # full over on-fault
        a.unlock()
        b.unlock()

    assert every_interrupt(op, got.undo, check) > 40


def test_a_dropped_lock_interrupted_in_its_finalizer_is_released(
        lock_path: str, buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    buf, other = buffers
    got = Got()
    check = LockChecks(buf, other)

    def op() -> None:
        held = memlock.lock(buf, 0, 2 * PAGE)
        got.keep(held)
        got.things.clear()
        del held  # the finalizer releases it; an interrupt there must not leak it

    assert every_interrupt(op, got.undo, check) > 2


def test_queued_releases_interrupted_while_draining(
        lock_path: str, buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    """A Lock dropped while the registry is busy is queued; the next call drains it."""
    buf, other = buffers
    got = Got()
    check = LockChecks(buf, other)
    extra = anon(4)
    extra_pages = [address_of(extra) + i * PAGE for i in range(4)]

    def op() -> None:
        with memlock.lock(buf, 0, PAGE):
            pass

    def setup_and_op() -> None:
        # untraced part: a Lock dies while this thread holds the registry's mutex, so its
        # finalizer cannot release it: its hold is queued
        import sys

        tracer = sys.gettrace()
        sys.settrace(None)
        dropped = memlock.lock(extra)
        with REGISTRY._mutex:
            del dropped
            gc.collect()
        assert REGISTRY.holds_pending() == 1
        sys.settrace(tracer)
        op()

    n = every_interrupt(setup_and_op, got.undo, check)
    assert n > 3
    assert page_states(extra_pages) == ["none"] * 4
    extra.close()


def test_parallel_populate_path_interrupted_anywhere(
        monkeypatch: pytest.MonkeyPatch, buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    """Ranges of PARALLEL_MIN_BYTES and up are populated from threads before one mlock:
    the same code, with the threshold lowered to a few pages so every event can be hit."""
    from memlock import _registry

    monkeypatch.setattr(_registry, "PARALLEL_MIN_BYTES", 4 * PAGE)
    monkeypatch.setattr(_registry, "PARALLEL_CHUNK_BYTES", PAGE)
    monkeypatch.setattr(REGISTRY, "parallel_workers", 2)
    buf, other = buffers
    got = Got()
    _lock_through_python = memlock.lock(buf, 0, PAGE, onfault=True)  # not the C fast path
    check = LockChecks(buf, other)
    calls = []
    real = REGISTRY._parallel_populate
    monkeypatch.setattr(REGISTRY, "_parallel_populate",
                        lambda s, e: (calls.append(s), real(s, e))[1])

    def op() -> None:
        got.keep(memlock.lock(buf, PAGE, 6 * PAGE, onfault=False)).unlock()

    try:
        assert every_interrupt(op, got.undo, _also_keeping(check, 1)) > 30
    finally:
        _lock_through_python.unlock()
    assert calls, "the parallel populate path was not taken"


def _also_keeping(check: LockChecks, onfault_pages: int) -> Any:
    """``check``, with the first pages held on-fault by the caller all along."""
    def run(n: int, where: str) -> None:
        ctx = f"after an interrupt at memlock event {n}: {where}"
        assert REGISTRY.holds_pending() == 0, ctx
        assert vmlck() == check.base_vmlck, ctx
        states = page_states(check.pages)
        assert states == ["onfault"] * onfault_pages + ["none"] * (
            len(check.pages) - onfault_pages), ctx
        responsive(lambda: memlock.lock(check.other).unlock())
    return run


def test_64_mib_lock_interrupted_at_sampled_events(lock_path: str) -> None:
    """The real size, every 53rd event (each run locks 64 MiB)."""
    from memlock._registry import PARALLEL_MIN_BYTES

    size = PARALLEL_MIN_BYTES
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.write(b"\1" * size)  # resident: each run populates quickly
    other = anon(1)
    got = Got()
    check = LockChecks(buf, other)
    check.pages = check.pages[:: size // PAGE // 16]

    def op() -> None:
        got.keep(memlock.lock(buf)).unlock()

    try:
        assert every_interrupt(op, got.undo, check, step=53, limit=200) > 20
    finally:
        buf.close()
        other.close()


def test_lock_file_interrupted_anywhere(lock_path: str, tmp_path: Any,
                                        buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * PAGE + 100))
    buf, other = buffers
    got = Got()
    check = LockChecks(buf, other)
    maps_before = _file_mappings(path)

    def op() -> None:
        got.keep(memlock.lock_file(path)).unlock()

    def check_file(n: int, where: str) -> None:
        check(n, where)
        assert _file_mappings(path) == maps_before, f"event {n}: {where}: mapping left"

    assert every_interrupt(op, got.undo, check_file) > 20


def _file_mappings(path: Any) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith(str(path)))


def test_lock_all_interrupted_anywhere_is_undone_by_unlock_all(lock_path: str) -> None:
    """In a child (mlockall): after any interrupt, unlock_all() restores the state."""
    proc = run_child("""
        import gc, mmap, sys
        sys.path.insert(0, sys.argv[1])
        import memlock
        from memlock._lock import REGISTRY
        from tests.interrupts import every_interrupt, responsive
        from tests.kernel import PAGE, address_of, anon, page_states, vmlck

        held = anon(2)
        keep = memlock.lock(held)          # a live Lock: its pages must stay locked
        pages = [address_of(held), address_of(held) + PAGE]
        other = anon(1)
        base = vmlck()

        def op():
            memlock.lock_all(current=True, future=True)
            memlock.unlock_all()

        def undo(n):
            memlock.unlock_all()

        def check(n, where):
            ctx = f"event {n}: {where}"
            assert REGISTRY.holds_pending() == 0, ctx
            assert not REGISTRY._lock_all_flags and not REGISTRY._unlock_all_due, ctx
            assert vmlck() == base, (ctx, vmlck(), base)
            assert page_states(pages) == ["full", "full"], ctx
            responsive(lambda: memlock.lock(other).unlock())

        n = every_interrupt(op, undo, check)
        keep.unlock()
        assert vmlck() == 0, vmlck()
        print("events", n)
    """, args=[str(REPO)], cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 10, proc.stdout


def test_the_injector_finds_a_planted_bug(tmp_path: Any) -> None:
    """The harness is not blind: a copy of memlock whose commit takes two statements (the
    bug class this file is about: an interrupt can land between them) is caught."""
    import shutil

    copy = tmp_path / "memlock"
    shutil.copytree(REPO / "src" / "memlock", copy)
    source = (copy / "_registry.py").read_text()
    one = "        keys[i:j], vals[i:j], hold.state = new_keys, new_vals, HELD\n"
    assert one in source
    (copy / "_registry.py").write_text(source.replace(one, (
        "        keys[i:j] = new_keys\n        vals[i:j] = new_vals\n"
        "        hold.state = HELD\n")))
    proc = run_child("""
        import sys
        sys.path[:0] = [sys.argv[2], sys.argv[1]]
        import memlock
        assert memlock.__file__.startswith(sys.argv[2]), memlock.__file__
        from tests.interrupts import every_interrupt
        from tests.test_interrupts import LockChecks
        from tests.kernel import anon

        buf, other = anon(4), anon(1)
        check = LockChecks(buf, other)
        try:
            every_interrupt(lambda: memlock.lock(buf, 0, 8192, onfault=True).unlock(),
                            lambda n: None, check)
        except Exception as exc:  # a failed check, or a check the broken state broke
            print("caught:", type(exc).__name__, str(exc).splitlines()[0])
        else:
            print("missed")
    """, args=[str(REPO), str(tmp_path)], cwd=REPO)
    assert proc.stdout.startswith("caught:"), (
        proc.stdout + proc.stderr[-2000:])
