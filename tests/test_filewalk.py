"""The tree walk behind resident/touch/evict/lock: what it lists, once each, in order."""

from __future__ import annotations

import os
from pathlib import Path

from memlock._filewalk import WalkOptions, walk


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
