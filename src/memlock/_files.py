"""Files kept resident in RAM: lock_file, residency, touch, evict.

Hazards and how they are met:

* A writable private mapping copies every locked page into anonymous memory, so files are
  mapped **read-only and shared** (``mmap.ACCESS_READ``): locking adds no private copies.
* A plain load from a mapped page of a file truncated under us raises SIGBUS and kills the
  process. Nothing here ever reads a mapping: residency comes from cachestat(2) (no
  mapping at all) or mincore(2) (which never faults); touch uses MADV_POPULATE_READ (errors
  come back as errno) or ``pread``; locking is mlock, which reports ENOMEM past EOF.
* Locks go through :func:`memlock.lock`, so they nest with every other lock of the process
  and are all or nothing; runs of 64 MiB and more are locked in parallel chunks.
* mmap refuses a length past EOF, so the mincore mappings stop at the end of the file
  (the last page may be partial); "refused" means "shrank" only if fstat says so.
* The kernel hides the page cache of a file from a user who neither owns it nor may write
  it: cachestat answers EPERM and mincore calls every page resident. residency() then
  reports that figure marked as an upper bound (``exact`` False), and touch populates
  everything.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterable

from ._buffer import pin
from ._context import ReleasedOnExit
from ._lock import Lock, lock
from ._pages import PAGE_SIZE, as_size, page_range
from ._platform import BACKEND
from ._records import FrozenRecord
from ._threads import run_parallel
from .errors import MemlockError

__all__ = ["LockedFile", "Residency", "cached_pages_or_bound", "evict", "evict_fd", "lock_fd",
           "lock_file", "open_regular", "path_str", "residency", "resident_runs", "touch",
           "touch_fd"]

StrPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]
#: ``on_error(path, exc)`` of the tree walks.
OnError = Callable[[str, OSError], None]

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import TypeVar

    from ._profile import Profile
    from ._trees import FileTotals

    R = TypeVar("R")

#: Work is split into chunks of this size for parallel population and residency windows.
CHUNK_BYTES = 32 * 2**20
#: mincore windows (address space mapped at once when cachestat is missing).
WINDOW_BYTES = 1 << 30
# O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files).
_O_FLAGS = (os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
            | getattr(os, "O_NOCTTY", 0))

#: mincore sets bit 0 for a resident page (BSDs set more bits): map odd bytes to 1.
_ODD = bytes(i & 1 for i in range(256))
#: Cleared when the OS answers ENOSYS (no cachestat: mincore; no populate call: pread).
_cachestat_ok = True
_populate_ok = True


def path_str(path: object) -> str:
    """``path`` as a str, or TypeError before any system call."""
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be str, bytes or os.PathLike, not {type(path).__name__}")
    p = os.fspath(path)
    return os.fsdecode(p)


def open_regular(path: str) -> tuple[io.FileIO, os.stat_result]:
    """A regular file opened read-only, and its fstat.

    The descriptor is owned by a file object from the moment it exists (opened by C code,
    closed when the object dies), so no interrupt can leak it. Things that are not regular
    files are refused by ``stat`` before they are opened (opening a FIFO would wait for a
    writer), and the file opened is checked to be the one that was stat'ed.
    """
    before = os.stat(path)
    _check_regular(before, path)
    f = io.FileIO(path, "r")
    try:
        st = os.fstat(f.fileno())
        _check_regular(st, path)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise OSError(errno.ESTALE, "replaced while it was opened", path)
    except BaseException:
        f.close()
        raise
    return f, st


def _check_regular(st: os.stat_result, path: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", path)


def _range(size: int, offset: object, length: object) -> tuple[int, int]:
    """Validated (offset, length) inside a file of ``size`` bytes."""
    off = as_size(offset, "offset")
    n = None if length is None else as_size(length, "length")
    if off > size:
        raise ValueError(f"offset {off} is beyond the end of the file ({size} bytes)")
    if n is None:
        n = size - off
    elif n > size - off:
        raise ValueError(f"offset {off} + length {n} is beyond the end of the file ({size} bytes)")
    return off, n


# -- residency ---------------------------------------------------------------------------


class Residency(FrozenRecord):
    """How much of a file (or of a range of it) is in the page cache.

    Immutable; compares and hashes by its fields (like a frozen dataclass, without the
    import cost of :mod:`dataclasses` on the ``memlock resident`` path).

    Attributes:
        path: The file, as given.
        size_bytes: Bytes examined: the file size, or the range's length.
        pages: Pages covering those bytes.
        resident_pages: How many of them are in the page cache now.
        exact: False where the kernel hides the file's page cache from this process
            (Linux: not its owner, may not write it, no CAP_FOWNER): ``resident_pages``
            is then an upper bound (every page), the only figure the kernel gives.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = ("exact", "pages", "path", "resident_pages", "size_bytes")
    __match_args__ = ("path", "size_bytes", "pages", "resident_pages", "exact")

    path: str
    size_bytes: int
    pages: int
    resident_pages: int
    exact: bool

    def __init__(self, path: str, size_bytes: int, pages: int, resident_pages: int,
                 exact: bool = True) -> None:
        self._fill(path, size_bytes, pages, resident_pages, exact)

    @property
    def resident_bytes(self) -> int:
        """Resident pages in bytes (never more than ``size_bytes`` rounded up to pages)."""
        return self.resident_pages * PAGE_SIZE

    @property
    def percent(self) -> float:
        """Resident share in percent (100.0 for an empty file)."""
        return 100.0 if self.pages == 0 else 100.0 * self.resident_pages / self.pages


