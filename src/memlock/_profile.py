"""Hot-set profiles: which pages of which files were in the page cache, saved and restored.

The file format (JSON, UTF-8), version 1::

    {"format": "memlock-profile", "version": 1, "page_size": 4096,
     "files": [{"path": "/abs/file", "device": 2049, "inode": 131, "size": 8192,
                "mtime_ns": 1764900000000000000, "ranges": [[0, 4096]]}]}

``ranges`` are ``[offset, length]`` byte ranges of resident pages (runs of pages, not
pages), each inside the file, in the order they are restored and locked; ``device``,
``inode``, ``size`` and ``mtime_ns`` are the file's identity when the profile was saved
(``st_dev``, ``st_ino``, ``st_size``, ``st_mtime_ns``): a file whose identity changed is
skipped, never restored from stale ranges.

Hazards and how they are met:

* A profile is input from outside: :meth:`Profile.load` checks every field (types, ranges
  inside the file, no overlaps, no file twice, by path or by device and inode, absolute
  paths, known version, the file's size at most :data:`MAX_PROFILE_BYTES`) and raises
  ValueError naming the problem before anything is touched.
* Saving is atomic (a temporary file in the same directory, fsync, rename): a crash
  leaves the old profile or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from itertools import pairwise

from ._atomic import write_atomically
from ._files import (
    StrPath,
    cached_pages_or_bound,
    open_regular,
    path_str,
    resident_runs,
    touch_fd,
)
from ._pages import PAGE_SIZE, page_range
from ._platform import BACKEND
from ._records import FrozenRecord
from ._threads import run_parallel
from ._trees import FileTotals, OnError, Row, walk_options
from ._walk import FileEntry, Planned, WalkOptions, scan

__all__ = ["FORMAT", "MAX_PROFILE_BYTES", "VERSION", "Profile", "ProfiledFile",
           "capture_profile", "restore_rows"]

#: The ``format`` field of every profile.
FORMAT = "memlock-profile"
#: The version this memlock writes and reads.
VERSION = 1
#: Larger profile files are refused: parsing one costs up to ~15 times its size in memory
#: (a profile of 100,000 files with a few ranges each takes about 20 MB).
MAX_PROFILE_BYTES = 64 * 2**20

_KEYS = {"path", "device", "inode", "size", "mtime_ns", "ranges"}


class ProfiledFile(FrozenRecord):
    """One file of a :class:`Profile`: its identity and its resident byte ranges.

    Attributes:
        path: The file (absolute).
        device: ``st_dev`` when the profile was saved.
        inode: ``st_ino``.
        size: ``st_size``.
        mtime_ns: ``st_mtime_ns``.
        ranges: ``(offset, length)`` of each range of resident pages, in order.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = __match_args__ = ("path", "device", "inode", "size", "mtime_ns", "ranges")

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ranges: tuple[tuple[int, int], ...]

    def __init__(self, path: str, device: int, inode: int, size: int, mtime_ns: int,
                 ranges: tuple[tuple[int, int], ...]) -> None:
        self._fill(path, device, inode, size, mtime_ns, ranges)

    @property
    def nbytes(self) -> int:
        """Bytes of its ranges."""
        return sum(n for _, n in self.ranges)

    def changed(self, pseudo: dict[int, str] | None = None) -> str | None:
        """Why the file on disk is no longer this one (vanished, changed), or None.

        ``pseudo``: the pseudo file systems by device (``Backend.pseudo_file_systems``):
        a file on one (a hand-written profile naming /proc or /sys) is refused as the walk
        refuses it.
        """
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return f"cannot be read now ({exc.strerror or exc})"
        fs_type = (pseudo or {}).get(st.st_dev)
        if fs_type is not None:
            return (f"not on disk: on a {fs_type} file system, whose files the kernel makes "
                    "up when they are read (nothing to keep in RAM)")
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            return "replaced since the profile was saved (another file by that name)"
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            return "changed since the profile was saved (size or modification time)"
        return None


