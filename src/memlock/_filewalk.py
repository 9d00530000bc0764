"""Walk files and directories the way vmtouch does, for the ``memlock`` file commands.

* Directories are walked recursively; symbolic links named on the command line are
  followed (like ``find -H``), links inside trees only with ``follow_symlinks``.
* ``exclude`` globs prune files and directories by base name (vmtouch ``-i``); ``include``
  globs keep only files whose base name matches (vmtouch ``-I``).
* Hard links are counted once: a file is identified by (st_dev, st_ino).
* ``one_file_system`` does not descend into other file systems (vmtouch ``-F``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["FileEntry", "WalkOptions", "parse_range", "read_list", "walk"]


class FileEntry(NamedTuple):
    """One regular file found by :func:`walk`."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int

    @property
    def identity(self) -> tuple[int, int, int, int]:
        """What changes when the file is replaced or rewritten."""
        return (self.dev, self.ino, self.size, self.mtime_ns)


@dataclass
class WalkOptions:
    """Filters of :func:`walk`."""

    follow_symlinks: bool = False
    one_file_system: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    max_size: int | None = None

    def _compile(self) -> tuple[Callable[[str], object] | None, Callable[[str], object] | None]:
        def rx(globs: list[str]) -> Callable[[str], object] | None:
            if not globs:
                return None
            return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match

        return rx(self.include), rx(self.exclude)


OnError = Callable[[str, OSError], None]


def walk(paths: Iterable[str], options: WalkOptions, on_error: OnError) -> Iterator[FileEntry]:
    """Regular files under ``paths``, each (dev, ino) once, in a stable order.

    ``on_error(path, exc)`` is called for paths that cannot be read; the walk goes on.
    """
    include, exclude = options._compile()
    seen: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()
    max_size = options.max_size

    def accept(path: str, name: str, st: os.stat_result) -> FileEntry | None:
        if include is not None and not include(name):
            return None
        if max_size is not None and st.st_size > max_size:
            return None
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen:
                return None
            seen.add(key)
        return FileEntry(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def tree(top: str, top_dev: int) -> Iterator[FileEntry]:
        try:
            it = os.scandir(top)
        except OSError as exc:
            on_error(top, exc)
            return
        with it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = e.name
            if exclude is not None and exclude(name):
                continue
            try:
                if e.is_symlink():
                    if not options.follow_symlinks:
                        continue
                    st = os.stat(e.path)
                elif e.is_dir(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                else:
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        found = accept(e.path, name, st)
                        if found is not None:
                            yield found
                    continue
            except OSError as exc:
                on_error(e.path, exc)
                continue
            if stat.S_ISDIR(st.st_mode):
                if options.one_file_system and st.st_dev != top_dev:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    continue  # a loop through symbolic links
                seen_dirs.add(key)
                yield from tree(e.path, top_dev)
            elif stat.S_ISREG(st.st_mode):
                found = accept(e.path, name, st)
                if found is not None:
                    yield found

    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            on_error(path, exc)
            continue
        name = os.path.basename(path.rstrip("/")) or path
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            yield from tree(path, st.st_dev)
        elif stat.S_ISREG(st.st_mode):
            found = accept(path, name, st)
            if found is not None:
                yield found
        else:
            on_error(path, OSError(22, "not a regular file or directory", path))


def parse_range(text: str, parse_size: Callable[[str], int]) -> tuple[int, int | None]:
    """``START-END`` (either side may be empty; END exclusive) as (start, end or None).

    A single size ``N`` means ``0-N`` (vmtouch ``-p``).

    Raises:
        ValueError: not a range, or END before START.
    """
    text = text.strip()
    if "-" not in text:
        return 0, parse_size(text)
    lo, _, hi = text.partition("-")
    start = parse_size(lo) if lo.strip() else 0
    end = parse_size(hi) if hi.strip() else None
    if end is not None and end < start:
        raise ValueError(f"range end {end} is before its start {start}")
    return start, end


def read_list(source: str, nul: bool) -> list[str]:
    """Paths from a list file (``-`` for stdin), one a line or NUL-separated."""
    if source == "-":
        import sys

        data = sys.stdin.buffer.read()
    else:
        with open(source, "rb") as f:
            data = f.read()
    parts = data.split(b"\0") if nul else data.splitlines()
    return [os.fsdecode(p) for p in parts if p]
