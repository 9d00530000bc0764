"""Walk files and directories the way vmtouch does: the file commands' and the file API's walk.

* Directories are walked recursively; symbolic links named on the command line are
  followed (like ``find -H``), links inside trees only with ``follow_symlinks``.
* ``exclude`` globs prune files and directories by base name (vmtouch ``-i``); ``include``
  globs keep only files whose base name matches (vmtouch ``-I``).
* Hard links are counted once: a file is identified by (st_dev, st_ino).
* ``one_file_system`` does not descend into other file systems (vmtouch ``-F``).
* Files of pseudo file systems (procfs, sysfs ...: see ``Backend.pseudo_file_systems``) are never
  visited: named, they are an error; met inside a tree, they are skipped, as other
  non-regular files are.
"""

from __future__ import annotations

import errno
import operator
import os
import stat
from collections.abc import Callable, Iterable, Iterator

from ._pages import PAGE_SIZE, page_range
from ._platform import BACKEND
from ._records import FrozenRecord

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R")

__all__ = ["FileEntry", "Planned", "WalkOptions", "plan", "scan", "scan_rows", "walk"]


class FileEntry(FrozenRecord):
    """One regular file found by :func:`walk`."""

    __slots__ = ("dev", "ino", "mtime_ns", "path", "size")
    __match_args__ = ("path", "dev", "ino", "size", "mtime_ns")

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int

    def __init__(self, path: str, dev: int, ino: int, size: int, mtime_ns: int) -> None:
        # Not self._fill(): one FileEntry per file of the tree, on resident's hot path,
        # where the loop in _fill costs about 0.5 µs an entry more.
        _set = object.__setattr__
        _set(self, "path", path)
        _set(self, "dev", dev)
        _set(self, "ino", ino)
        _set(self, "size", size)
        _set(self, "mtime_ns", mtime_ns)

    @property
    def identity(self) -> tuple[int, int, int, int]:
        """What changes when the file is replaced or rewritten."""
        return (self.dev, self.ino, self.size, self.mtime_ns)


class WalkOptions:
    """Filters of :func:`walk` and :func:`scan` (a plain class: no :mod:`dataclasses` import).

    Attributes:
        follow_symlinks: Follow symbolic links found inside directories.
        one_file_system: Do not descend into directories of other file systems.
        include: Keep only files whose base name matches one of these globs.
        exclude: Skip files and directories whose base name matches one of these globs.
        max_size: Skip files larger than this many bytes (None: no limit).
    """

    __hash__ = None  # type: ignore[assignment]  # mutable, compares by value

    def __init__(self, follow_symlinks: bool = False, one_file_system: bool = False,
                 include: list[str] | None = None, exclude: list[str] | None = None,
                 max_size: int | None = None) -> None:
        self.follow_symlinks = follow_symlinks
        self.one_file_system = one_file_system
        self.include: list[str] = [] if include is None else include
        self.exclude: list[str] = [] if exclude is None else exclude
        self.max_size = max_size

    def _fields(self) -> tuple[bool, bool, list[str], list[str], int | None]:
        return (self.follow_symlinks, self.one_file_system, self.include, self.exclude,
                self.max_size)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._fields() == other._fields()
        return NotImplemented

    def __repr__(self) -> str:
        return (f"{self.__class__.__qualname__}(follow_symlinks={self.follow_symlinks!r}, "
                f"one_file_system={self.one_file_system!r}, include={self.include!r}, "
                f"exclude={self.exclude!r}, max_size={self.max_size!r})")

    def _compile(self) -> tuple[Callable[[str], object] | None, Callable[[str], object] | None]:
        def rx(globs: list[str]) -> Callable[[str], object] | None:
            if not globs:
                return None
            import fnmatch
            import re

            return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match

        return rx(self.include), rx(self.exclude)


OnError = Callable[[str, OSError], None]

def _pseudo_error(path: str, fs_type: str) -> OSError:
    return OSError(errno.EINVAL, f"not on disk: on a {fs_type} file system, whose files the "
                   "kernel makes up when they are read (nothing to keep in RAM)", path)


