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
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ._pages import PAGE_SIZE
from ._units import format_size

__all__ = ["FileEntry", "Planned", "Progress", "WalkOptions", "parse_range", "plan", "read_list",
           "walk"]


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


@dataclass(frozen=True)
class Planned:
    """A file to lock: the walk's entry and the clamped byte range."""

    entry: FileEntry
    offset: int
    length: int

    @property
    def charge(self) -> int:
        """Bytes of whole pages that locking it charges."""
        if self.length == 0:
            return 0
        first = self.offset // PAGE_SIZE
        return (-(-(self.offset + self.length) // PAGE_SIZE) - first) * PAGE_SIZE


def plan(entries: Iterable[FileEntry], rng: tuple[int, int | None] | None) -> list[Planned]:
    """Clamp the range to each file (vmtouch ``-p`` semantics)."""
    out = []
    for e in entries:
        start, end = rng if rng is not None else (0, None)
        off = min(start, e.size)
        stop = e.size if end is None else min(end, e.size)
        out.append(Planned(e, off, max(0, stop - off)))
    return out


class Progress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, total_bytes: int, total_files: int, enabled: bool) -> None:
        self.total = max(1, total_bytes)
        self.files = total_files
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._shown = False

    def update(self, done_bytes: int, done_files: int) -> None:
        """Redraw at most ten times a second."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done_bytes < self.total:
            return
        self._last = now
        frac = min(1.0, done_bytes / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {frac * 100:5.1f}% {format_size(done_bytes)}/"
            f"{format_size(self.total)} {done_files}/{self.files} files"
        )
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """Clear the line."""
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False