#: Why a residency figure is refused where the kernel hides it (see :func:`_hidden`).
HIDDEN_REASON = ("the kernel shows which pages are cached only to the file's owner or a user "
                 "who may write it (run as the owner or as root)")


def _hidden() -> PermissionError:
    """The error for a file whose page-cache state the kernel hides from this process.

    Since Linux 5.0 (a page-cache side channel was closed) mincore(2) reports *every*
    page resident, and cachestat(2) answers EPERM, unless the caller owns the file, may
    write it, or has CAP_FOWNER. Reading with RWF_NOWAIT is no way round: on a miss it
    starts readahead, so it loads the file it measures. A figure here would be a lie.
    """
    return PermissionError(errno.EPERM, HIDDEN_REASON)


def _cached_pages_cachestat(fd: int, first: int, count: int) -> int | None:
    """Cached pages of [first, first+count) by cachestat; None where it is not available.

    Raises:
        PermissionError: The kernel hides this file's page cache from us (EPERM).
    """
    global _cachestat_ok
    if not _cachestat_ok:
        return None
    n, err = BACKEND.cached_pages(fd, first * PAGE_SIZE, count * PAGE_SIZE)
    if err == 0:
        return min(n, count)
    if err == errno.EPERM:
        raise _hidden()
    if err == errno.ENOSYS:
        _cachestat_ok = False
    return None  # EBADF/EOPNOTSUPP (e.g. some special files): fall back to mincore


def _map_to_eof(fd: int, first: int, count: int) -> mmap.mmap | None:
    """A read-only map of pages [first, first+count) of the file, cut at its end.

    The last page may be partial: only bytes before EOF are mapped (the kernel still maps
    the whole page, so mincore and madvise see it). None when the file now ends at or
    before page ``first``.
    """
    start = first * PAGE_SIZE
    while True:
        nbytes = min(count * PAGE_SIZE, os.fstat(fd).st_size - start)
        if nbytes <= 0:
            return None
        try:
            return mmap.mmap(fd, nbytes, access=mmap.ACCESS_READ, offset=start)
        except ValueError:  # mmap's own size check: shrank since our fstat?
            if os.fstat(fd).st_size >= start + nbytes:
                raise  # not a truncation: a real error
            # truncated between the two fstat calls: map what is left


