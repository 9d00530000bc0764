"""Residency, ``memlock resident`` and touch without cachestat(2), as root and as uid 65534.

Files of 1, 4095, 4096, 4097 and 9311 bytes and a sparse one, each cached, partly evicted
and evicted. The judges: cachestat(2) as root and our own mincore(2) count over a read-only
shared mapping (tests/kernel.py), never memlock's figures. Where cachestat is missing
(forced here by clearing memlock's ``_cachestat_ok`` in a child, as on Linux before 6.5)
memlock counts with mincore over a mapping that must stop at the end of the file.

As uid 65534, cachestat answers EPERM for a root-owned file of mode 644, and mincore then
reports every page resident, evicted or not: the kernel hides that file's page cache from
that user. memlock reports the only figure the kernel gives (every page) but marks it an
upper bound (``exact`` False; ``*`` and a note in the CLI): a fully cached file then reads
as root reads it, an evicted one is never passed off as resident without that mark.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlock import _files
from memlock._platform._libc import real_libc

from .kernel import (
    NOBODY,
    PAGE,
    drop_cache,
    file_resident_pages,
    output,
    run_as_nobody,
    run_child,
    world_dir,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux page cache")

SIZES = (1, 4095, 4096, 4097, 9311)
SPARSE_SIZE = 1 << 20
STATES = ("cached", "partial", "evicted")

#: Child code: memlock's figure for each path in argv, as JSON; where the kernel hides it,
#: "hidden" (after checking that the figure is the upper bound, every page).
MEASURE = """
import json, sys
import memlock
from memlock import _files
if sys.argv[1] == "no-cachestat":
    _files._cachestat_ok = False  # as on a kernel before 6.5
out = {}
for path in sys.argv[2:]:
    r = memlock.residency(path)
    if r.exact:
        out[path] = r.resident_pages
    else:
        assert r.resident_pages == r.pages, r
        out[path] = "hidden"
print(json.dumps(out))
"""

#: Appended to MEASURE: the kernel's mincore count of each path, as this process sees it.
PRINT_KERNEL_MINCORE = """
from tests.kernel import file_resident_pages
print(json.dumps([file_resident_pages(p) for p in sys.argv[2:]]))
"""

#: Child code: touch each path in argv (after the first, the mode, as in MEASURE).
TOUCH = """
import sys
import memlock
from memlock import _files
if sys.argv[1] == "no-cachestat":
    _files._cachestat_ok = False
for path in sys.argv[2:]:
    memlock.touch(path)
"""


def make_files(directory: Path) -> list[str]:
    """The test files, written back to disk (so they can be evicted), mode 644."""
    paths = []
    for n in SIZES:
        path = directory / f"size-{n}"
        path.write_bytes(os.urandom(n))
        paths.append(path)
    sparse = directory / "sparse"
    with open(sparse, "wb") as f:  # data, a hole, data, a hole to the end
        f.write(os.urandom(2 * PAGE + 17))
        f.seek(700 << 10)
        f.write(os.urandom(5000))
        f.truncate(SPARSE_SIZE)
    paths.append(sparse)
    for path in paths:
        drop_cache(path)  # written back and dropped: the page cache holds what set_state reads
        path.chmod(0o644)
    return [str(p) for p in paths]


def pages_of(path: str) -> int:
    return -(-os.path.getsize(path) // PAGE)


def set_state(path: str, state: str) -> None:
    """Cached: every page read. Partial: then all but the first page evicted. Evicted."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead landing later
        if state in ("cached", "partial"):
            pos = 0
            while chunk := os.pread(fd, 1 << 20, pos):
                pos += len(chunk)
        if state == "partial":
            os.posix_fadvise(fd, PAGE, 0, os.POSIX_FADV_DONTNEED)
        elif state == "evicted":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def in_state(resident: int, path: str, state: str) -> bool:
    """Whether ``resident`` pages fit ``state`` (eviction keeps whole large folios only)."""
    pages = pages_of(path)
    if state == "partial":
        return 1 <= resident < pages or resident == pages == 1
    return resident == (pages if state == "cached" else 0)


def judges(paths: list[str], state: str) -> dict[str, int]:
    """Root's cachestat and our own mincore count, which must agree: the figure to match."""
    assert _files._cachestat_ok, "this kernel has cachestat (6.5+): the tests rely on it"
    out = {}
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            by_cachestat = real_libc().cachestat(fd, 0, 0)[0]
        finally:
            os.close(fd)
        assert by_cachestat is not None
        mine = file_resident_pages(path)
        assert by_cachestat["nr_cache"] == mine, (path, state)
        assert in_state(mine, path, state), (path, state, mine)
        out[path] = mine
    return out


@pytest.fixture
def files() -> Iterator[list[str]]:
    """The test files, root-owned, mode 644, in a mode-755 directory uid 65534 can reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the files must belong to someone else than uid 65534")
    with world_dir("memlock-residency-") as d:
        yield make_files(d)


def each_state(files: list[str], states: tuple[str, ...] = STATES
               ) -> Iterator[tuple[str, dict[str, int]]]:
    """Put every file in each state in turn; yield the state and the judges' figures."""
    for state in states:
        for path in files:
            set_state(path, state)
        yield state, judges(files, state)


def figures(proc: subprocess.CompletedProcess[str]) -> dict[str, int | str]:
    """MEASURE's figures from a child that exited 0."""
    out: dict[str, int | str] = json.loads(output(proc))
    return out