def walk(paths: Iterable[str], options: WalkOptions, on_error: OnError) -> Iterator[FileEntry]:
    """Regular files under ``paths``, each (dev, ino) once, in a stable order.

    ``on_error(path, exc)`` is called for paths that cannot be read; the walk goes on.
    The same walk as :func:`scan`, which does the work.
    """
    found: list[FileEntry] = []

    def visit(path: str, fd: int, st: os.stat_result) -> bool:
        found.append(FileEntry(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return True  # no descriptor needed: an unreadable file is still listed

    scan(paths, options, on_error, visit)
    return iter(found)


#: ``visit(path, fd, st)`` of :func:`scan`; ``fd`` is -1 when the file could not be opened.
Visit = Callable[[str, int, os.stat_result], bool]

_O_FILE = (os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
           | getattr(os, "O_NOCTTY", 0))
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIR = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_DIRECTORY", 0)
#: Open files relative to their directory's descriptor where the platform can.
_by_name = operator.attrgetter("name")
_AT = (os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd
       and os.scandir in os.supports_fd and bool(getattr(os, "O_DIRECTORY", 0)))


#: Errors that say this process ran out of descriptors (workers hold pipes: they may run
#: out where a serial scan would not).
_STARVED = (errno.EMFILE, errno.ENFILE)


class Share:
    """The part of a :func:`scan` that worker ``index`` of ``count`` does.

    A scan's files fall into *segments*: maximal runs of files read from one directory
    without entering or leaving another (each path given is a segment too). Every worker
    walks the whole directory structure, so all number the segments alike, but only opens
    and visits the files of its own segments (a hash of the number picks the worker, so
    every worker gets about as many directories as any other). Structural errors
    (a directory that cannot be read) are reported by worker 0 alone.

    Attributes:
        tops: ``os.stat`` of each path given to the scan (or the OSError it raised), made
            once before the workers start; None: the scan stats them itself.
        segment: The segment the scan is in now.
        walked: A hash of the directories entered so far, in order: workers whose walks
            differ (a directory made or removed meanwhile, descriptors running out at
            different depths) disagree on it, and their parts do not fit together.
        starved: This worker ran out of descriptors (EMFILE/ENFILE) somewhere.
    """

    def __init__(self, index: int, count: int,
                 tops: list[os.stat_result | OSError] | None = None) -> None:
        self.index = index
        self.count = count
        self.tops = tops
        self.segment = 0
        self.walked = 0
        self.starved = False

    def enter(self, segment: int, directory: tuple[str, int, int] | None = None) -> bool:
        """Note that ``segment`` begins (in ``directory``: path, st_dev, st_ino, if just
        entered); True if this worker visits its files.
        """
        self.segment = segment
        if directory is not None:  # forked workers share str hashes: comparable
            self.walked = hash((self.walked, directory))
        # Hashed, not segment % count: entering and leaving directories alternate, so
        # plain residues would hand every directory's files to the same worker.
        return (segment * 0x9E3779B1 >> 7) % self.count == self.index


def scan(paths: Iterable[str], options: WalkOptions, on_error: OnError, visit: Visit,
         share: Share | None = None) -> None:
    """The files of :func:`walk`, in the same order and with the same filters, each opened.

    For each regular file, calls ``visit(path, fd, st)`` with an O_RDONLY descriptor
    (closed when ``visit`` returns) and its fstat: one openat and one fstat per file,
    no second look-up by path. Directories are read through their own descriptors.

    A file that cannot be opened is looked at with lstat: if it is a regular file that
    passes the filters, ``visit(path, -1, st)`` is called, and when it returns False
    (it needed the descriptor) the open error goes to ``on_error``. An OSError raised
    by ``visit`` goes to ``on_error`` too; the scan goes on.

    With ``share``, only that worker's part of the files is visited (see :class:`Share`).
    """
    include, exclude = options._compile()
    pseudo = BACKEND.pseudo_file_systems()
    seen: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()
    max_size = options.max_size
    follow = options.follow_symlinks
    one_fs = options.one_file_system
    fstat, close, open_, isreg, isdir = os.fstat, os.close, os.open, stat.S_ISREG, stat.S_ISDIR
    o_nofollow = _O_FILE | _O_NOFOLLOW
    segment = 0
    owned = True  # this worker visits the files of the current segment

    def enter(directory: tuple[str, int, int] | None = None) -> None:
        """A new segment begins: a directory entered or returned to, or a path given."""
        nonlocal segment, owned
        segment += 1
        if share is not None:
            owned = share.enter(segment, directory)

    def dir_error(path: str, exc: OSError) -> None:
        if share is not None and exc.errno in _STARVED:
            share.starved = True  # each worker may run short at another depth
        if share is None or share.index == 0:
            on_error(path, exc)

    def accept(path: str, fd: int, st: os.stat_result, exc: OSError | None) -> None:
        if (max_size is not None and st.st_size > max_size) or st.st_dev in pseudo:
            return
        key = (st.st_dev, st.st_ino)  # each file once, whatever the names it is reached by
        if key in seen:
            return
        seen.add(key)
        try:
            if not visit(path, fd, st) and exc is not None:
                on_error(path, exc)
        except OSError as err:
            on_error(path, err)

    def unopened(path: str, target: str, follow: bool, dfd: int | None, exc: OSError,
                 found_in_dir: bool) -> None:
        """A file that cannot be opened: visit it with fd -1 if it is a regular file."""
        if found_in_dir and exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return  # removed since the directory was read, as find(1) treats it
        try:
            st = os.stat(target, dir_fd=dfd, follow_symlinks=follow)
        except OSError:
            on_error(path, exc)
            return
        if isreg(st.st_mode):
            accept(path, -1, st, exc)
        else:
            on_error(path, exc)

    def one(path: str, target: str, flags: int, dfd: int | None, found_in_dir: bool) -> None:
        """Open, fstat and visit a file that the directory says is regular."""
        try:
            fd = open_(target, flags, dir_fd=dfd)
        except OSError as exc:
            unopened(path, target, flags == _O_FILE, dfd, exc, found_in_dir)
            return
        try:
            st = fstat(fd)
            if isreg(st.st_mode):
                accept(path, fd, st, None)
        except OSError as exc:
            on_error(path, exc)
        finally:
            close(fd)

    def tree(top: str, top_dev: int) -> None:
        """Depth-first over ``top`` with an explicit stack: no recursion limit on depth.

        Subdirectories are opened relative to their parent's descriptor, without following
        a symbolic link unless asked to, and their identity comes from fstat of the opened
        descriptor: a directory swapped for a link mid-walk cannot lead outside the tree.
        """
        stack: list[tuple[Iterator[os.DirEntry[str]], int | None, str]] = []

        def push(path: str, dfd: int | None) -> None:
            try:
                it = os.scandir(dfd if dfd is not None else path)
                with it:
                    entries = sorted(it, key=_by_name)
            except OSError as exc:
                if dfd is not None:
                    close(dfd)
                dir_error(path, exc)
                return
            stack.append((iter(entries), dfd, path if path.endswith("/") else path + "/"))
            if share is None:
                enter()
            else:  # which directory this is, not only its name (a link re-pointed meanwhile)
                try:
                    st = fstat(dfd) if dfd is not None else os.stat(path)
                    enter((path, st.st_dev, st.st_ino))
                except OSError:
                    enter((path, -1, -1))

        try:
            top_fd = open_(top, _O_DIR) if _AT else None
        except OSError as exc:
            dir_error(top, exc)
            return
        push(top, top_fd)
        try:
            while stack:
                entries, dfd, prefix = stack[-1]
                e = next(entries, None)
                if e is None:
                    stack.pop()
                    if dfd is not None:
                        close(dfd)
                    if stack:
                        enter()
                    continue
                at = dfd is not None
                name = e.name
                if exclude is not None and exclude(name):
                    continue
                path = prefix + name
                try:
                    if e.is_file(follow_symlinks=False):
                        # The hot path over big trees (what one() and accept() do, inline).
                        if not owned or (include is not None and not include(name)):
                            continue
                        try:
                            fd = open_(name if at else path, o_nofollow, dir_fd=dfd)
                        except OSError as exc:
                            unopened(path, name if at else path, False, dfd, exc, True)
                            continue
                        try:
                            st = fstat(fd)
                            if not isreg(st.st_mode):
                                continue
                            if max_size is not None and st.st_size > max_size:
                                continue
                            if (one_fs and st.st_dev != top_dev) or st.st_dev in pseudo:
                                continue
                            key = (st.st_dev, st.st_ino)
                            if key in seen:
                                continue
                            seen.add(key)
                            visit(path, fd, st)
                        except OSError as exc:  # the file's own error: its owner reports it
                            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                                on_error(path, exc)
                        finally:
                            close(fd)
                        continue
                    link = e.is_symlink()
                    if link:
                        if not follow:
                            continue
                        try:
                            st = os.stat(name if at else path, dir_fd=dfd)
                        except OSError as exc:
                            if owned:
                                on_error(path, exc)  # a broken link is worth reporting
                            continue
                        if isreg(st.st_mode):
                            if owned and (include is None or include(name)) and not (
                                    one_fs and st.st_dev != top_dev):
                                one(path, name if at else path, _O_FILE, dfd, True)
                            continue
                        if not isdir(st.st_mode):
                            continue
                    elif not e.is_dir(follow_symlinks=False):
                        continue
                    sub: int | None = None
                    if at:
                        flags = _O_DIR if link else _O_DIR | _O_NOFOLLOW
                        sub = open_(name, flags, dir_fd=dfd)
                        st = fstat(sub)
                    else:
                        st = os.stat(path, follow_symlinks=link)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        dir_error(path, exc)
                    continue
                key = (st.st_dev, st.st_ino)
                if (one_fs and st.st_dev != top_dev) or key in seen_dirs or st.st_dev in pseudo:
                    if sub is not None:
                        close(sub)  # another file system, a loop through links, or /proc
                    continue
                seen_dirs.add(key)
                push(path, sub)
        finally:
            for _, dfd, _ in stack:
                if dfd is not None:
                    close(dfd)

    tops = share.tops if share is not None else None
    for k, path in enumerate(paths):
        enter()
        try:
            if tops is None:
                st = os.stat(path)
            else:
                top = tops[k]
                if isinstance(top, OSError):
                    raise top
                st = top
        except OSError as exc:
            if owned:
                on_error(path, exc)
            continue
        if not owned and not isdir(st.st_mode):
            continue  # another worker's file
        if st.st_dev in pseudo:
            if owned:
                on_error(path, _pseudo_error(path, pseudo[st.st_dev]))
            continue
        name = os.path.basename(path.rstrip("/")) or path
        if isdir(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            tree(path, st.st_dev)
        elif isreg(st.st_mode):
            if include is None or include(name):
                one(path, path, _O_FILE, None, False)
        else:
            on_error(path, OSError(22, "not a regular file or directory", path))


def scan_rows(paths: list[str], options: WalkOptions, on_error: OnError,
              measure: Callable[[str, int, os.stat_result], R | None], workers: int = 1,
              ) -> list[R]:
    """``measure(path, fd, st)`` of every file :func:`scan` visits, in its order.

    ``measure`` returns a row (plain tuples, ints and strings), or None where it needed the
    descriptor of a file that could not be opened (the open error is reported). With
    ``workers`` > 1 the files are shared among forked processes (:mod:`._fanout`) and the
    rows merged back: the same rows, in the same order, each file once.
    """
    if workers <= 1:
        rows: list[R] = []

        def visit(path: str, fd: int, st: os.stat_result) -> bool:
            row = measure(path, fd, st)
            if row is None:
                return False
            rows.append(row)
            return True

        scan(paths, options, on_error, visit)
        return rows

    from ._fanout import fan_out

    tops = [_stat_or_error(path) for path in paths]  # once, not once a worker

    def part(index: int, count: int) -> _Part[R]:
        share = _GroupingShare(index, count, tops)
        errors: list[tuple[int, str, int, str, str | None]] = []
        # Every file's identity goes back with its row or error: a file reached by two
        # names (hard links, bind mounts, followed links, repeated or overlapping paths)
        # may be in two workers' parts, and the merge keeps the first, as a serial scan.
        failed: list[tuple[int, int, int, int, str]] = []  # (segment, row index, dev, ino, path)

        def visit(path: str, fd: int, st: os.stat_result) -> bool:
            row = None
            try:
                row = measure(path, fd, st)
            finally:
                if row is None:  # raised, or needed the descriptor: an error of this file
                    failed.append((share.segment, len(share.rows), st.st_dev, st.st_ino,
                                   path))
            if row is None:
                return False
            share.rows.append(row)
            share.keys.append((st.st_dev, st.st_ino))
            return True

        def note_error(path: str, exc: OSError) -> None:
            if exc.errno in _STARVED:
                share.starved = True
            filename = exc.filename if isinstance(exc.filename, str) else None
            errors.append((share.segment, path, exc.errno or 0, exc.strerror or str(exc),
                           filename))

        scan(paths, options, note_error, visit, share)
        walk = (share.segment, share.walked, share.starved)
        return share.groups, failed, errors, walk

    parts = fan_out(part, workers)
    walks = {walk for *_, walk in parts}
    if len(walks) > 1 or any(starved for _, _, starved in walks):
        # The workers walked different trees (changed meanwhile), or ran short of
        # descriptors, each where its own pipes left it: redo the scan in one process.
        return scan_rows(paths, options, on_error, measure, 1)
    failures: dict[int, list[tuple[int, int, int, str]]] = {}
    for segment, i, dev, ino, path in sorted(f for _, fs, _, _ in parts for f in fs):
        failures.setdefault(segment, []).append((i, dev, ino, path))
    seen: set[tuple[int, int]] = set()
    dropped_errors: set[tuple[int, str]] = set()

    def fail(segment: int, dev: int, ino: int, path: str) -> None:
        if (dev, ino) in seen:
            dropped_errors.add((segment, path))
        seen.add((dev, ino))

    out: list[R] = []
    for segment, rows, keys in sorted((g for groups, _, _, _ in parts for g in groups),
                                      key=_by_segment):
        pending = failures.pop(segment, [])
        if not pending and seen.isdisjoint(keys) and len(set(keys)) == len(keys):
            seen.update(keys)  # the common case, at C speed: nothing seen twice
            out += rows
            continue
        for i, row in enumerate(rows):
            while pending and pending[0][0] <= i:  # a failure before this row
                fail(segment, *pending.pop(0)[1:])
            key = keys[i]
            if key not in seen:
                seen.add(key)
                out.append(row)
        for _, dev, ino, path in pending:
            fail(segment, dev, ino, path)
    for segment, pending in sorted(failures.items()):  # segments without rows
        for _, dev, ino, path in pending:
            fail(segment, dev, ino, path)
    # Errors in scan order: by segment, then by name (a segment's entries come sorted).
    for segment, path, err, text, filename in sorted(
            (e for _, _, es, _ in parts for e in es), key=_by_segment_and_path):
        if (segment, path) not in dropped_errors:
            on_error(path, OSError(err, text, filename))
    return out


if TYPE_CHECKING:
    #: One worker's part of :func:`scan_rows`: its (segment, rows, identities) groups,
    #: the files it could not measure (segment, row index, dev, ino, path), its errors
    #: (segment, path, errno, text, filename) and what its walk looked like.
    _Part = tuple[list[tuple[int, list[R], list[tuple[int, int]]]],
                  list[tuple[int, int, int, int, str]],
                  list[tuple[int, str, int, str, str | None]], tuple[int, int, bool]]


class _GroupingShare(Share):
    """A :class:`Share` that opens a new list of rows for each segment it owns."""

    def __init__(self, index: int, count: int,
                 tops: list[os.stat_result | OSError] | None = None) -> None:
        super().__init__(index, count, tops)
        self.rows: list[Any] = []
        self.keys: list[tuple[int, int]] = []
        self.groups: list[tuple[int, list[Any], list[tuple[int, int]]]] = [
            (0, self.rows, self.keys)]

    def enter(self, segment: int, directory: tuple[str, int, int] | None = None) -> bool:
        owned = super().enter(segment, directory)
        if owned:
            self.rows = []
            self.keys = []
            self.groups.append((segment, self.rows, self.keys))
        return owned


def _stat_or_error(path: str) -> os.stat_result | OSError:
    try:
        return os.stat(path)
    except OSError as exc:
        return exc


_by_segment = operator.itemgetter(0)
_by_segment_and_path = operator.itemgetter(0, 1)


class Planned(FrozenRecord):
    """A file to lock: the walk's entry and the clamped byte range (immutable)."""

    __slots__ = ("entry", "length", "offset")
    __match_args__ = ("entry", "offset", "length")

    entry: FileEntry
    offset: int
    length: int

    def __init__(self, entry: FileEntry, offset: int, length: int) -> None:
        self._fill(entry, offset, length)

    @property
    def charge(self) -> int:
        """Bytes of whole pages that locking it charges."""
        return page_range(self.offset, self.length)[1] * PAGE_SIZE


def plan(entries: Iterable[FileEntry], rng: tuple[int, int | None] | None) -> list[Planned]:
    """Clamp the range to each file (vmtouch ``-p`` semantics)."""
    out = []
    for e in entries:
        start, end = rng if rng is not None else (0, None)
        off = min(start, e.size)
        stop = e.size if end is None else min(end, e.size)
        out.append(Planned(e, off, max(0, stop - off)))
    return out