def _mincore_windows(
    fd: int, first: int, count: int, visit: Callable[[int, bytearray], None]
) -> None:
    """Call ``visit(first_page, vec)`` for mincore vectors over windows of a read-only map.

    Pages past the end of the file (it shrank) are not visited.

    Raises:
        PermissionError: The kernel would report every page resident (see :func:`_hidden`).
    """
    if not BACKEND.page_cache_visible(fd):
        raise _hidden()
    window_pages = WINDOW_BYTES // PAGE_SIZE
    page = first
    end = first + count
    while page < end:
        n = min(window_pages, end - page)
        m = _map_to_eof(fd, page, n)
        if m is None:
            return
        mapped = -(-len(m) // PAGE_SIZE)
        try:
            view, address, _ = pin(m)
            try:
                vec = bytearray(mapped)
                BACKEND.mincore(address, mapped * PAGE_SIZE, vec)
                visit(page, vec)
            finally:
                view.release()
        finally:
            m.close()
        if mapped < n:
            return  # the file ends inside this window
        page += n


def _cached_pages(fd: int, first: int, count: int) -> int:
    """Resident pages of [first, first+count) of the file open on ``fd``.

    Raises:
        PermissionError: The kernel hides this file's page cache from us (see
            :func:`_hidden`).
    """
    if count == 0:
        return 0
    n = _cached_pages_cachestat(fd, first, count)
    if n is not None:
        return n
    total = 0

    def add(_page: int, vec: bytearray) -> None:
        nonlocal total
        total += vec.translate(_ODD).count(1)

    _mincore_windows(fd, first, count, add)
    return total


def resident_runs(fd: int, first: int, count: int) -> list[tuple[int, int]]:
    """(first page, pages) of each run of resident pages of [first, first+count), in order.

    cachestat answers the all-or-nothing cases without a mapping; else mincore.

    Raises:
        PermissionError: The kernel hides this file's page cache from us (see
            :func:`_hidden`).
    """
    if count == 0:
        return []
    n = _cached_pages_cachestat(fd, first, count)
    if n == 0:
        return []
    if n == count:
        return [(first, count)]
    runs: list[tuple[int, int]] = []

    def collect(base: int, vec: bytearray) -> None:
        bits = vec.translate(_ODD)
        i, end = 0, len(bits)
        while True:
            i = bits.find(1, i)
            if i < 0:
                return
            j = bits.find(0, i)
            j = end if j < 0 else j
            if runs and runs[-1][0] + runs[-1][1] == base + i:  # across windows
                runs[-1] = (runs[-1][0], runs[-1][1] + j - i)
            else:
                runs.append((base + i, j - i))
            i = j

    _mincore_windows(fd, first, count, collect)
    return runs


def cached_pages_or_bound(fd: int, first: int, count: int) -> tuple[int, bool]:
    """``(resident pages, exact)`` of [first, first+count).

    :func:`_cached_pages`, or, where the kernel hides the file's page cache from this
    process, the only figure it gives (every page resident, as mincore says) with
    ``exact`` False: an upper bound.
    """
    try:
        return _cached_pages(fd, first, count), True
    except PermissionError:
        return count, False


def _residency_fd(path: str, fd: int, size: int, offset: int, length: int) -> Residency:
    first, count = page_range(offset, length)
    return Residency(path, length, count, *cached_pages_or_bound(fd, first, count))


def residency(path: StrPath, *, offset: int = 0, length: int | None = None,
              include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
              max_size: int | str | None = None, follow_symlinks: bool = False,
              one_file_system: bool = False, on_error: OnError | None = None) -> Residency:
    """How much of ``path`` (a file, or a directory tree) is in the page cache, without reading.

    Uses cachestat(2) where the kernel has it (Linux 6.5+), else mincore(2) over windows of
    a read-only mapping up to the end of the file (neither faults a page in).

    A directory is walked as ``memlock resident`` walks it (the keywords after ``length``
    are its filters, see :data:`TREE_ARGS`) and the result is a :class:`memlock.FileTotals`
    (a Residency with ``files``): the totals over its files.

    Args:
        path: A regular file, or a directory.
        offset: First byte of the range (default: the start); in a tree, of each file,
            clamped to it (as ``--range``).
        length: Bytes of the range; None means to the end of the file.
        include: In a tree: only files whose base name matches one of these globs
            (``memlock resident --include``).
        exclude: In a tree: skip files and directories whose base name matches one of
            these globs (``--exclude``).
        max_size: In a tree: skip files larger than this (bytes, or a size such as "4M";
            ``--max-size``).
        follow_symlinks: In a tree: follow symbolic links inside it (``--follow-symlinks``).
        one_file_system: In a tree: do not descend into other file systems
            (``--one-file-system``).
        on_error: In a tree: ``on_error(path, exc)`` is called for each file or
            directory that cannot be read, and the walk goes on; None: the walk goes
            on all the same and the first such error is raised at its end.

    The tree keywords apply to the files found in a directory, not to a file named
    directly; :func:`touch` and :func:`evict` take them too.

    Raises:
        TypeError: Bad argument types.
        ValueError: The range goes beyond the end of the file.
        FileNotFoundError: No such file. Other OS errors keep their OSError subclass.

    Where the kernel hides which pages are cached (Linux: from a user who neither owns
    the file nor may write it, nor has CAP_FOWNER; cachestat answers EPERM and mincore
    calls every page resident), the result has ``exact`` False and counts every page
    resident: an upper bound. Run as the owner or root for the real figure.
    """
    return _file_or_tree(path, offset, length, _residency_fd, None, on_error, include,
                         exclude, max_size, follow_symlinks, one_file_system)


def _file_or_tree(path: object, offset: object, length: object,
                  one: Callable[[str, int, int, int, int], R], tree_action: str | None,
                  on_error: OnError | None, include: object, exclude: object,
                  max_size: object, follow_symlinks: object,
                  one_file_system: object) -> R | FileTotals:
    """``one(path, fd, size, offset, length)`` of a file, or a directory's totals.

    The range is checked against the file; a directory's files get ``tree_action``
    ("touch", "evict" or None) and are measured after it.
    """
    p = path_str(path)
    if on_error is not None and not callable(on_error):
        raise TypeError(f"on_error must be callable, not {type(on_error).__name__}")
    if not (include is None and exclude is None and max_size is None
            and follow_symlinks is False and one_file_system is False):
        from ._trees import walk_options

        # Checked for a file too (where they do not apply): bad values are bad values.
        walk_options(include, exclude, max_size, follow_symlinks, one_file_system)  # type: ignore[arg-type]
    try:
        f, st = open_regular(p)
    except IsADirectoryError:
        from ._trees import tree_totals

        return tree_totals(p, offset=offset, length=length, action=tree_action,
                           on_error=on_error,
                           filters={"include": include, "exclude": exclude,
                                    "max_size": max_size, "follow_symlinks": follow_symlinks,
                                    "one_file_system": one_file_system})
    with f:
        off, n = _range(st.st_size, offset, length)
        return one(p, f.fileno(), st.st_size, off, n)


# -- touch and evict ---------------------------------------------------------------------


def _missing_chunks(fd: int, first: int, count: int, chunk_pages: int) -> list[tuple[int, int]]:
    """(first page, pages) of the chunks of [first, first+count) not fully resident.

    Where the kernel hides the file's page cache, every chunk counts as missing.
    """
    out: list[tuple[int, int]] = []
    page, end = first, first + count
    try:
        while page < end:
            n = min(chunk_pages, end - page)
            cached = _cached_pages_cachestat(fd, page, n)
            if cached is None:  # no cachestat: one pass of mincore over the whole range
                return _missing_chunks_mincore(fd, first, count, chunk_pages)
            if cached < n:
                out.append((page, n))
            page += n
    except PermissionError:  # hidden: populate it all (cheap where it is cached)
        return [(p, min(chunk_pages, end - p)) for p in range(first, end, chunk_pages)]
    return out


def _missing_chunks_mincore(fd: int, first: int, count: int,
                            chunk_pages: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []

    def collect(base: int, vec: bytearray) -> None:
        for k in range(0, len(vec), chunk_pages):
            part = vec[k : k + chunk_pages]
            if part.translate(_ODD).count(1) < len(part):
                out.append((base + k, len(part)))

    _mincore_windows(fd, first, count, collect)
    return out


def _run_parallel(jobs: list[tuple[int, int]], work: Callable[[int, int], None],
                  progress: Callable[[int], None] | None = None) -> None:
    """Run ``work(first_page, pages)`` over ``jobs`` from a few threads; re-raise errors."""
    run_parallel(jobs, lambda job: work(*job), min(os.cpu_count() or 1, 8),
                 None if progress is None else lambda job: progress(job[1] * PAGE_SIZE))


def _populate_pread(fd: int, first: int, count: int) -> None:
    """Read pages [first, first+count) with pread (releases the GIL); stops at EOF."""
    buf = bytearray(min(count * PAGE_SIZE, 1 << 20))
    pos, end = first * PAGE_SIZE, (first + count) * PAGE_SIZE
    while pos < end:
        got = os.preadv(fd, [memoryview(buf)[: min(len(buf), end - pos)]], pos)
        if got <= 0:
            return
        pos += got


def touch_fd(fd: int, size: int, offset: int, length: int,
             progress: Callable[[int], None] | None = None, skip_resident: bool = True) -> None:
    """Bring [offset, offset+length) of the file on ``fd`` into the page cache.

    ``progress(nbytes)`` is called as parts become resident (from worker threads).
    Without ``skip_resident``, chunks the page cache already counts (pages still being
    read among them, after :meth:`prefetch <memlock._platform.Backend.prefetch>`) are
    populated too, so that this returns once they are all read.
    """
    first, count = page_range(offset, length)
    if count == 0:
        return
    chunk = CHUNK_BYTES // PAGE_SIZE
    if skip_resident:
        jobs = _missing_chunks(fd, first, count, chunk)
    else:
        jobs = [(p, min(chunk, first + count - p)) for p in range(first, first + count, chunk)]
    if progress is not None:
        progress(length - sum(n for _, n in jobs) * PAGE_SIZE)
    if not jobs:
        return
    if _populate_ok:
        m_first = jobs[0][0]
        m = _map_to_eof(fd, m_first, jobs[-1][0] + jobs[-1][1] - m_first)
        if m is not None:  # else it shrank since fstat: read what is left
            view, address, _ = pin(m)
            try:
                base = address - m_first * PAGE_SIZE
                map_end = m_first * PAGE_SIZE + len(m)
                populate_read = BACKEND.file_populator()

                def populate(page: int, pages: int) -> None:
                    global _populate_ok
                    pages = min(pages, -(-map_end // PAGE_SIZE) - page)
                    if pages <= 0:
                        return  # past the mapping: the file shrank before it was made
                    err = populate_read(base + page * PAGE_SIZE, pages * PAGE_SIZE)
                    if err in (errno.EINVAL, errno.ENOSYS):  # kernel before 5.14
                        _populate_ok = False
                        _populate_pread(fd, page, pages)
                    elif err == errno.EFAULT:  # past EOF: did the file shrink under us?
                        if os.fstat(fd).st_size >= min((page + pages) * PAGE_SIZE, map_end):
                            raise OSError(err, "MADV_POPULATE_READ: cannot read the file")
                    elif err:
                        raise OSError(err, f"MADV_POPULATE_READ: {os.strerror(err)}")

                _run_parallel(jobs, populate, progress)
            finally:
                view.release()
                m.close()
            return
    _run_parallel(jobs, lambda page, pages: _populate_pread(fd, page, pages), progress)


def touch(path: StrPath | Profile, *, offset: int = 0, length: int | None = None,
          include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
          max_size: int | str | None = None, follow_symlinks: bool = False,
          one_file_system: bool = False, on_error: OnError | None = None,
          ) -> FileTotals | None:
    """Bring ``path`` (or a range of it) into the page cache without locking it.

    Chunks already resident are skipped (where the kernel shows which: see
    :func:`residency`); the others are populated from several threads
    with MADV_POPULATE_READ (Linux 5.14+; a truncated file gives an error, never SIGBUS),
    else read with ``pread``.

    A directory is walked as ``memlock touch`` walks it (the filters of
    :func:`residency`) and the totals after touching are returned (a
    :class:`memlock.FileTotals`). A :class:`memlock.Profile` brings back exactly its
    ranges; its files that changed or vanished since it was saved are left alone and
    listed in the totals' ``skipped`` (``on_error`` gets those that cannot be read; a
    range or a filter with a profile is a TypeError). One file: returns None.

    Raises:
        FileNotFoundError: No such file. Other OS errors keep their OSError subclass.
        ValueError: The range goes beyond the end of the file.
    """
    from ._profile import Profile

    if isinstance(path, Profile):
        from ._trees import refuse_walk_arguments

        refuse_walk_arguments(offset=offset, length=length, include=include, exclude=exclude,
                              max_size=max_size, follow_symlinks=follow_symlinks,
                              one_file_system=one_file_system)
        return path.restore(on_error)
    def one(p: str, fd: int, size: int, off: int, n: int) -> None:
        touch_fd(fd, size, off, n)

    return _file_or_tree(path, offset, length, one, "touch", on_error, include, exclude,
                         max_size, follow_symlinks, one_file_system)


def evict_fd(fd: int, offset: int, length: int) -> None:
    """Drop the clean, unlocked cached pages of [offset, offset+length) of the file on ``fd``.

    Raises:
        UnsupportedOperation: Where the OS cannot (macOS).
    """
    BACKEND.evict(fd, offset, length)


def evict(path: StrPath, *, offset: int = 0, length: int | None = None,
          include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
          max_size: int | str | None = None, follow_symlinks: bool = False,
          one_file_system: bool = False, on_error: OnError | None = None,
          ) -> FileTotals | None:
    """Drop the clean, unlocked pages of ``path`` from the page cache (POSIX_FADV_DONTNEED).

    Dirty pages are written back first by the kernel only if already under writeback;
    locked pages (by any process) stay. A directory is walked as ``memlock evict`` walks
    it (the filters of :func:`residency`) and the totals after evicting are returned (a
    :class:`memlock.FileTotals`); one file: returns None.

    Availability: Linux, FreeBSD, illumos (posix_fadvise); not macOS.

    Raises:
        FileNotFoundError: No such file. Other OS errors keep their OSError subclass.
        UnsupportedOperation: On macOS.
    """
    def one(p: str, fd: int, size: int, off: int, n: int) -> None:
        if n:
            evict_fd(fd, off, n)

    return _file_or_tree(path, offset, length, one, "evict", on_error, include, exclude,
                         max_size, follow_symlinks, one_file_system)


# -- lock_file ---------------------------------------------------------------------------


class LockedFile(ReleasedOnExit):
    """A file (or a range of it) mapped read-only and locked in RAM; a context manager.

    Returned by :func:`lock_file`. The mapping is never read by memlock, so a file
    truncated while held does not crash the holder: the kernel drops the pages. Reading
    it through :meth:`view` (or arrays built on a view) is zero-copy; a read of a page
    past the end of a file truncated meanwhile raises SIGBUS, as for any mapped file.

    Attributes:
        path: The file, as given.
        offset: First byte of the locked range.
        nbytes: Bytes of the file locked (the range's length; 0 for an empty file).
        onfault: Pages lock as they are first touched (MLOCK_ONFAULT).
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = ("_free_refs", "_lock", "_map", "_stat", "_unlocked", "nbytes", "offset",
                 "onfault", "path")

    def __init__(self, path: str, offset: int, nbytes: int, onfault: bool,
                 mapping: mmap.mmap | None, lk: Lock | None, st: os.stat_result) -> None:
        self.path = path
        self.offset = offset
        self.nbytes = nbytes
        self.onfault = onfault
        self._map = mapping
        self._lock = lk
        self._stat = st
        self._unlocked = False
        self._free_refs = 0  # see _mapping_refs (set by lock_fd)

    @property
    def locked(self) -> bool:
        """True until :meth:`unlock` (False in a forked child: locks are not inherited)."""
        if self._unlocked:
            return False
        return True if self._lock is None else self._lock.locked

    @property
    def address(self) -> int | None:
        """Address of the first locked page in this process (None for an empty range)."""
        return None if self._lock is None else self._lock.address

    @property
    def identity(self) -> tuple[int, int, int, int]:
        """(st_dev, st_ino, st_size, st_mtime_ns) of the file when it was locked."""
        s = self._stat
        return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns)

    def view(self) -> memoryview:
        """A read-only memoryview of the locked bytes (the whole range), with no copy.

        ``numpy.frombuffer``, ``torch.frombuffer`` and slicing build on it zero-copy: their
        data lie in the locked, shared mapping. While a view, or anything made from one
        (slices, arrays), is alive, :meth:`unlock` raises BufferError (as ``mmap.close()``
        does); release it with ``del`` or ``view.release()``. On Python 3.12+,
        ``memoryview(locked_file)`` gives the same view.

        Raises:
            ValueError: The LockedFile is unlocked.
        """
        m = self._map
        if m is None:
            if self._unlocked:
                raise ValueError(f"{self!r} is unlocked: it has no view")
            return memoryview(b"")  # an empty range maps nothing
        start = self.offset % mmap.ALLOCATIONGRANULARITY
        return memoryview(m)[start:start + self.nbytes]

    if sys.version_info >= (3, 12):

        def __buffer__(self, flags: int, /) -> memoryview:
            """PEP 688: ``memoryview(locked_file)``, ``numpy.frombuffer(locked_file)``."""
            if flags & 1:  # PyBUF_WRITABLE
                raise BufferError("a LockedFile is read-only")
            return self.view()

        def __release_buffer__(self, view: memoryview, /) -> None:
            view.release()

    def unlock(self) -> None:
        """Release the lock and unmap the file (idempotent).

        Raises:
            BufferError: A view (or a slice or array made from one) is alive; nothing
                changed.
        """
        if self._mapping_refs() > self._free_refs:
            raise BufferError(f"cannot unlock {self!r}: a view of it (or a slice or array "
                              "made from one) is alive")
        lk, m = self._lock, self._map
        if lk is not None:
            lk.unlock()
        if m is not None:
            m.close()
        # Last, in one statement: an interrupt above leaves a retryable unlock().
        self._lock, self._map, self._unlocked = None, None, True

    def _mapping_refs(self) -> int:
        """References to the mapping, counted the same way each time.

        With no view alive: this object's slot, the Lock's buffer export, and this frame's
        (``_free_refs``, counted once the LockedFile is made). Each live view adds its
        managed buffer's reference (slices and arrays made from a view share it).
        """
        m = self._map
        return 0 if m is None else sys.getrefcount(m)

    def _release_on_exit(self) -> None:
        self.unlock()

    def __del__(self) -> None:
        lk = getattr(self, "_lock", None)
        if lk is None or getattr(self, "_unlocked", True):
            return
        try:  # the warning may raise (-W error, a signal): release anyway
            if lk.locked:
                warnings.warn(f"unreleased {self!r}; use unlock() or a with block",
                              ResourceWarning, stacklevel=2, source=self)
        finally:
            # Never waits on the registry (a finalizer may run anywhere). If the lock
            # cannot go now, it goes when its Lock dies with this object (see
            # memlock._registry: Holds); the mapping stays until then.
            lk._release_soon()

    def __repr__(self) -> str:
        state = "locked" if self.locked else "unlocked"
        return (f"<memlock.LockedFile {state} path={self.path!r} offset={self.offset} "
                f"nbytes={self.nbytes}>")


def lock_fd(path: str, fd: int, st: os.stat_result, offset: int, length: int,
            onfault: bool) -> LockedFile:
    """Lock [offset, offset+length) of the regular file open on ``fd`` (``st``: its fstat).

    See :func:`lock_file`. The LockedFile does not need ``fd`` to stay open.
    """
    if length == 0:
        return LockedFile(path, offset, 0, onfault, None, None, st)
    map_off = offset - offset % mmap.ALLOCATIONGRANULARITY
    m = mmap.mmap(fd, offset + length - map_off, access=mmap.ACCESS_READ, offset=map_off)
    try:
        lk = lock(m, offset - map_off, length, onfault=onfault)
    except MemlockError:  # nothing holds the mapping now: unmap it at once
        m.close()
        raise
    # (Any other exception, an interrupt say, drops ``m``: it unmaps itself once the
    # frames that still export its buffer are gone.)
    locked = LockedFile(path, offset, length, onfault, m, lk, st)
    del m
    locked._free_refs = locked._mapping_refs()
    return locked


def lock_file(path: StrPath, *, offset: int = 0, length: int | None = None,
              onfault: bool = False) -> LockedFile:
    """Map ``path`` read-only and shared, and lock it (or a range of it) in RAM.

    All or nothing: on failure nothing stays locked. The pages are read from disk now
    (unless ``onfault``); runs of 64 MiB and more are locked from several threads. A shared
    read-only mapping adds no private copies: the locked pages are the page cache's.
    An empty file (or range) gives a LockedFile with ``nbytes`` 0 that holds nothing.

    Args:
        path: A regular file.
        offset: First byte to lock.
        length: Bytes to lock; None means to the end of the file.
        onfault: Lock pages as they are first touched (Linux MLOCK_ONFAULT).

    Raises:
        TypeError / ValueError: Bad arguments or a range beyond the end of the file.
        FileNotFoundError: No such file. Other OS errors keep their OSError subclass.
        LockPermissionError / LockLimitError / MemlockError: as :func:`memlock.lock`.
    """
    p = path_str(path)
    if not isinstance(onfault, bool):
        raise TypeError(f"onfault must be a bool, not {type(onfault).__name__}")
    f, st = open_regular(p)
    with f:
        off, n = _range(st.st_size, offset, length)
        return lock_fd(p, f.fileno(), st, off, n, onfault)
