"""status(), system_status(), the /proc parsers (live and canned), lowlevel, errors."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

import memlock
from memlock import lowlevel
from memlock._platform import linux
from memlock._platform._procfs import parse_kib_fields, parse_smaps

from .kernel import PAGE, address_of, anon, page_state, vmlck

DATA = Path(__file__).parent / "data"


# -- status ------------------------------------------------------------------------------


def test_status_lists_the_locked_region_with_resident_bytes() -> None:
    m = anon(8)
    addr = address_of(m)
    with memlock.lock(m, 2 * PAGE, 3 * PAGE):
        st = memlock.status()
        assert st.pid == os.getpid()
        assert st.locked_bytes == vmlck()
        mine = [r for r in st.regions if r.start == addr + 2 * PAGE]
        assert len(mine) == 1
        region = mine[0]
        assert (region.end, region.size) == (addr + 5 * PAGE, 3 * PAGE)
        assert region.locked_bytes == 3 * PAGE and not region.onfault
        assert region.path == "[anon]"
    assert not [r for r in memlock.status().regions if r.start == addr + 2 * PAGE]


def test_status_reports_onfault() -> None:
    m = mmap.mmap(-1, 4 * PAGE, flags=mmap.MAP_PRIVATE)
    with memlock.lock(m, onfault=True):
        region = next(r for r in memlock.status().regions if r.start == address_of(m))
        assert region.onfault and region.locked_bytes == 0


def test_status_of_another_process_and_of_none() -> None:
    import subprocess
    import sys

    code = ("import mmap, memlock, sys\n"
            "m = mmap.mmap(-1, 16 * 4096, flags=mmap.MAP_PRIVATE)\n"
            "lk = memlock.lock(m)\nprint('ready', flush=True)\nsys.stdin.read()\n")
    from .kernel import child_env

    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        st = memlock.status(proc.pid)
        assert st.pid == proc.pid and st.locked_bytes == 16 * PAGE
        assert sum(r.size for r in st.regions) == 16 * PAGE
    finally:
        proc.communicate("")
    with pytest.raises(ProcessLookupError):
        memlock.status(proc.pid)


def test_system_status_counts_mlocked_memory() -> None:
    before = memlock.system_status()
    assert before.mlocked_bytes is not None and before.unevictable_bytes is not None
    assert before.max_map_count == int(Path("/proc/sys/vm/max_map_count").read_text())
    assert before.wired_bytes is None and before.max_user_wired_bytes is None  # FreeBSD's
    m = anon(4096)  # 16 MiB
    with memlock.lock(m):
        during = memlock.system_status()
    assert during.mlocked_bytes is not None
    # Other processes may lock or unlock meanwhile; 16 MiB is far above that noise here.
    assert during.mlocked_bytes - before.mlocked_bytes >= 12 * 2**20


# -- /proc parsers against canned files ------------------------------------------------


def test_smaps_parser_modern_kernel() -> None:
    entries = list(parse_smaps((DATA / "smaps_modern.txt").read_text()))
    assert [e.path for e in entries] == ["[heap]", "/srv/model weights.bin", "[anon]"]
    assert [e.locked for e in entries] == [True, True, False]
    assert [e.onfault for e in entries] == [True, False, False]
    assert entries[1].fields["Locked"] == 4096 * 1024


def test_smaps_parser_old_kernel_without_vmflags() -> None:
    entries = list(parse_smaps((DATA / "smaps_old_kernel.txt").read_text()))
    assert [e.vmflags for e in entries] == [None, None]
    assert [e.locked for e in entries] == [False, True]  # falls back to Locked: bytes
    assert not entries[1].onfault


def test_status_without_vmlck_and_meminfo_without_mlocked_are_none() -> None:
    st = linux.status_from_texts(
        4242, (DATA / "smaps_modern.txt").read_text(), (DATA / "status_no_vmlck.txt").read_text()
    )
    assert st.locked_bytes is None and len(st.regions) == 2
    assert st.regions[1].path == "/srv/model weights.bin"
    sysst = linux.system_status_from_meminfo((DATA / "meminfo_old.txt").read_text(), None)
    assert sysst.mlocked_bytes is None and sysst.unevictable_bytes is None
    assert sysst.total_bytes == 2048000 * 1024 and sysst.max_map_count is None
    assert not linux.capability_effective((DATA / "status_no_vmlck.txt").read_text(), 14)


def test_kib_fields() -> None:
    assert parse_kib_fields("VmLck:\t  12 kB\nThreads: 3\nbad line\n") == {"VmLck": 12288}


# -- lowlevel: the kernel's own semantics ------------------------------------------------


def test_lowlevel_does_not_nest() -> None:
    m = anon(1)
    addr = address_of(m)
    lowlevel.mlock(addr, PAGE)
    lowlevel.mlock(addr, PAGE)
    lowlevel.munlock(addr, PAGE)  # one munlock undoes both
    assert page_state(addr) == "none"
    lowlevel.munlock(addr, PAGE)  # never-locked: fine


def test_lowlevel_rounds_like_the_kernel_and_mlock2_onfault() -> None:
    m = anon(3)
    addr = address_of(m)
    lowlevel.mlock(addr + 1, PAGE)  # touches two pages
    assert [page_state(addr + i * PAGE) for i in range(3)] == ["full", "full", "none"]
    lowlevel.munlock(addr, 3 * PAGE)
    lowlevel.mlock2(addr, PAGE, memlock.MLOCK_ONFAULT)
    assert page_state(addr) == "onfault"
    lowlevel.munlock(addr, PAGE)


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda: lowlevel.mlock(-1, 4096), ValueError),
        (lambda: lowlevel.mlock(0, -4096), ValueError),
        (lambda: lowlevel.mlock(2**64, 1), OverflowError),
        (lambda: lowlevel.munlock(0, 2**64), OverflowError),
        (lambda: lowlevel.mlock(1.0, 1), TypeError),
        (lambda: lowlevel.mlock2(0, 1, -1), ValueError),
        (lambda: lowlevel.mlock2(0, 1, 2**32), OverflowError),
        (lambda: lowlevel.mlockall(2**31), OverflowError),
    ],
)
def test_lowlevel_bad_integers_never_wrap(call: object, exc: type) -> None:
    before = vmlck()
    with pytest.raises(exc):
        call()  # type: ignore[operator]
    assert vmlck() == before


def test_lowlevel_kernel_errors_are_translated() -> None:
    m = anon(1)
    addr = address_of(m)
    with pytest.raises(memlock.MemlockError) as info:
        lowlevel.mlock2(addr, PAGE, 0x80)  # unknown flag: EINVAL before anything else
    assert info.value.errno == errno.EINVAL and type(info.value) is memlock.MemlockError
    with pytest.raises(memlock.MemlockError) as info:
        lowlevel.mlock(2**64 - PAGE, 2 * PAGE)  # wraps: EINVAL
    assert info.value.errno == errno.EINVAL
    lowlevel.mlock(0, 0)  # rounded length 0: success even unmapped
    assert lowlevel.__doc__ is not None and "do **not nest**" in lowlevel.__doc__


# -- error types ------------------------------------------------------------------------


def test_error_hierarchy() -> None:
    assert issubclass(memlock.MemlockError, OSError)
    assert issubclass(memlock.LockLimitError, memlock.MemlockError)
    assert issubclass(memlock.LockPermissionError, memlock.MemlockError)
    assert issubclass(memlock.LockPermissionError, PermissionError)
    assert issubclass(memlock.UnsupportedOperation, memlock.MemlockError)
    assert not issubclass(memlock.LockLimitError, BlockingIOError)
    e = memlock.LockLimitError(errno.EAGAIN, "x", requested=1, limit=2, locked=3, hint="h")
    assert type(e) is memlock.LockLimitError and e.errno == errno.EAGAIN
    assert (e.requested, e.limit, e.locked, e.hint) == (1, 2, 3, "h") and "h" in str(e)
    assert memlock.UnsupportedOperation("no").errno == errno.ENOSYS


def test_eagain_from_the_kernel_is_a_limit_error_not_blocking_io() -> None:
    from memlock._platform import BACKEND

    exc = BACKEND.lock_error("mlock", errno.EAGAIN, 4096)
    assert type(exc) is memlock.LockLimitError and exc.hint


def test_public_names() -> None:
    for name in memlock.__all__:
        assert hasattr(memlock, name), name
