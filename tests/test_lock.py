"""memlock.lock(): every buffer kind, nesting, all-or-nothing, bad input — judged by smaps."""

from __future__ import annotations

import array
import ctypes
import errno
import mmap
import os
import tempfile
import threading

import numpy as np
import pytest

import memlock
from memlock._lock import REGISTRY
from memlock._platform._libc import real_libc

from .kernel import (
    PAGE,
    address_of,
    anon,
    page_state,
    resident_pages,
    run_child,
    vma,
    vmlck,
)

# Every test here runs through lock()'s C fast path and through the pure-Python path.
pytestmark = pytest.mark.usefixtures("lock_path")


def test_page_size_is_the_kernels() -> None:
    assert memlock.PAGE_SIZE == os.sysconf("SC_PAGE_SIZE") == mmap.PAGESIZE


def test_linux_constants_have_the_kernels_values() -> None:
    assert (memlock.MCL_CURRENT, memlock.MCL_FUTURE, memlock.MCL_ONFAULT) == (1, 2, 4)
    assert memlock.MLOCK_ONFAULT == 1


def test_lock_anonymous_memory_is_locked_by_the_kernel() -> None:
    m = anon(4)
    addr = address_of(m)
    before = vmlck()
    assert page_state(addr) == "none"
    with memlock.lock(m) as lk:
        assert lk.locked
        assert lk.address == addr and lk.nbytes == 4 * PAGE
        assert all(page_state(addr + i * PAGE) == "full" for i in range(4))
        assert vma(addr)["Locked"] >= 4 * PAGE  # type: ignore[operator]
        assert vmlck() == before + 4 * PAGE
    assert not lk.locked
    assert page_state(addr) == "none"
    assert vmlck() == before


def _buffers() -> list[tuple[str, object, int]]:
    """(name, object, address of its first byte) of every buffer kind."""
    out: list[tuple[str, object, int]] = []
    ba = bytearray(os.urandom(3 * PAGE))
    out.append(("bytearray", ba, address_of(ba)))
    b = os.urandom(3 * PAGE)  # bytes: read-only, address via the buffer protocol
    out.append(("bytes", b, id(b) + bytes.__basicsize__ - 1))
    m = anon(3)
    out.append(("memoryview-slice", memoryview(m)[PAGE + 10 : 2 * PAGE + 20],
                address_of(m) + PAGE + 10))
    arr = array.array("d", range(2000))
    out.append(("array", arr, arr.buffer_info()[0]))
    npa = np.arange(5000, dtype=np.int64)
    out.append(("numpy", npa, npa.ctypes.data))
    ct = (ctypes.c_int * 3000)()
    out.append(("ctypes", ct, ctypes.addressof(ct)))
    return out


@pytest.mark.parametrize("index", range(6), ids=[n for n, _, _ in _buffers()])
def test_every_buffer_kind(index: int) -> None:
    name, obj, first = _buffers()[index]
    nbytes = memoryview(obj).nbytes  # type: ignore[arg-type]
    with memlock.lock(obj) as lk:
        assert lk.address == first - first % PAGE, name
        last = first + nbytes - 1
        assert lk.nbytes == (last - last % PAGE) + PAGE - lk.address
        for page in range(lk.address, lk.address + lk.nbytes, PAGE):
            assert page_state(page) == "full", (name, hex(page))
    for page in range(lk.address, lk.address + lk.nbytes, PAGE):
        # Pages of other objects on the heap may be locked by nobody else: all unlocked.
        assert page_state(page) == "none", (name, hex(page))


def test_read_only_file_mmap_is_locked_without_private_copies() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(os.urandom(8 * PAGE))
        f.flush()
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mv = memoryview(m)
        addr = vma_start = 0
        with memlock.lock(m) as lk:
            addr = lk.address
            info = vma(addr)
            vma_start = info["start"]  # type: ignore[assignment]
            assert "lo" in info["flags"]  # type: ignore[operator]
            assert info["Anonymous"] == 0  # shared read-only: no COW copies
            assert info["Locked"] == 8 * PAGE
        assert addr == vma_start
        assert page_state(addr) == "none"
        mv.release()
        m.close()


