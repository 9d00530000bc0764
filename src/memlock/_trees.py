"""Many files at once: directory trees for residency/touch/evict, lock_files and LockedFiles.

Hazards and how they are met:

* Trees are walked by :mod:`memlock._walk`, the walk of the ``memlock`` file commands, with
  the same filters (``include``, ``exclude``, ``max_size``, ``follow_symlinks``,
  ``one_file_system``): the library and the CLI see the same files.
* :func:`lock_files` is all or nothing: the walk is complete and the limits are checked
  (RLIMIT_MEMLOCK without the privilege, the memory cgroup's headroom: :func:`preflight`,
  shared with ``memlock lock``) before anything is locked, and on any failure every lock
  taken so far is released before the error propagates.
* A file replaced between the walk and its lock is refused (ESTALE), never locked in its
  walked file's place.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Iterable, Iterator

from ._context import ReleasedOnExit
from ._files import (
    LockedFile,
    Residency,
    StrPath,
    cached_pages_or_bound,
    lock_fd,
    open_regular,
    path_str,
    touch_fd,
)
from ._pages import PAGE_SIZE, as_size, page_range
from ._platform import BACKEND
from ._units import format_size, parse_size
from ._walk import Planned, WalkOptions, plan, scan, walk
from .errors import LockLimitError

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from ._profile import Profile

__all__ = [
    "FileTotals",
    "FirstError",
    "LockedFiles",
    "as_paths",
    "descriptor_room",
    "errors_to",
    "lock_files",
    "lock_planned",
    "measure_tree",
    "preflight",
    "refuse_walk_arguments",
    "size_or_none",
    "tree_totals",
    "walk_options",
    "within_budget",
]

#: ``on_error(path, exc)`` of the tree functions.
OnError = Callable[[str, OSError], None]
#: ``action(fd, size, offset, length)`` run on each file before it is measured.
Action = Callable[[int, int, int, int], None]
#: (path, bytes, pages, resident pages, exact) of one file: a row of ``memlock resident``.
Row = tuple[str, int, int, int, bool]


class FileTotals(Residency):
    """Totals over the files of a directory tree (or of a profile), after the call's work.

    Returned by :func:`memlock.residency`, :func:`memlock.touch` and :func:`memlock.evict`
    given a directory (or :func:`memlock.touch` given a :class:`memlock.Profile`); given one
    file they keep their own results (a :class:`memlock.Residency`, None). A Residency
    (so ``percent`` and ``resident_bytes`` work alike) with the number of files and what
    was skipped. Immutable.

    Attributes:
        path: The directory (or the profile's file, or "" for a profile never saved).
        size_bytes: Bytes examined (file sizes, or the ranges' lengths).
        pages: Pages covering them.
        resident_pages: How many of them are in the page cache now.
        exact: False if the kernel hid some file's page cache (see
            :class:`memlock.Residency`): ``resident_pages`` is then an upper bound.
        files: Files measured.
        skipped: ``(path, reason)`` of the profile's files that changed or vanished since
            it was saved, left alone (always empty for trees).
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = ("files", "skipped")
    __match_args__ = ("path", "size_bytes", "pages", "resident_pages", "exact", "files",
                      "skipped")

    files: int
    skipped: tuple[tuple[str, str], ...]

    def __init__(self, path: str, size_bytes: int, pages: int, resident_pages: int,
                 exact: bool = True, files: int = 0,
                 skipped: tuple[tuple[str, str], ...] = ()) -> None:
        self._fill(path, size_bytes, pages, resident_pages, exact, files, skipped)

    @classmethod
    def of_rows(cls, path: str, rows: list[Row],
                skipped: tuple[tuple[str, str], ...] = ()) -> FileTotals:
        """The totals of rows of :func:`measure_tree`."""
        return cls(path, sum(r[1] for r in rows), sum(r[2] for r in rows),
                   sum(r[3] for r in rows), all(r[4] for r in rows), len(rows), skipped)


def walk_options(include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
                 max_size: int | str | None = None, follow_symlinks: bool = False,
                 one_file_system: bool = False) -> WalkOptions:
    """The walk's filters from the file API's keyword arguments (the CLI's flags), checked.

    Raises:
        TypeError: A glob list that is a single string or holds a non-string; flags that
            are not bools; ``max_size`` not an int or a size string.
        ValueError: A negative or unreadable ``max_size``.
    """
    def globs(name: str, value: Iterable[str] | None) -> list[str]:
        if value is None:
            return []
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise TypeError(f"{name} must be a list of name globs, such as ['*.bin']")
        out = list(value)
        if not all(isinstance(g, str) for g in out):
            raise TypeError(f"{name} must be a list of name globs (str)")
        return out

    for name, flag in (("follow_symlinks", follow_symlinks),
                       ("one_file_system", one_file_system)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
    return WalkOptions(follow_symlinks=follow_symlinks, one_file_system=one_file_system,
                       include=globs("include", include), exclude=globs("exclude", exclude),
                       max_size=size_or_none(max_size, "max_size"))


def size_or_none(value: object, name: str) -> int | None:
    """Bytes from an int or a size string such as ``"8G"``; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_size(value)
    return as_size(value, name)


class FirstError:
    """The default ``on_error``: keeps the first error for :meth:`raise_it` after the walk.

    (Raising inside the walk would not do: the walk treats an OSError raised while it
    looks at an entry as that entry's own, and some, such as ENOENT, as no error.)
    """

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: OSError | None = None

    def __call__(self, path: str, exc: OSError) -> None:
        if self.error is None:
            exc.filename = path  # the walk's calls name a file by its directory's descriptor
            self.error = exc

    def raise_it(self) -> None:
        """Raise the first error, if there was one."""
        if self.error is not None:
            raise self.error


def errors_to(on_error: OnError | None) -> tuple[OnError, FirstError]:
    """(the ``on_error`` to walk with, what raises the first error afterwards)."""
    first = FirstError()
    return (first if on_error is None else on_error), first


def _byte_range(offset: object, length: object) -> tuple[int, int | None] | None:
    """The range of each file (clamped to it later, as ``--range``), or None: whole files."""
    off = as_size(offset, "offset")
    n = None if length is None else as_size(length, "length")
    if off == 0 and n is None:
        return None
    return off, None if n is None else off + n


def measure_tree(paths: list[str], options: WalkOptions, rng: tuple[int, int | None] | None,
                 on_error: OnError, action: Action | None = None) -> list[Row]:
    """A :data:`Row` for every file under ``paths``, after ``action`` if given.

    ``rng`` (start, end or None) is clamped to each file, as ``--range``. Files that cannot
    be opened go to ``on_error`` (empty ones are measured without a descriptor).
    """
    out: list[Row] = []
    append = out.append
    start, end = rng if rng is not None else (0, None)

    def visit(path: str, fd: int, st: os.stat_result) -> bool:
        size = st.st_size
        if rng is None:
            off, n = 0, size
        else:
            off = min(start, size)
            n = max(0, (size if end is None else min(end, size)) - off)
        first, count = page_range(off, n)
        if fd < 0:
            if count == 0 and action is None:
                append((path, n, 0, 0, True))
                return True
            return False
        if action is not None:
            action(fd, size, off, n)
        append((path, n, count, *(cached_pages_or_bound(fd, first, count) if count
                                   else (0, True))))
        return True

    scan(paths, options, on_error, visit)
    return out


def tree_totals(path: str, *, offset: object, length: object, action: str | None,
                on_error: OnError | None, filters: dict[str, object]) -> FileTotals:
    """:func:`measure_tree` of one directory with the file API's arguments, as totals.

    ``action`` ("touch", "evict" or None) is done to each file before it is measured.
    """
    options = walk_options(**filters)  # type: ignore[arg-type]  # checked there
    rng = _byte_range(offset, length)
    report, first = errors_to(on_error)
    rows = measure_tree([path], options, rng, report, _ACTIONS[action])
    first.raise_it()
    return FileTotals.of_rows(path, rows)


def _touch_action(fd: int, size: int, offset: int, length: int) -> None:
    touch_fd(fd, size, offset, length)


def _evict_action(fd: int, size: int, offset: int, length: int) -> None:
    if length:
        BACKEND.evict(fd, offset, length)


#: The :data:`Action` of each tree function.
_ACTIONS: dict[str | None, Action | None] = {
    None: None, "touch": _touch_action, "evict": _evict_action}


# -- locking many files --------------------------------------------------------------------


def _resident_bytes(items: Iterable[Planned]) -> int:
    total = 0
    for p in items:
        try:
            f, _ = open_regular(p.entry.path)
        except OSError:
            continue
        with f:
            first, count = page_range(p.offset, p.length)
            cached, exact = cached_pages_or_bound(f.fileno(), first, count)
            if exact:  # a hidden page cache counts as none: the cautious guess here
                total += cached * PAGE_SIZE
    return total


def preflight(items: list[Planned], keep_going: bool) -> tuple[list[Planned], list[Planned],
                                                                LockLimitError | None]:
    """Compare what ``items`` need with what may be locked, before locking anything.

    Returns (to lock, left out, the error explaining why). Without ``keep_going`` any
    shortfall leaves everything out.
    """
    from ._status import limits

    total = sum(p.charge for p in items)
    lim = limits()
    budget: int | None = None
    error: LockLimitError | None = None
    if not lim.privileged and lim.soft is not None:
        locked = lim.locked_bytes or 0
        budget = max(0, lim.soft - locked)
        if total > budget:
            error = LockLimitError(
                errno.ENOMEM,
                f"cannot lock {format_size(total)} in {len(items)} files: over RLIMIT_MEMLOCK "
                f"(limit {format_size(lim.soft)}, already locked {format_size(locked)}, "
                "no CAP_IPC_LOCK)",
                hint=BACKEND.limit_hint(total + locked), requested=total, limit=lim.soft,
                locked=locked,
            )
    cg = BACKEND.cgroup_memory_headroom()
    if cg is not None and error is None and total:
        limit, usage, where = cg
        new = total - _resident_bytes(items)
        headroom = max(0, limit - usage)
        if new > headroom:
            budget = headroom if budget is None else min(budget, headroom)
            error = LockLimitError(
                errno.ENOMEM,
                f"cannot lock {format_size(total)} in {len(items)} files: "
                f"{format_size(new)} of it is not in RAM yet and the memory cgroup {where} has "
                f"{format_size(headroom)} of headroom (limit {format_size(limit)}, usage "
                f"{format_size(usage)})",
                hint="How to fix: raise the container's memory limit (docker run --memory, "
                "Kubernetes resources.limits.memory, systemd MemoryMax=) or lock less "
                "(--max-size, --exclude, --range)",
                requested=new, limit=limit, locked=usage,
            )
    if error is None:
        return items, [], None
    if not keep_going:
        return [], items, error
    fit, left = [], []
    used = 0
    for p in items:
        if budget is not None and used + p.charge > budget:
            left.append(p)
        else:
            fit.append(p)
            used += p.charge
    return fit, left, error


def _open_planned(p: Planned) -> tuple[io.FileIO, os.stat_result, int, int]:
    """(the file, its fstat, offset, length clamped to its size now) of the walk's file.

    ESTALE if it was replaced since (or swapped for a symbolic link): only what the walk
    checked is ever locked or touched.
    """
    f, st = open_regular(p.entry.path)
    if (st.st_dev, st.st_ino) != (p.entry.dev, p.entry.ino):
        f.close()
        raise OSError(errno.ESTALE, "replaced since it was scanned", p.entry.path)
    off = min(p.offset, st.st_size)
    return f, st, off, min(p.length, st.st_size - off)


def lock_planned(p: Planned, onfault: bool, exact: bool = False) -> LockedFile:
    """Lock the planned range of the file the walk saw (ESTALE if it was replaced since).

    With ``exact``, the range is prefetched first, so that the lock's page faults find
    its pages and read nothing around them (a profile's ranges: see Profile.restore).
    """
    f, st, off, n = _open_planned(p)
    with f:
        if exact and n and not onfault:
            BACKEND.prefetch(f.fileno(), off, n)
        return lock_fd(p.entry.path, f.fileno(), st, off, n, onfault)


def within_budget(items: list[Planned], budget: int | None) -> tuple[list[Planned],
                                                                     list[Planned]]:
    """(to lock, to touch): ``items`` within ``budget`` bytes, and the rest.

    In order: whole items while they fit, then the whole pages of the next one that fit.
    Charges are whole pages.
    """
    if budget is None:
        return items, []
    fit: list[Planned] = []
    rest: list[Planned] = []
    left = budget
    for p in items:
        if rest or not p.length:
            (rest if rest else fit).append(p)
            continue
        if p.charge <= left:
            fit.append(p)
            left -= p.charge
            continue
        first, _ = page_range(p.offset, p.length)
        cut = (first + left // PAGE_SIZE) * PAGE_SIZE - p.offset  # bytes that fit
        if cut > 0:
            fit.append(Planned(p.entry, p.offset, cut))
            rest.append(Planned(p.entry, p.offset + cut, p.length - cut))
        else:
            rest.append(p)
        left = 0
    return fit, rest


#: Descriptors kept free for what a holder opens besides its mappings (the log, the
#: pidfile, a directory while rescanning, the systemd socket).
_SPARE_DESCRIPTORS = 16


def _open_descriptors() -> int:
    """How many descriptors this process has open now (a generous guess where unknown)."""
    count = BACKEND.open_descriptors()
    return 3 * _SPARE_DESCRIPTORS if count is None else count


def descriptor_room(mappings: int) -> tuple[int, int, int] | None:
    """Make sure ``mappings`` more descriptors can be opened; None when they can.

    Each locked file (or range) keeps one: its mapping's. Raises the soft RLIMIT_NOFILE up
    to the hard limit when that is needed and enough (no privilege needed). Returns
    (descriptors needed in all, soft limit, hard limit) when the hard limit is too low.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = _open_descriptors() + mappings + _SPARE_DESCRIPTORS
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or needed <= soft:
        return None
    if hard == unlimited or needed <= hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            return None
        except (OSError, ValueError):  # macOS: not above OPEN_MAX
            pass
    return needed, soft, hard


class LockedFiles(ReleasedOnExit):
    """Many files (or ranges of them) locked in RAM together; a context manager.

    Returned by :func:`memlock.lock_files`. Iterating gives the :class:`memlock.LockedFile`
    objects (one per file, or per range of a profile).

    Attributes:
        files: The LockedFile objects, in walk (or profile) order.
        nbytes: Bytes locked in all.
        unlocked: ``(path, offset, length)`` of the ranges left unlocked for lack of
            ``budget`` (they were touched into the page cache instead), in order.
        skipped: ``(path, reason)`` of a profile's files that changed or vanished since it
            was saved, left alone.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = ("files", "nbytes", "skipped", "unlocked")

    def __init__(self, files: tuple[LockedFile, ...],
                 unlocked: tuple[tuple[str, int, int], ...] = (),
                 skipped: tuple[tuple[str, str], ...] = ()) -> None:
        """Made by :func:`memlock.lock_files`."""
        self.files = files
        self.nbytes = sum(f.nbytes for f in files)
        self.unlocked = unlocked
        self.skipped = skipped

    def __iter__(self) -> Iterator[LockedFile]:
        """The LockedFile objects."""
        return iter(self.files)

    def __len__(self) -> int:
        """How many LockedFile objects."""
        return len(self.files)

    @property
    def locked(self) -> bool:
        """True while any of the files is locked."""
        return any(f.locked for f in self.files)

    def unlock(self) -> None:
        """Release every lock and unmap the files (idempotent).

        Raises:
            BufferError: A view of one of the files is alive: nothing changed.
        """
        for f in self.files:
            if f._mapping_refs() > f._free_refs:
                raise BufferError(f"cannot unlock {f!r}: a view of it (or a slice or array "
                                  "made from one) is alive")
        for f in self.files:
            f.unlock()

    def _release_on_exit(self) -> None:
        self.unlock()

    def __repr__(self) -> str:
        """Counts, not files."""
        state = "locked" if self.locked else "unlocked"
        return (f"<memlock.LockedFiles {state} {len(self.files)} files nbytes={self.nbytes} "
                f"unlocked={len(self.unlocked)} skipped={len(self.skipped)}>")


def as_paths(paths: object) -> list[str]:
    """One path or an iterable of paths, as a list of str."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        return [path_str(paths)]
    if not isinstance(paths, Iterable):
        raise TypeError("paths must be a path or a list of paths (str, bytes, os.PathLike), "
                        f"not {type(paths).__name__}")
    return [path_str(p) for p in paths]


def refuse_walk_arguments(**given: object) -> None:
    """TypeError naming the range or filters given with a Profile (they would be ignored).

    ``given``: offset, length and the walk's filters, as passed; a profile's ranges say
    what to take.
    """
    defaults: dict[str, object] = {"offset": 0, "length": None, "include": None,
                                   "exclude": None, "max_size": None, "follow_symlinks": False,
                                   "one_file_system": False}
    used = [name for name, value in given.items() if value is not defaults[name]
            and not (name == "offset" and type(value) is int and value == 0)]
    if used:
        raise TypeError(f"{', '.join(used)}: not with a Profile (its ranges say what to take)")


def lock_files(paths: StrPath | Iterable[StrPath] | Profile, *, offset: int = 0,
               length: int | None = None, onfault: bool = False,
               budget: int | str | None = None, include: Iterable[str] | None = None,
               exclude: Iterable[str] | None = None, max_size: int | str | None = None,
               follow_symlinks: bool = False, one_file_system: bool = False) -> LockedFiles:
    """Lock many files (directories are walked) in RAM, all or nothing; a context manager.

    The walk is done and the limits are checked first (RLIMIT_MEMLOCK without the
    privilege, the memory cgroup's headroom), as ``memlock lock`` does: LockLimitError
    before anything is locked. Any failure later releases every lock taken so far.

    Args:
        paths: A file or directory, a list of them, or a :class:`memlock.Profile` (its
            ranges are locked, in its order; files changed since it was saved are
            skipped and listed in ``skipped``).
        offset: First byte of each file to lock (clamped to the file, as ``--range``).
        length: Bytes of each file; None: to its end.
        onfault: Lock pages as they are first touched (Linux MLOCK_ONFAULT).
        budget: Lock at most this many bytes (an int or a size string such as ``"8G"``),
            in order: whole ranges while they fit, then the whole pages of the next range
            that fit; the rest is touched into the page cache and listed in ``unlocked``.
        include: Only files whose base name matches one of these globs (CLI ``--include``).
        exclude: Skip files and directories whose base name matches (CLI ``--exclude``).
        max_size: Skip files larger than this (CLI ``--max-size``).
        follow_symlinks: Follow symbolic links inside directories.
        one_file_system: Do not descend into other file systems.

    Raises:
        FileNotFoundError / OSError: A path (or a file in a tree) cannot be read: nothing
            is locked.
        LockLimitError: Over RLIMIT_MEMLOCK or the memory cgroup's headroom: checked
            before locking anything.
        LockPermissionError / MemlockError: as :func:`memlock.lock`.
    """
    if not isinstance(onfault, bool):
        raise TypeError(f"onfault must be a bool, not {type(onfault).__name__}")
    limit = size_or_none(budget, "budget")
    from ._profile import Profile

    skipped: tuple[tuple[str, str], ...] = ()
    exact = isinstance(paths, Profile)
    if isinstance(paths, Profile):
        refuse_walk_arguments(offset=offset, length=length, include=include, exclude=exclude,
                              max_size=max_size, follow_symlinks=follow_symlinks,
                              one_file_system=one_file_system)
        items, skipped = paths.plan()
    else:
        options = walk_options(include, exclude, max_size, follow_symlinks, one_file_system)
        rng = _byte_range(offset, length)
        first = FirstError()
        items = plan(list(walk(as_paths(paths), options, first)), rng)
        first.raise_it()
    chosen, rest = within_budget(items, limit)
    to_lock, _, problem = preflight(chosen, keep_going=False)
    if problem is not None:
        raise problem
    mappings = sum(1 for p in to_lock if p.length)
    short = descriptor_room(mappings)
    if short is not None:
        needed, soft, hard = short
        raise OSError(errno.EMFILE, f"cannot lock {mappings} files or ranges: each keeps a "
                      f"descriptor open (its mapping's), so this needs {needed} open files, "
                      f"over RLIMIT_NOFILE {soft} (hard limit {hard}), which this process "
                      "cannot raise: allow more open files (ulimit -n, LimitNOFILE=) or lock "
                      "fewer")
    held: list[LockedFile] = []
    try:
        for p in to_lock:
            held.append(lock_planned(p, onfault, exact))
        for p in rest:
            touch_planned(p)
    except BaseException:
        while held:
            held.pop().unlock()  # no view of them exists yet
        raise
    unlocked = tuple((p.entry.path, p.offset, p.length) for p in rest if p.length)
    return LockedFiles(tuple(held), unlocked, skipped)


def touch_planned(p: Planned) -> None:
    """Touch exactly the planned range of the file the walk saw (ESTALE if replaced since)."""
    if not p.length:
        return
    f, st, off, n = _open_planned(p)
    with f:
        BACKEND.prefetch(f.fileno(), off, n)  # exactly the range (see Profile.restore)
        touch_fd(f.fileno(), st.st_size, off, n, skip_resident=False)

