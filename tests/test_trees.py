"""Library: residency/touch/evict of directory trees and lock_files, judged by the kernel
(mincore of the files, VmLck and smaps VmFlags of the process that locks)."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest

import memlock

from .kernel import (
    CHILD_PRELUDE,
    PAGE,
    drop_cache,
    file_resident_pages,
    make_file,
    output,
    run_child,
    run_cli,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")
KIB = 1024
MIB = 2**20


def pages(nbytes: int) -> int:
    return -(-nbytes // PAGE)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tree/{x.bin (1 MiB + 5), notes.txt (9 KiB), sub/y.bin (512 KiB), sub/deep/z.bin
    (64 KiB)}, a link to a file outside, all written back and evicted (on a real disk)."""
    root = tmp_path / "tree"
    (root / "sub" / "deep").mkdir(parents=True)
    files = {"x.bin": MIB + 5, "notes.txt": 9 * KIB, "sub/y.bin": 512 * KIB,
             "sub/deep/z.bin": 64 * KIB}
    for name, size in files.items():
        make_file(str(root / name), size)
    make_file(str(tmp_path / "outside.bin"), 256 * KIB)
    (root / "link.bin").symlink_to(tmp_path / "outside.bin")
    for p in [*root.rglob("*"), tmp_path / "outside.bin"]:
        if p.is_file() and not p.is_symlink():
            drop_cache(p)
    return root