class Profile:
    """A hot set: the resident page ranges of some files, to save and bring back later.

    Make one with :meth:`capture` (or :meth:`load` a saved one); :meth:`save` it;
    ``memlock.touch(profile)`` brings its ranges back into the page cache and
    ``memlock.lock_files(profile, budget=...)`` locks them (up to a budget). The file
    format is documented in the Files guide (JSON, versioned).

    Attributes:
        files: The files, in order (:class:`ProfiledFile`).
        path: Where it was loaded from or last saved to ("" if neither).
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = ("files", "path")

    def __init__(self, files: Iterable[ProfiledFile], path: str = "") -> None:
        """A profile of ``files`` (see :meth:`capture` and :meth:`load`)."""
        self.files = tuple(files)
        self.path = path

    @property
    def nbytes(self) -> int:
        """Bytes of all its ranges."""
        return sum(f.nbytes for f in self.files)

    def __repr__(self) -> str:
        """Counts, not ranges."""
        return (f"<memlock.Profile {len(self.files)} files "
                f"{sum(len(f.ranges) for f in self.files)} ranges nbytes={self.nbytes}>")

    def __eq__(self, other: object) -> bool:
        """Same files and ranges (wherever it was saved)."""
        if isinstance(other, Profile):
            return self.files == other.files
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def capture(cls, paths: StrPath | Iterable[StrPath], *,
                include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
                max_size: int | str | None = None, follow_symlinks: bool = False,
                one_file_system: bool = False, on_error: OnError | None = None) -> Profile:
        """The resident page ranges of the files under ``paths`` now (never reads them).

        Directories are walked as ``memlock resident`` walks them, with its filters.
        ``on_error(path, exc)`` gets each file that cannot be read or whose page cache
        the kernel hides from this process (see :class:`memlock.Residency`), and the walk
        goes on; None: the first such error is raised at the end.
        """
        from ._trees import as_paths, errors_to

        options = walk_options(include, exclude, max_size, follow_symlinks, one_file_system)
        report, first = errors_to(on_error)
        profile = capture_profile(as_paths(paths), options, None, report)[0]
        first.raise_it()
        return profile

    def save(self, file: StrPath) -> None:
        """Write the profile to ``file`` atomically (JSON, see the module docstring).

        A previous version of ``file`` among the profile's files (a profile saved inside
        the tree it profiles) is left out: saving replaces it, so it would only ever be
        skipped as changed.
        """
        target = path_str(file)
        try:
            st = os.stat(target)
            own = {(st.st_dev, st.st_ino)}
        except OSError:
            own = set()
        files = tuple(f for f in self.files if f.path != os.path.abspath(target)
                      and (f.device, f.inode) not in own)
        doc = {"format": FORMAT, "version": VERSION, "page_size": PAGE_SIZE,
               "files": [{"path": f.path, "device": f.device, "inode": f.inode,
                          "size": f.size, "mtime_ns": f.mtime_ns,
                          "ranges": [list(r) for r in f.ranges]} for f in files]}
        write_atomically(target, json.dumps(doc, separators=(",", ":")).encode())
        self.files, self.path = files, target

    @classmethod
    def load(cls, file: StrPath) -> Profile:
        """Read a profile :meth:`save` wrote, checking every field.

        Raises:
            ValueError: Not a memlock profile, an unknown version, or a field out of
                bounds (a range outside its file, overlapping ranges ...): the message
                names it.
            OSError: The file cannot be read (FileNotFoundError ...).
        """
        src = path_str(file)
        f, st = open_regular(src)
        with f:
            if st.st_size > MAX_PROFILE_BYTES:
                raise ValueError(f"{src}: not a memlock profile: {st.st_size} bytes, over "
                                 f"the {MAX_PROFILE_BYTES // 2**20} MiB a profile may have")
            data = f.read(MAX_PROFILE_BYTES + 1)
        return cls(_parse(data, src), src)

    def plan(self) -> tuple[list[Planned], tuple[tuple[str, str], ...]]:
        """(its ranges as planned locks, in order; (path, reason) of files skipped)."""
        items: list[Planned] = []
        skipped: list[tuple[str, str]] = []
        pseudo = BACKEND.pseudo_file_systems()
        for f in self.files:
            why = f.changed(pseudo)
            if why is not None:
                skipped.append((f.path, why))
                continue
            entry = FileEntry(f.path, f.device, f.inode, f.size, f.mtime_ns)
            items += [Planned(entry, off, n) for off, n in f.ranges]
        return items, tuple(skipped)

    def restore(self, on_error: OnError | None = None) -> FileTotals:
        """Bring exactly its ranges back into the page cache: ``memlock.touch(profile)``.

        Ranges are read in parallel (each range's missing chunks by the populate calls of
        :func:`memlock.touch`). Files that changed or vanished are skipped and listed in
        ``skipped``; the totals are over the ranges of the others, after touching.
        ``on_error(path, exc)`` gets each file that cannot be read, and the others go on.

        Raises:
            OSError: Without ``on_error``: a file of the profile cannot be read (its
                identity is unchanged).
        """
        rows, skipped = restore_rows(self, on_error)
        return FileTotals.of_rows(self.path, rows, tuple(skipped))


def restore_rows(profile: Profile, on_error: OnError | None
                 ) -> tuple[list[Row], list[tuple[str, str]]]:
    """:meth:`Profile.restore`'s rows (one per file restored) and (path, reason) skipped.

    ``on_error(path, exc)`` gets a file that cannot be read, and the others go on; None:
    the error is raised.
    """
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    pseudo = BACKEND.pseudo_file_systems()
    for pf in profile.files:
        why = pf.changed(pseudo)
        if why is None:
            try:
                rows.append(_restore_file(pf))
                continue
            except OSError as exc:
                if exc.errno != errno.ESTALE:
                    if on_error is None:
                        raise
                    on_error(pf.path, exc)
                    continue
                why = str(exc.strerror)
        skipped.append((pf.path, why))
    return rows, skipped


def _restore_file(pf: ProfiledFile) -> Row:
    f, st = open_regular(pf.path)
    with f:
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
                pf.device, pf.inode, pf.size, pf.mtime_ns):
            raise OSError(errno.ESTALE, "changed since the profile was saved", pf.path)
        fd = f.fileno()
        size = st.st_size

        def restore(r: tuple[int, int]) -> None:
            # Exactly the range: its reads queued in order (no read-ahead past it, which
            # the page faults of a populate alone would add: up to read_ahead_kb around
            # each), then waited for by populating it.
            BACKEND.prefetch(fd, r[0], r[1])
            touch_fd(fd, size, r[0], r[1], skip_resident=False)

        run_parallel(pf.ranges, restore, min(os.cpu_count() or 1, 8))
        pages = resident = 0
        exact = True
        for off, n in pf.ranges:
            first, count = page_range(off, n)
            cached, ok = cached_pages_or_bound(fd, first, count)
            pages += count
            resident += cached
            exact = exact and ok
        return (pf.path, pf.nbytes, pages, resident, exact)


def capture_profile(paths: list[str], options: WalkOptions, rng: tuple[int, int | None] | None,
                    on_error: OnError) -> tuple[Profile, list[Row]]:
    """The profile of the files under ``paths`` and their rows for ``memlock resident``.

    ``rng`` (start, end or None) limits each file to that byte range, as ``--range``.
    """
    files: list[ProfiledFile] = []
    rows: list[Row] = []
    start, end = rng if rng is not None else (0, None)

    def visit(path: str, fd: int, st: os.stat_result) -> bool:
        size = st.st_size
        off = min(start, size)
        n = max(0, (size if end is None else min(end, size)) - off)
        first, count = page_range(off, n)
        if fd < 0 and count:
            return False
        runs = resident_runs(fd, first, count) if count else []
        ranges = tuple((p * PAGE_SIZE, min(k * PAGE_SIZE, size - p * PAGE_SIZE))
                       for p, k in runs)
        files.append(ProfiledFile(os.path.abspath(path), st.st_dev, st.st_ino, size,
                                  st.st_mtime_ns, ranges))
        rows.append((path, n, count, sum(k for _, k in runs), True))
        return True

    scan(paths, options, on_error, visit)
    return Profile(files), rows


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of bounds ({low} to {high})")
    return value


def _parse(data: bytes, src: str) -> list[ProfiledFile]:
    """The files of a profile's bytes; ValueError naming what is wrong."""
    def bad_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=bad_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError ...
        raise ValueError(f"{src}: not a memlock profile: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{src}: not a memlock profile (no \"format\": \"{FORMAT}\")")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:  # not 1.0, not true
        raise ValueError(f"{src}: profile version {version!r} is not supported (this memlock "
                         f"reads version {VERSION}; save the profile again)")
    listed = doc.get("files")
    if not isinstance(listed, list):
        raise ValueError(f"{src}: not a memlock profile: \"files\" must be a list")
    out: list[ProfiledFile] = []
    seen: set[str] = set()
    seen_files: dict[tuple[int, int], str] = {}  # (device, inode): path (hard links)
    top = 2**64 - 1
    for i, entry in enumerate(listed):
        where = f"{src}: file {i}"
        try:
            if not isinstance(entry, dict) or set(entry) != _KEYS:
                raise ValueError(f"must be an object with the keys {', '.join(sorted(_KEYS))}")
            path = entry["path"]
            if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
                raise ValueError("path must be an absolute path")
            os.fsencode(path)  # UnicodeEncodeError (a ValueError): not a file name here
            where = f"{src}: {path!r}"
            if path in seen:
                raise ValueError("listed twice")
            seen.add(path)
            size = _int(entry["size"], "size", 0, 2**63 - 1)
            ident = (_int(entry["device"], "device", 0, top), _int(entry["inode"], "inode", 0, top),
                     size, _int(entry["mtime_ns"], "mtime_ns", -(2**63), 2**63 - 1))
            other = seen_files.setdefault(ident[:2], path)
            if other != path:
                raise ValueError(f"the same file as {other!r} (device and inode): a hard "
                                 "link listed twice")
            raw = entry["ranges"]
            if not isinstance(raw, list):
                raise ValueError("ranges must be a list of [offset, length]")
            ranges: list[tuple[int, int]] = []
            for r in raw:
                if not isinstance(r, list) or len(r) != 2:
                    raise ValueError("ranges must be a list of [offset, length]")
                off = _int(r[0], "range offset", 0, 2**63 - 1)
                n = _int(r[1], "range length", 1, 2**63 - 1)
                if off + n > size:
                    raise ValueError(f"range [{off}, {n}] goes past the end of the file "
                                     f"({size} bytes)")
                ranges.append((off, n))
            ordered = sorted(ranges)
            for (a, n), (b, _) in pairwise(ordered):
                if a + n > b:
                    raise ValueError(f"ranges overlap (at byte {b})")
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        out.append(ProfiledFile(path, *ident, tuple(ranges)))
    return out