def test_offset_and_length_cover_every_touched_page() -> None:
    m = anon(4)
    addr = address_of(m)
    with memlock.lock(m, 1, PAGE) as lk:  # addr+1 .. addr+PAGE: two pages
        assert (lk.address, lk.nbytes) == (addr, 2 * PAGE)
        assert [page_state(addr + i * PAGE) for i in range(4)] == ["full"] * 2 + ["none"] * 2
    with memlock.lock(m, 3 * PAGE) as lk:  # length None: to the end
        assert (lk.address, lk.nbytes) == (addr + 3 * PAGE, PAGE)
        assert page_state(addr + 2 * PAGE) == "none"
        assert page_state(addr + 3 * PAGE) == "full"


def test_empty_range_locks_nothing() -> None:
    m = anon(1)
    before = vmlck()
    with memlock.lock(m, PAGE, 0) as lk:
        assert lk.nbytes == 0
        assert vmlck() == before
    with memlock.lock(b"") as lk:
        assert lk.nbytes == 0


def test_locks_nest_two_objects_on_one_page() -> None:
    m = anon(1)
    mv = memoryview(m)
    a, b = mv[:100], mv[2000:2100]
    addr = address_of(m)
    la, lb = memlock.lock(a), memlock.lock(b)
    la.unlock()
    assert page_state(addr) == "full"  # the kernel alone would have unlocked it
    lb.unlock()
    assert page_state(addr) == "none"


def test_same_object_locked_twice_needs_two_unlocks() -> None:
    m = anon(2)
    addr = address_of(m)
    l1 = memlock.lock(m)
    l2 = memlock.lock(m, PAGE)
    l1.unlock()
    assert page_state(addr) == "none" and page_state(addr + PAGE) == "full"
    l2.unlock()
    assert page_state(addr + PAGE) == "none"


def test_unlock_is_idempotent() -> None:
    m = anon(1)
    addr = address_of(m)
    outer = memlock.lock(m)
    inner = memlock.lock(m)
    inner.unlock()
    inner.unlock()  # must not drop the outer lock's count
    assert page_state(addr) == "full"
    outer.unlock()
    assert page_state(addr) == "none"


def test_held_lock_pins_the_object() -> None:
    ba = bytearray(PAGE)
    with memlock.lock(ba), pytest.raises(BufferError):
        ba.extend(b"x")
    ba.extend(b"x")  # released: resizable again
    m = anon(1)
    with memlock.lock(m), pytest.raises(BufferError):
        m.close()
    m.close()


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((42,), TypeError),
        (("text",), TypeError),
        ((bytearray(10), -1), ValueError),
        ((bytearray(10), 11), ValueError),
        ((bytearray(10), 5, 6), ValueError),
        ((bytearray(10), 0, -1), ValueError),
        ((bytearray(10), 1.5), TypeError),
        ((bytearray(10), 0, "3"), TypeError),
        ((bytearray(10), True), TypeError),
        ((bytearray(10), 2**70), OverflowError),
    ],
)
def test_bad_arguments_raise_before_any_syscall(args: tuple[object, ...], exc: type) -> None:
    before = vmlck()
    with pytest.raises(exc):
        memlock.lock(*args)  # type: ignore[arg-type]
    assert vmlck() == before


def test_bad_arguments_release_the_export() -> None:
    ba = bytearray(10)
    with pytest.raises(ValueError):
        memlock.lock(ba, 20)
    ba.extend(b"x")  # no export left behind


def test_strided_view_locks_its_extent() -> None:
    m = anon(4)
    addr = address_of(m)
    view = memoryview(m)[PAGE : 3 * PAGE : 2]
    with memlock.lock(view) as lk:
        assert lk.address == addr + PAGE and lk.nbytes == 2 * PAGE
        assert page_state(addr) == "none"
        assert page_state(addr + 2 * PAGE) == "full"
    neg = np.arange(3 * PAGE, dtype=np.uint8)[::-1]
    with memlock.lock(neg) as lk:
        assert lk.nbytes >= 3 * PAGE


