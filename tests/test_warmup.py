"""Cold warm-up of a directory (``memlock lock --daemon DIR``): what it costs before reading.

The speed itself is measured side by side with vmtouch and dd in bench/bench_warmup.py,
never here; these tests pin down the behaviour the speed-ups rely on.
"""

from __future__ import annotations

import itertools
import mmap
import subprocess
import sys
from pathlib import Path

import pytest

from memlock._buffer import pin
from memlock._lock import REGISTRY
from memlock._pages import PAGE_SIZE as PAGE
from memlock._platform import BACKEND
from memlock._registry import PARALLEL_CHUNK_BYTES, populate_jobs

from .kernel import child_env, drop_cache, file_resident_pages, make_file


def test_lock_command_imports_nothing_it_does_not_use() -> None:
    """``memlock lock`` loads neither dataclasses (which imports inspect), json nor socket.

    Each is tens of milliseconds of start-up before a cold warm-up can issue its first read;
    json is loaded for --json only, socket only under systemd (NOTIFY_SOCKET).
    """
    code = ("import sys; import memlock.cli._hold; "
            "print(sorted(m for m in ('dataclasses', 'inspect', 'json', 'socket') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), check=True).stdout
    assert out.strip() == "[]", out


# -- the parallel populate of file pages ---------------------------------------------------

MIB = 2**20


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_populate_jobs_cover_every_byte_once(workers: int) -> None:
    """Read runs go in at most ``workers`` contiguous pieces, written runs in fixed chunks;
    together the jobs cover every byte of every run exactly once."""
    read, write = 22, 23
    plan = [(0, 100 * MIB + 3 * PAGE, read), (200 * MIB, 230 * MIB, write),
            (300 * MIB, 300 * MIB + 5 * PAGE, read)]
    jobs = populate_jobs(plan, workers, read, PAGE)
    for start, end, advice in plan:
        mine = sorted(j for j in jobs if start <= j[0] < end)
        assert all(a == advice for _, _, a in mine)
        assert mine[0][0] == start and mine[-1][1] == end
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(mine)), mine
        assert all(s % PAGE == 0 and s < e for s, e, _ in mine)
        if advice == read:
            assert len(mine) <= workers
        else:
            assert all(e - s <= PARALLEL_CHUNK_BYTES for s, e, _ in mine)
    assert len(jobs) == len(set(jobs))


def test_parallel_populate_reads_every_page_of_every_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evicted files populated from three threads come back whole (mincore says so), each
    read as at most three contiguous streams (no lock is taken: the populate alone)."""
    sizes = [24 * MIB + 3 * PAGE + 100, 24 * MIB + 1, 25 * MIB]
    paths = [make_file(str(tmp_path / f"shard-{i}"), n) for i, n in enumerate(sizes)]
    for p in paths:
        drop_cache(p)
    assert sum(file_resident_pages(p) for p in paths) < len(paths) * 8 * MIB // PAGE
    calls: list[tuple[int, int, int]] = []
    real = BACKEND.populate

    def spy(start: int, end: int, advice: int) -> None:
        calls.append((start, end, advice))
        real(start, end, advice)

    monkeypatch.setattr(BACKEND, "populate", spy)
    monkeypatch.setattr(REGISTRY, "parallel_workers", 3)
    for path, size in zip(paths, sizes, strict=True):
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view, address, _ = pin(m)
            try:
                calls.clear()
                REGISTRY._parallel_populate(address, address + -(-size // PAGE) * PAGE)
            finally:
                view.release()
            assert 1 < len(calls) <= 3, calls
            assert file_resident_pages(path) == -(-size // PAGE), path
