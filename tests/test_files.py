"""Library: lock_file, residency, touch, evict, checked through the kernel's own accounting."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import memlock

from .kernel import (
    PAGE,
    drop_cache,
    file_resident_pages,
    make_file,
    mappings,
    run_child,
    status_bytes,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")
MIB = 2**20


@pytest.fixture
def big(tmp_path: Path) -> str:
    return make_file(str(tmp_path / "data.bin"), 4 * MIB + 123)


def test_residency_matches_mincore_after_partial_eviction(big: str) -> None:
    drop_cache(big)
    fd = os.open(big, os.O_RDONLY)
    try:
        # No readahead: async readahead landing between the two counts made this flaky.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        os.pread(fd, MIB, 0)  # exactly the first MiB back in
    finally:
        os.close(fd)
    r = memlock.residency(big)
    mine = file_resident_pages(big)
    assert isinstance(r, memlock.Residency)
    assert r.path == big
    assert r.size_bytes == os.path.getsize(big)
    assert r.pages == -(-r.size_bytes // PAGE)
    assert r.resident_pages == mine
    assert 0 < mine < r.pages  # partial: the comparison means something
    # A range: its own page count and its own residency.
    r2 = memlock.residency(big, offset=PAGE + 5, length=3 * PAGE)
    assert r2.size_bytes == 3 * PAGE
    assert r2.pages == 4
    assert r2.resident_pages == file_resident_pages(big, PAGE + 5, 3 * PAGE)


def test_touch_and_evict(big: str) -> None:
    drop_cache(big)
    assert file_resident_pages(big) == 0
    assert memlock.touch(big) is None
    assert file_resident_pages(big) == memlock.residency(big).pages
    memlock.evict(big)
    assert file_resident_pages(big) == 0
    assert memlock.residency(big).resident_pages == 0


def test_touch_skips_nothing_it_should_not(tmp_path: Path) -> None:
    # 40 MiB: two chunks of 32 MiB; the first fully resident already, the second cold.
    path = make_file(str(tmp_path / "two.bin"), 40 * MIB)
    drop_cache(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, 32 * MIB, 0)
    finally:
        os.close(fd)
    memlock.touch(path)
    assert file_resident_pages(path) == 40 * MIB // PAGE
    memlock.evict(path)


def test_errors(tmp_path: Path, big: str) -> None:
    missing = str(tmp_path / "nope")
    for fn in (memlock.residency, memlock.touch, memlock.evict, memlock.lock_file):
        with pytest.raises(FileNotFoundError):
            fn(missing)
        with pytest.raises(TypeError):
            fn(42)  # type: ignore[arg-type]
    with pytest.raises(IsADirectoryError):  # residency/touch/evict walk it (test_trees.py)
        memlock.lock_file(str(tmp_path))
    with pytest.raises(ValueError):
        memlock.residency(big, offset=os.path.getsize(big) + 1)
    with pytest.raises(ValueError):
        memlock.lock_file(big, length=os.path.getsize(big) + 1)
    with pytest.raises(ValueError):
        memlock.lock_file(big, offset=-1)
    with pytest.raises(TypeError):
        memlock.lock_file(big, length="1")  # type: ignore[arg-type]
    os.chmod(big, 0)
    try:
        if os.geteuid() != 0:  # root reads anyway
            with pytest.raises(PermissionError):
                memlock.residency(big)
    finally:
        os.chmod(big, 0o644)


def test_lock_file_is_locked_shared_and_adds_no_anonymous_memory(big: str) -> None:
    drop_cache(big)
    vmlck0 = status_bytes("VmLck")
    anon0 = status_bytes("RssAnon")
    with memlock.lock_file(big) as lf:
        assert isinstance(lf, memlock.LockedFile)
        assert lf.locked and lf.path == big and lf.nbytes == os.path.getsize(big)
        maps = mappings(path=big)
        assert len(maps) == 1
        m = maps[0]
        assert m["perms"] == "r--s"
        assert "lo" in m["flags"]
        pages = -(-lf.nbytes // PAGE)
        assert m["Locked"] == pages * PAGE
        assert status_bytes("VmLck") - vmlck0 == pages * PAGE
        assert status_bytes("RssAnon") - anon0 < 2**20
        assert file_resident_pages(big) == pages
    assert not lf.locked
    assert mappings(path=big) == []
    assert status_bytes("VmLck") == vmlck0
    lf.unlock()  # idempotent


def test_lock_file_range_and_onfault(big: str) -> None:
    with memlock.lock_file(big, offset=PAGE * 3 + 1, length=2 * PAGE) as lf:
        assert lf.nbytes == 2 * PAGE
        (m,) = mappings(path=big)
        assert "lo" in m["flags"]
        assert m["Locked"] == 3 * PAGE  # bytes 3P+1 .. 5P+1 touch three pages
    drop_cache(big)
    with memlock.lock_file(big, onfault=True) as lf:
        (m,) = mappings(path=big)
        assert {"lo", "lf"} <= m["flags"]
        assert m["Locked"] == 0  # nothing touched yet
    with pytest.raises(TypeError):
        memlock.lock_file(big, onfault=1)  # type: ignore[arg-type]


def test_lock_file_nests(big: str) -> None:
    a = memlock.lock_file(big)
    b = memlock.lock_file(big)
    try:
        assert len(mappings(path=big)) == 2
        a.unlock()
        (m,) = mappings(path=big)
        assert "lo" in m["flags"]
    finally:
        a.unlock()
        b.unlock()


def test_empty_file(tmp_path: Path) -> None:
    path = str(tmp_path / "empty")
    open(path, "wb").close()
    r = memlock.residency(path)
    assert (r.size_bytes, r.pages, r.resident_pages) == (0, 0, 0)
    memlock.touch(path)
    memlock.evict(path)
    with memlock.lock_file(path) as lf:
        assert lf.locked and lf.nbytes == 0
    assert not lf.locked


def test_truncated_while_locked_never_sigbus(big: str) -> None:
    r = run_child(f"""
        import os, memlock
        lf = memlock.lock_file({big!r})
        os.truncate({big!r}, 0)
        print(memlock.residency({big!r}).pages)
        memlock.touch({big!r})
        lf.unlock()
        os.truncate({big!r}, 3 * {PAGE})
        print(memlock.residency({big!r}).pages)
        print("alive")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "3", "alive"]


def test_unprivileged_over_limit_locks_nothing(big: str) -> None:
    r = run_child(f"""
        import memlock, sys
        from tests.kernel import vmlck
        try:
            memlock.lock_file({big!r})
        except memlock.LockLimitError as e:
            print("limit", e.limit, e.requested)
            print(e.hint is not None)
        print(vmlck())
    """, unprivileged=True, limit=MIB)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].startswith("limit 1048576")
    assert lines[1] == "True"
    assert lines[2] == "0"