def all_resident(files: list[str]) -> bool:
    return all(file_resident_pages(p) == pages_of(p) for p in files)


def test_residency_without_cachestat_matches_cachestat_and_mincore(files: list[str]) -> None:
    for state, want in each_state(files):
        assert figures(run_child(MEASURE, args=["no-cachestat", *files])) == want, state


def test_touch_without_cachestat_brings_in_every_page(files: list[str]) -> None:
    for state, _ in each_state(files, ("partial", "evicted")):
        output(run_child(TOUCH, args=["no-cachestat", *files]))
        assert all_resident(files), state


def test_cli_resident_without_cachestat_matches_cachestat_and_mincore(
        files: list[str]) -> None:
    # --range takes the CLI's per-file path, which asks memlock._files for the count.
    code = """
        import sys
        from memlock import _files
        from memlock.cli import main
        _files._cachestat_ok = False
        sys.exit(main(["resident", "--json", "--range", "0-", *sys.argv[1:]]))
    """
    for state, want in each_state(files):
        doc = json.loads(output(run_child(code, args=files)))
        assert {f["path"]: f["resident_pages"] for f in doc["files"]} == want, state


# -- as uid 65534 ------------------------------------------------------------------------------


#: Child code: per path in argv, cachestat's errno and the kernel's mincore count.
KERNEL_SAYS = """
import json, os, sys
from memlock._platform._libc import real_libc
from tests.kernel import file_resident_pages
out = {}
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    out[path] = [real_libc().cachestat_pages(fd, 0, 0)[1], file_resident_pages(path)]
    os.close(fd)
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["cachestat", "no-cachestat"])
def test_residency_as_nobody_of_a_root_owned_file_is_marked_an_upper_bound(
        files: list[str], mode: str) -> None:
    for state, _ in each_state(files, ("cached", "evicted")):
        if state == "evicted":  # the kernel hides it: cachestat refuses, mincore says "all"
            kernel_says = json.loads(output(run_as_nobody(KERNEL_SAYS, args=files)))
            assert kernel_says == {p: [errno.EPERM, pages_of(p)] for p in files}
        hidden = figures(run_as_nobody(MEASURE, args=[mode, *files]))
        assert hidden == dict.fromkeys(files, "hidden"), state
        judges(files, state)  # and asking changed nothing


@pytest.mark.parametrize("access", ["owner", "writer"])
def test_residency_as_nobody_without_cachestat_of_a_file_it_may_see_matches_root(
        files: list[str], access: str) -> None:
    # cachestat missing: mincore, which tells the owner and a user who may write the file.
    for path in files:
        if access == "owner":
            os.chown(path, NOBODY, NOBODY)
        else:
            os.chmod(path, 0o666)
    for state, want in each_state(files):
        assert figures(run_as_nobody(MEASURE, args=["no-cachestat", *files])) == want, state


@pytest.mark.parametrize("mode", ["cachestat", "no-cachestat"])
def test_touch_as_nobody_of_a_root_owned_file_brings_in_every_page(
        files: list[str], mode: str) -> None:
    for state, _ in each_state(files, ("partial", "evicted")):
        output(run_as_nobody(TOUCH, args=[mode, *files]))
        assert all_resident(files), state


def test_cli_resident_as_nobody(files: list[str]) -> None:
    cli = "import sys\nfrom memlock.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    list(each_state(files, ("cached",)))
    # Root's files, fully cached: what root reads (every page), marked an upper bound.
    for extra in ([], ["--range", "0-"]):
        proc = run_as_nobody(cli, args=["resident", "--json", *extra, *files])
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert {f["path"]: (f["resident_pages"], f["exact"]) for f in doc["files"]} == {
            p: (pages_of(p), False) for p in files}
        assert doc["total"]["exact"] is False
        proc = run_as_nobody(cli, args=["resident", *extra, *files])
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stdout.count("100.0%*") == len(files), proc.stdout
        assert "upper bounds" in proc.stderr and "owner" in proc.stderr, proc.stderr
    # Its own files: what root's cachestat and mincore say.
    for path in files:
        os.chown(path, NOBODY, NOBODY)
    for state, want in each_state(files):
        doc = json.loads(output(run_as_nobody(cli, args=["resident", "--json", *files])))
        assert {f["path"]: f["resident_pages"] for f in doc["files"]} == want, state


@pytest.mark.parametrize("fowner", [True, False])
def test_residency_without_cachestat_follows_the_kernels_rule_for_cap_fowner(
        files: list[str], fowner: bool) -> None:
    # Root without CAP_DAC_OVERRIDE may not write another user's file of mode 644; only
    # CAP_FOWNER then makes mincore tell the truth. Without it, mincore says "all".
    for path in files:
        os.chown(path, NOBODY, NOBODY)
    drop = ["dac_override"] + ([] if fowner else ["fowner"])
    for state, want in each_state(files, ("cached", "evicted")):
        proc = run_child(MEASURE + PRINT_KERNEL_MINCORE, args=["no-cachestat", *files], drop=drop)
        ours, kernels = output(proc).splitlines()
        if fowner:
            assert json.loads(kernels) == list(want.values())
            assert json.loads(ours) == want, state
        else:
            assert json.loads(kernels) == [pages_of(p) for p in files]  # the lie
            assert json.loads(ours) == dict.fromkeys(files, "hidden"), state
