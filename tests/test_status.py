"""status(), system_status() and the /proc parsers behind them (live and canned)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

import memlock
from memlock._platform import linux
from memlock._platform._procfs import parse_kib_fields, parse_smaps

from .kernel import PAGE, address_of, anon, locking_child, vmlck

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
    with locking_child(16 * PAGE) as pid:
        st = memlock.status(pid)
        assert st.pid == pid and st.locked_bytes == 16 * PAGE
        assert sum(r.size for r in st.regions) == 16 * PAGE
    with pytest.raises(ProcessLookupError):
        memlock.status(pid)


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