def resident(root: Path) -> dict[str, int]:
    """mincore's resident pages of every file under ``root`` (and the link's target)."""
    return {str(p.relative_to(root)): file_resident_pages(p) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_touch_of_a_tree_brings_exactly_the_filtered_files_into_ram(tree: Path) -> None:
    assert set(resident(tree).values()) == {0}
    totals = memlock.touch(tree, include=["*.bin"], exclude=["deep"])
    after = resident(tree)
    assert after == {"x.bin": pages(MIB + 5), "sub/y.bin": pages(512 * KIB),
                     "sub/deep/z.bin": 0, "notes.txt": 0, "link.bin": 0}
    assert isinstance(totals, memlock.FileTotals) and isinstance(totals, memlock.Residency)
    assert (totals.files, totals.size_bytes) == (2, MIB + 5 + 512 * KIB)
    assert totals.pages == totals.resident_pages == sum(after.values())
    assert totals.exact and totals.skipped == () and totals.path == str(tree)
    # One file keeps its results.
    f = tree / "x.bin"
    assert type(memlock.residency(f)) is memlock.Residency
    assert memlock.touch(f) is None and memlock.evict(f) is None


def test_evict_and_residency_of_a_tree_agree_with_the_cli(tree: Path) -> None:
    memlock.touch(tree, follow_symlinks=True)
    assert 0 not in resident(tree).values()  # the link's target too: it was followed
    memlock.evict(tree, max_size="600K")  # not x.bin (over 600 KiB), not the link's target
    after = resident(tree)
    assert after["x.bin"] == pages(MIB + 5) and after["link.bin"] == pages(256 * KIB)
    assert after["sub/y.bin"] == after["sub/deep/z.bin"] == after["notes.txt"] == 0
    r = memlock.residency(tree)
    cli = json.loads(output(run_cli("resident", "--json", str(tree))))["total"]
    assert (r.files, r.size_bytes, r.pages, r.resident_pages, r.exact) == (
        cli["files"], cli["size_bytes"], cli["pages"], cli["resident_pages"], cli["exact"])
    assert r.files == 4  # the link inside the tree is not followed by default
    assert r.resident_pages == pages(MIB + 5)
    # A range of each file, clamped to it (as --range 0-8K): 2 pages of each file.
    part = memlock.residency(tree, offset=0, length=8 * KIB)
    assert (part.files, part.pages, part.resident_pages) == (4, 8, 2)


def test_tree_errors_raise_or_go_to_on_error(tree: Path) -> None:
    (tree / "broken.bin").symlink_to(tree / "nowhere")
    with pytest.raises(FileNotFoundError):
        memlock.residency(tree, follow_symlinks=True)
    seen: list[tuple[str, int | None]] = []
    r = memlock.touch(tree, follow_symlinks=True,
                      on_error=lambda path, exc: seen.append((path, exc.errno)))
    assert seen == [(str(tree / "broken.bin"), 2)]
    assert r is not None and r.files == 5 and r.resident_pages == r.pages
    with pytest.raises(TypeError):
        memlock.residency(tree, include="*.bin")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        memlock.residency(tree, max_size=-1)
    with pytest.raises(TypeError):
        memlock.evict(tree, one_file_system=1)  # type: ignore[arg-type]


def test_the_error_raised_after_a_walk_names_the_whole_path(tree: Path) -> None:
    # The walk opens files by name relative to their directory's descriptor: the error
    # raised at the end must name the file in full, not only its base name.
    (tree / "sub" / "deep" / "loop.bin").symlink_to("loop.bin")  # ELOOP
    for call in (memlock.residency, memlock.touch, memlock.lock_files, memlock.Profile.capture):
        with pytest.raises(OSError) as info:
            call(tree, follow_symlinks=True)  # type: ignore[operator]
        assert info.value.errno == errno.ELOOP
        assert str(tree / "sub" / "deep" / "loop.bin") in str(info.value), call


def test_bad_tree_arguments_are_refused_for_a_file_too(tree: Path) -> None:
    # The filters do not apply to a file named directly, but bad values stay bad values:
    # refused before any work (the file is not touched).
    f = tree / "x.bin"
    for call, kwargs, error in (
            (memlock.touch, {"include": "*.bin"}, TypeError),
            (memlock.touch, {"max_size": "zz"}, ValueError),
            (memlock.touch, {"max_size": -1}, ValueError),
            (memlock.touch, {"follow_symlinks": 1}, TypeError),
            (memlock.touch, {"on_error": 5}, TypeError),
            (memlock.residency, {"exclude": [3]}, TypeError),
            (memlock.evict, {"one_file_system": "yes"}, TypeError)):
        for path in (f, tree):
            with pytest.raises(error):
                call(path, **kwargs)  # type: ignore[operator]
    assert set(resident(tree).values()) == {0}


LOCK_FILES = CHILD_PRELUDE + """
def locked_paths():
    return sorted({v["path"] for v in mappings() if "lo" in v["flags"] and v["path"]})
"""


def test_lock_files_locks_every_file_and_unlocks_them(tree: Path) -> None:
    out = run_child("""
        root = sys.argv[1]
        before = vmlck()
        with memlock.lock_files([root, root + "/sub/y.bin"], exclude=["*.txt"]) as lf:
            files = sorted(f.path for f in lf.files)
            print(json.dumps({"files": files, "nbytes": lf.nbytes, "locked": locked_paths(),
                              "vmlck": vmlck() - before,
                              "states": [page_state(f.address) for f in lf]}))
        print(json.dumps({"locked": locked_paths(), "vmlck": vmlck() - before,
                          "mapped": [v["path"] for v in mappings() if root in v["path"]]}))
    """, args=[str(tree)], prelude=LOCK_FILES)
    held, after = (json.loads(line) for line in output(out).splitlines())
    want = sorted(str(tree / n) for n in ("x.bin", "sub/y.bin", "sub/deep/z.bin"))
    assert held["files"] == held["locked"] == want  # y.bin once, though named twice
    assert held["nbytes"] == MIB + 5 + 512 * KIB + 64 * KIB
    assert held["vmlck"] == (pages(MIB + 5) + pages(512 * KIB) + pages(64 * KIB)) * PAGE
    assert set(held["states"]) == {"full"}
    assert after == {"locked": [], "vmlck": 0, "mapped": []}


def test_lock_files_is_all_or_nothing_when_a_lock_fails(tmp_path: Path) -> None:
    # The third file is replaced by another of the same name after the walk, before its
    # lock (ESTALE): the two files already locked go again.
    root = tmp_path / "three"
    root.mkdir()
    for k in range(3):
        make_file(str(root / f"f{k}.bin"), 2 * PAGE)
    make_file(str(tmp_path / "other.bin"), 2 * PAGE)
    out = run_child("""
        import memlock._trees as trees
        real, calls = trees.lock_planned, []
        def replacing(p, *args):
            calls.append(p.entry.path)
            if len(calls) == 3:
                os.replace(sys.argv[2], p.entry.path)
            return real(p, *args)
        trees.lock_planned = replacing
        before = vmlck()
        try:
            memlock.lock_files(sys.argv[1])
        except OSError as exc:
            print(json.dumps({"errno": exc.errno, "calls": len(calls), "locked": locked_paths(),
                              "vmlck": vmlck() - before,
                              "mapped": [v["path"] for v in mappings()
                                         if sys.argv[1] in v["path"]]}))
    """, args=[str(root), str(tmp_path / "other.bin")], prelude=LOCK_FILES)
    assert json.loads(output(out)) == {"errno": errno.ESTALE, "calls": 3, "locked": [],
                                       "vmlck": 0, "mapped": []}


def test_lock_files_checks_the_descriptors_first(tmp_path: Path) -> None:
    # Each locked file keeps a descriptor (its mapping's). Under a soft RLIMIT_NOFILE of
    # 40 the 60 files fit once it is raised (as memlock lock does); under a hard limit of
    # 40 they are refused before any lock, so before a page of any file is read.
    root = tmp_path / "many"
    root.mkdir()
    for k in range(60):
        drop_cache(make_file(str(root / f"f{k:02}.bin"), 2 * PAGE))
    code = """
        before = vmlck()
        try:
            with memlock.lock_files(sys.argv[1]) as lf:
                print(json.dumps({"files": len(lf), "vmlck": vmlck() - before}))
        except OSError as exc:
            print(json.dumps({"errno": exc.errno, "nofile": "RLIMIT_NOFILE" in str(exc),
                              "vmlck": vmlck() - before, "locked": locked_paths()}))
    """
    out = run_child(code, args=[str(root)], prelude=LOCK_FILES,
                    prefix=["prlimit", "--nofile=40:40"])
    assert json.loads(output(out)) == {"errno": 24, "nofile": True, "vmlck": 0, "locked": []}
    assert sum(file_resident_pages(p) for p in root.iterdir()) == 0
    out = run_child(code, args=[str(root)], prelude=LOCK_FILES,
                    prefix=["prlimit", "--nofile=40:400"])
    assert json.loads(output(out)) == {"files": 60, "vmlck": 120 * PAGE}


def test_lock_files_over_the_limit_locks_nothing_unprivileged(tree: Path) -> None:
    out = run_child("""
        try:
            memlock.lock_files(sys.argv[1], exclude=["*.txt"])
        except memlock.LockLimitError as exc:
            print(json.dumps({"error": str(exc), "requested": exc.requested,
                              "limit": exc.limit, "vmlck": vmlck(), "locked": locked_paths()}))
        # Within the limit, it works unprivileged too.
        with memlock.lock_files(sys.argv[1], include=["z.bin"]) as lf:
            print(json.dumps({"nbytes": lf.nbytes, "vmlck": vmlck()}))
        print(vmlck())
    """, args=[str(tree)], prelude=LOCK_FILES, unprivileged=True, limit=MIB)
    over, fits, last = output(out).splitlines()
    over_doc = json.loads(over)
    assert "RLIMIT_MEMLOCK" in over_doc["error"]
    assert over_doc["limit"] == MIB and over_doc["requested"] > MIB
    assert (over_doc["vmlck"], over_doc["locked"]) == (0, [])
    # Checked before anything was locked: not one page of any file was read (a lock
    # would have faulted the first file in).
    assert resident(tree)["x.bin"] == resident(tree)["sub/y.bin"] == 0
    assert json.loads(fits) == {"nbytes": 64 * KIB, "vmlck": 64 * KIB}
    assert last == "0"


def test_lock_files_within_a_budget_locks_a_prefix_and_touches_the_rest(tree: Path) -> None:
    out = run_child("""
        root = sys.argv[1]
        before = vmlck()
        with memlock.lock_files([root + "/sub/y.bin", root + "/x.bin"], budget="600K") as lf:
            print(json.dumps({"vmlck": vmlck() - before, "unlocked": lf.unlocked,
                              "files": [[f.path, f.offset, f.nbytes] for f in lf]}))
    """, args=[str(tree)], prelude=LOCK_FILES)
    doc = json.loads(output(out))
    y, x = str(tree / "sub/y.bin"), str(tree / "x.bin")
    assert doc["vmlck"] == 600 * KIB
    assert doc["files"] == [[y, 0, 512 * KIB], [x, 0, 88 * KIB]]
    assert doc["unlocked"] == [[x, 88 * KIB, MIB + 5 - 88 * KIB]]
    assert resident(tree)["x.bin"] == pages(MIB + 5)  # the rest was touched


def test_lock_files_refuses_bad_arguments(tree: Path) -> None:
    with pytest.raises(TypeError):
        memlock.lock_files(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        memlock.lock_files(tree, budget=-1)
    with pytest.raises(FileNotFoundError):
        memlock.lock_files([tree, tree / "nope"])
    assert set(resident(tree).values()) == {0}  # the walk failed before any lock