def test_failure_midway_leaves_nothing_locked() -> None:
    # Page 2 of 4 is PROT_NONE: Linux mlock fails with ENOMEM there *after* locking the
    # pages before it (and marks the VMA). memlock must undo that.
    m = anon(4)
    addr = address_of(m)
    assert real_libc().mprotect(addr + 2 * PAGE, PAGE, 0) == 0
    before = vmlck()
    try:
        with pytest.raises(memlock.MemlockError) as info:
            memlock.lock(m)
        assert not isinstance(info.value, memlock.LockLimitError)
        assert info.value.errno == errno.ENOMEM
        assert f"{addr + 2 * PAGE:#x}-{addr + 3 * PAGE:#x} is PROT_NONE" in str(info.value)
        assert [page_state(addr + i * PAGE) for i in range(4)] == ["none"] * 4
        assert vmlck() == before
        assert REGISTRY.counts(addr, addr + 4 * PAGE) == [(addr, addr + 4 * PAGE, 0, 0)]
    finally:
        real_libc().mprotect(addr + 2 * PAGE, PAGE, mmap.PROT_READ | mmap.PROT_WRITE)


def test_failure_keeps_pages_other_locks_hold() -> None:
    m = anon(4)
    addr = address_of(m)
    held = memlock.lock(m, 0, PAGE)
    assert real_libc().mprotect(addr + 3 * PAGE, PAGE, 0) == 0
    try:
        with pytest.raises(memlock.MemlockError):
            memlock.lock(m)
        assert [page_state(addr + i * PAGE) for i in range(4)] == ["full"] + ["none"] * 3
    finally:
        real_libc().mprotect(addr + 3 * PAGE, PAGE, mmap.PROT_READ | mmap.PROT_WRITE)
    held.unlock()
    assert page_state(addr) == "none"


def test_onfault_locks_pages_as_they_fault_in() -> None:
    m = mmap.mmap(-1, 8 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = address_of(m)
    with memlock.lock(m, onfault=True) as lk:
        assert lk.onfault
        assert page_state(addr) == "onfault"
        assert resident_pages(addr, 8 * PAGE) == 0
        m[0] = 1
        m[5 * PAGE] = 1
        assert vma(addr)["Locked"] == 2 * PAGE
        with memlock.lock(m):  # a full lock over it populates and drops 'lf'
            assert page_state(addr) == "full"
            assert resident_pages(addr, 8 * PAGE) == 8
        assert page_state(addr) == "onfault"  # back to on-fault, not unlocked
    assert page_state(addr) == "none"


def test_threads_locking_overlapping_ranges() -> None:
    m = anon(64)
    addr = address_of(m)
    before = vmlck()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            locks = []
            for k in range(200):
                off = ((seed * 7 + k * 13) % 60) * PAGE
                locks.append(memlock.lock(m, off, 4 * PAGE))
                if len(locks) > 5:
                    locks.pop(0).unlock()
            barrier.wait()
            for lk in locks:
                assert page_state(lk.address) == "full"
            barrier.wait()
            for lk in locks:
                lk.unlock()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert vmlck() == before
    assert all(page_state(addr + i * PAGE) == "none" for i in range(64))


def test_collected_lock_warns_and_unlocks() -> None:
    m = anon(1)
    addr = address_of(m)
    lk = memlock.lock(m)
    with pytest.warns(ResourceWarning):
        del lk
        import gc

        gc.collect()
    assert page_state(addr) == "none"


def test_collected_lock_unlocks_even_when_its_warning_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import sys
    import warnings

    m = anon(1)
    addr = address_of(m)
    lk = memlock.lock(m)
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: raised.append(u.exc_value))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # as under -W error
        del lk
        gc.collect()
    assert any(isinstance(e, ResourceWarning) for e in raised)
    assert page_state(addr) == "none"
    assert REGISTRY.counts(addr, addr + PAGE) == [(addr, addr + PAGE, 0, 0)]


