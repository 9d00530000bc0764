"""PageRegistry (memlock._registry): per-page counts make locks nest and all-or-nothing.

Driven directly (tests/holds.py) over the FreeBSD, macOS and illumos backends on their
simulated C libraries (tests/simlibc.py), whose own page accounting is the judge: a
failure midway leaves no page locked that was not before, XNU's nesting wirings take one
kernel call per transition, lock_all/unlock_all keep live locks. Through lock() on Linux,
judged by smaps, the registry is tested in test_lock.py and test_model.py.
"""

from __future__ import annotations

import errno

import pytest

from memlock._registry import PARALLEL_MIN_BYTES, PageRegistry
from memlock.errors import LockLimitError, MemlockError, UnsupportedOperation

from .holds import acquire, release
from .simlibc import darwin, exact, freebsd, sunos


def test_darwin_registry_lock_all_unsupported_and_state_kept() -> None:
    sim, b = darwin()
    reg = PageRegistry(b)
    addr = sim.mmap(2 * sim.page)
    gen = acquire(reg, addr, addr + sim.page)
    with pytest.raises(UnsupportedOperation):
        reg.lock_all(1)
    release(reg, gen)  # normal unlock: the flag was not set
    assert not sim.locked


def test_darwin_nested_wiring_through_the_registry() -> None:
    """XNU counts wirings; the registry makes one kernel call per transition anyway."""
    sim, b = darwin()
    reg = PageRegistry(b)
    addr = sim.mmap(2 * sim.page)
    g1 = acquire(reg, addr, addr + 2 * sim.page)
    g2 = acquire(reg, addr, addr + sim.page)
    assert sim.locked == {addr // sim.page: 1, addr // sim.page + 1: 1}
    release(reg, g1)
    assert sim.locked_addresses() == {addr}
    release(reg, g2)
    assert not sim.locked


def limited(make, pages: int):  # type: ignore[no-untyped-def]
    """A backend whose limit allows ``pages`` locked pages, in each OS's own terms."""
    if make is freebsd:
        return freebsd(soft=pages * 4096)
    if make is darwin:
        return darwin(soft=pages * 16384)
    return sunos(max_locked_memory=pages * 8192)


@pytest.mark.parametrize("make", [freebsd, darwin, sunos])
def test_registry_failure_midway_leaves_no_new_locked_pages(make) -> None:  # type: ignore[no-untyped-def]
    sim, b = limited(make, 3)
    reg = PageRegistry(b)
    addr = sim.mmap(4 * sim.page)
    page = sim.page
    held = acquire(reg, addr + page, addr + 2 * page)  # page 1 held
    before = dict(sim.locked)
    # pages 0 and 2-3 need two kernel calls: the first fits, the second goes over 3 pages
    with pytest.raises(LockLimitError) as info:
        acquire(reg, addr, addr + 4 * page)
    assert info.value.requested == 3 * page
    assert sim.locked == before  # the first call was undone
    assert sim.syscall_names().count("mlock") == 3
    assert reg.counts(addr, addr + 4 * page) == [
        (addr, addr + page, 0, 0), (addr + page, addr + 2 * page, 1, 0),
        (addr + 2 * page, addr + 4 * page, 0, 0)]
    release(reg, held)
    assert not sim.locked


@pytest.mark.parametrize("make", [freebsd, darwin, sunos])
def test_registry_hole_leaves_nothing_locked(make) -> None:  # type: ignore[no-untyped-def]
    sim, b = make()
    reg = PageRegistry(b)
    addr = sim.mmap(2 * sim.page)
    with pytest.raises(MemlockError) as info:
        acquire(reg, addr, addr + 3 * sim.page)  # the hole after the mapping
    exact(info.value, MemlockError)
    assert info.value.errno == errno.ENOMEM
    assert not sim.locked
    gen = acquire(reg, addr, addr + 2 * sim.page)
    assert sim.is_locked(addr, 2 * sim.page)
    release(reg, gen)
    assert not sim.locked


@pytest.mark.parametrize("make", [freebsd, darwin, sunos])
def test_registry_parallel_chunks_all_or_nothing(make) -> None:  # type: ignore[no-untyped-def]
    """A large range is locked in chunks from several threads; one failing chunk undoes all."""
    sim, b = make()
    reg = PageRegistry(b)
    reg.parallel_workers = 4
    size = 2 * PARALLEL_MIN_BYTES
    addr = sim.mmap(size)
    gen = acquire(reg, addr, addr + size)
    assert len(sim.locked) == size // sim.page
    release(reg, gen)
    assert not sim.locked
    hole = addr + size * 3 // 4
    sim.munmap(hole, sim.page)  # a hole in a late chunk
    with pytest.raises(MemlockError):
        acquire(reg, addr, addr + size)
    assert not sim.locked, f"{len(sim.locked)} pages left locked after a failed lock"


@pytest.mark.parametrize("make", [freebsd, sunos])
def test_registry_lock_all_and_unlock_all_relock_held(make) -> None:  # type: ignore[no-untyped-def]
    sim, b = make()
    reg = PageRegistry(b)
    a = sim.mmap(4 * sim.page)
    gen = acquire(reg, a, a + sim.page)
    reg.lock_all(b.constants["MCL_CURRENT"])
    assert sim.is_locked(a, 4 * sim.page)
    reg.unlock_all()  # munlockall, then the live lock is locked again
    assert sim.locked_addresses() == {a}
    release(reg, gen)
    assert not sim.locked
