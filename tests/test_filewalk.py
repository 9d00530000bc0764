"""The tree walk behind resident/touch/evict/lock: what it lists, once each, in order."""

from __future__ import annotations

import os
from pathlib import Path

from memlock._walk import WalkOptions, walk


def tree(root: Path) -> None:
    (root / "a").mkdir()
    (root / "a" / "one.bin").write_bytes(b"1" * 10)
    (root / "a" / "two.txt").write_bytes(b"2" * 5000)
    os.link(root / "a" / "one.bin", root / "a" / "hard.bin")       # same inode
    (root / "b").mkdir()
    (root / "b" / "three.bin").write_bytes(b"")
    os.symlink(root / "a", root / "b" / "link-to-a")                 # dir symlink
    os.symlink(root / "b", root / "b" / "loop")                      # a loop
    os.symlink(root / "nowhere", root / "b" / "broken")
    os.mkfifo(root / "b" / "fifo")


def names(root: Path, options: WalkOptions, *paths: str) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    found = [os.path.relpath(e.path, root)
             for e in walk([str(root / p) for p in paths] or [str(root)], options,
                           lambda p, exc: errors.append(os.path.relpath(p, root)))]
    return found, errors


def test_default_walk(tmp_path: Path) -> None:
    tree(tmp_path)
    found, errors = names(tmp_path, WalkOptions())
    assert found == ["a/hard.bin", "a/two.txt", "b/three.bin"]  # hard link once; no links
    assert errors == []


def test_follow_symlinks_without_looping_or_repeating(tmp_path: Path) -> None:
    tree(tmp_path)
    found, errors = names(tmp_path, WalkOptions(follow_symlinks=True))
    assert found == ["a/hard.bin", "a/two.txt", "b/three.bin"]  # a/ seen already, loop cut
    assert errors == ["b/broken"]


def test_filters_and_errors(tmp_path: Path) -> None:
    tree(tmp_path)
    found, _ = names(tmp_path, WalkOptions(include=["*.bin"]))
    assert found == ["a/hard.bin", "b/three.bin"]
    found, _ = names(tmp_path, WalkOptions(exclude=["a"]))
    assert found == ["b/three.bin"]
    found, _ = names(tmp_path, WalkOptions(max_size=100))
    assert found == ["a/hard.bin", "b/three.bin"]
    found, errors = names(tmp_path, WalkOptions(), "a/two.txt", "missing", "b/fifo")
    assert found == ["a/two.txt"] and errors == ["missing", "b/fifo"]


def test_unreadable_files_are_still_listed(tmp_path: Path) -> None:
    tree(tmp_path)
    os.chmod(tmp_path / "a" / "two.txt", 0)
    found, errors = names(tmp_path, WalkOptions(), "a")
    assert "a/two.txt" in found and errors == []


def test_a_deep_tree_is_walked_without_recursion_or_leaked_descriptors(tmp_path: Path) -> None:
    import subprocess

    rel = "/".join(["d"] * 1200)  # deeper than Python's default recursion limit
    subprocess.run(["mkdir", "-p", rel], cwd=tmp_path, check=True)  # os.makedirs recurses
    subprocess.run(["touch", rel + "/leaf.bin"], cwd=tmp_path, check=True)
    try:
        fds = len(os.listdir("/proc/self/fd"))
        found, errors = names(tmp_path, WalkOptions())
        assert errors == [] and found == [rel + "/leaf.bin"]
        assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        subprocess.run(["rm", "-rf", "d"], cwd=tmp_path, check=True)  # rmtree recurses too


def test_the_same_file_by_two_names_is_listed_once(tmp_path: Path) -> None:
    tree(tmp_path)
    os.symlink(tmp_path / "a" / "two.txt", tmp_path / "b" / "also-two")
    found, _ = names(tmp_path, WalkOptions(follow_symlinks=True), "a/two.txt", "a/two.txt", "b")
    assert found == ["a/two.txt", "b/link-to-a/hard.bin", "b/three.bin"]  # also-two: once


def test_fifo_never_blocks(tmp_path: Path) -> None:
    from .kernel import run_child

    os.mkfifo(tmp_path / "fifo")
    code = ("import memlock, sys\n"
            "for f in (memlock.residency, memlock.touch, memlock.evict, memlock.lock_file):\n"
            "    try:\n        f(sys.argv[1])\n    except OSError as e:\n"
            "        print(type(e).__name__)\n")
    proc = run_child(code, args=[str(tmp_path / "fifo")], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["OSError"] * 4


def test_entries_removed_mid_walk_are_not_errors(tmp_path: Path) -> None:
    from memlock._walk import scan

    for i in range(20):
        (tmp_path / f"f{i:02}").write_bytes(b"x")
    seen: list[str] = []
    errors: list[str] = []

    def visit(path: str, fd: int, st: os.stat_result) -> bool:
        seen.append(path)
        if len(seen) == 1:
            for i in range(10, 20):  # removed after the directory was read
                (tmp_path / f"f{i:02}").unlink()
        return True

    scan([str(tmp_path)], WalkOptions(), lambda p, exc: errors.append(p), visit)
    assert len(seen) == 10 and errors == []


def test_pseudo_file_systems_are_refused_by_name_and_skipped_inside_trees(
        tmp_path: Path) -> None:
    from memlock._cli_api import pseudo_file_systems as pseudo_devices

    proc_dev = os.stat("/proc/self/status").st_dev
    assert pseudo_devices().get(proc_dev) == "proc"  # from this system's mountinfo
    tree(tmp_path)
    os.symlink("/proc/self/status", tmp_path / "a" / "status-link")  # a procfs file
    os.symlink("/proc/self", tmp_path / "a" / "proc-link")           # a procfs tree
    found, errors = names(tmp_path, WalkOptions(follow_symlinks=True))
    assert found == ["a/hard.bin", "a/two.txt", "b/three.bin"] and errors == ["b/broken"]
    reasons: list[str] = []
    assert list(walk(["/proc/self/status", "/proc/self"], WalkOptions(),
                     lambda p, exc: reasons.append(f"{p}: {exc.strerror}"))) == []
    assert len(reasons) == 2 and all("proc file system" in r for r in reasons), reasons


def test_pseudo_devices_reads_mountinfo() -> None:
    from memlock._platform._procfs import pseudo_devices

    info = (b"22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
            b"23 28 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
            b"28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            b"40 28 0:35 / /dev/shm rw - tmpfs tmpfs rw\n"
            b"garbage line\n")
    assert pseudo_devices(info) == {os.makedev(0, 21): "proc", os.makedev(0, 22): "sysfs"}
    assert pseudo_devices(b"") == {}


def test_the_holder_counts_its_open_descriptors() -> None:
    from memlock._platform import BACKEND

    before = BACKEND.open_descriptors()
    assert before is not None and before >= 3
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(5)]
    try:
        assert BACKEND.open_descriptors() == before + 5
    finally:
        for fd in fds:
            os.close(fd)


def test_range_errors_quote_the_whole_range() -> None:
    import pytest

    from memlock._units import parse_size
    from memlock.cli._arguments import parse_range

    assert parse_range("-5", parse_size) == (0, 5)
    assert parse_range("1K-", parse_size) == (1024, None)
    for text in ("-1-", "1-2-3", "a-b", ""):
        with pytest.raises(ValueError, match=f"not a range: '{text}'"):
            parse_range(text, parse_size)
    with pytest.raises(ValueError, match="before its start"):
        parse_range("8K-4K", parse_size)