def test_repr() -> None:
    m = anon(1)
    with memlock.lock(m) as lk:
        assert "locked" in repr(lk) and "nbytes=4096" in repr(lk)
    assert "unlocked" in repr(lk)


PARALLEL_HOLE_CHILD = """
import ctypes, errno, mmap, sys
import memlock
from memlock._registry import PARALLEL_MIN_BYTES
from tests.kernel import PAGE, address_of, page_state, vmlck

hole_at = int(sys.argv[1])
size = 2 * PARALLEL_MIN_BYTES
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
addr = address_of(m)
libc = ctypes.CDLL(None, use_errno=True)
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
assert libc.munmap(addr + hole_at * 2**20, PAGE) == 0
before = vmlck()
try:
    memlock.lock(m)
except memlock.MemlockError as exc:
    assert exc.errno == errno.ENOMEM, exc
else:
    raise SystemExit("lock over a hole did not fail")
assert vmlck() == before, (vmlck(), before)
assert page_state(addr + size - PAGE) == "none"
print("ok")
"""


@pytest.mark.parametrize("hole_at", [1, 40, 96])
def test_parallel_lock_failure_undoes_every_chunk(hole_at: int) -> None:
    # >= 64 MiB is locked in parallel chunks; an unmapped page in one chunk fails it after
    # other chunks succeeded. Everything must be undone, whichever chunk holds the hole.
    # In a child: the hole could be reused by another mapping, which close() would unmap.
    proc = run_child(PARALLEL_HOLE_CHILD, args=[str(hole_at)])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr + proc.stdout


def test_large_shared_writable_file_mapping_is_locked_without_dirtying_it() -> None:
    # >= 64 MiB goes through the parallel populate; on a shared file mapping it must fault
    # pages in for reading (as mlock does), never write-fault them into dirty pages.
    from memlock._registry import PARALLEL_MIN_BYTES

    size = PARALLEL_MIN_BYTES + 8 * PAGE
    with tempfile.NamedTemporaryFile(dir="/var/tmp") as f:
        f.truncate(size)
        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_WRITE)
        with memlock.lock(m) as lk:
            info = vma(lk.address)
            assert "lo" in info["flags"] and info["Locked"] == size  # type: ignore[operator]
            assert info["Shared_Dirty"] == 0 and info["Private_Dirty"] == 0, info
            assert info["Anonymous"] == 0
        m.close()


def test_large_private_anonymous_lock_is_fully_resident_and_locked() -> None:
    from memlock._registry import PARALLEL_MIN_BYTES

    size = PARALLEL_MIN_BYTES * 2
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    before = vmlck()
    with memlock.lock(m) as lk:
        assert vma(lk.address)["Locked"] == size
        assert resident_pages(lk.address, size) == size // PAGE
        assert vmlck() == before + size
    assert vmlck() == before
    m.close()


def test_locking_memfd_secret_memory_says_what_it_is() -> None:
    from memlock._secrets import _pool as _securemem

    if not _securemem.probe_memfd_secret():
        pytest.skip("memfd_secret is not available on this kernel")
    with memlock.SecureBuffer(32, backend="memfd_secret") as sb:
        view = sb.view()
        before = vmlck()
        with pytest.raises(memlock.MemlockError) as info:
            memlock.lock(view)
        assert "memfd_secret" in str(info.value) and vmlck() == before
        view.release()



@pytest.mark.parametrize("flag", ["no", "", 0, 1, None, 1.0])
def test_flags_must_be_bools(flag: object) -> None:
    """``onfault="no"`` once gave an on-fault Lock: a flag that is not a bool is a TypeError,
    before anything is locked."""
    buf = bytearray(100)
    before = memlock.status().locked_bytes
    with pytest.raises(TypeError, match="onfault must be a bool"):
        memlock.lock(buf, onfault=flag)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a bool"):
        memlock.lock_all(current=flag)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a bool"):
        memlock.lock_all(onfault=flag)  # type: ignore[arg-type]
    assert memlock.status().locked_bytes == before
    buf.append(1)  # no export left behind
