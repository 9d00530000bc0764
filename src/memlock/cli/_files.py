"""``memlock resident | touch | evict | lock``: files kept resident in RAM (vmtouch's jobs)."""

from __future__ import annotations

import errno
import os
import sys
import time

import memlock

from .._cli_api import (
    PAGE_SIZE,
    SizeTooLargeError,
    WalkOptions,
    cached_pages,
    cached_pages_counter,
    capture_profile,
    default_workers,
    format_size,
    measure_tree,
    parse_size,
    plan,
    plural,
    restore_rows,
    scan_rows,
    walk,
)
from ._arguments import invalid, parse_range, read_list, seconds, size
from ._progress import Progress

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

__all__ = ["register"]


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= _MAX_JOBS:
        raise invalid(
            f"not a number of processes from 1 to {_MAX_JOBS}: {text!r}")
    return n


#: Upper bound of ``-j`` (each worker walks the directories once and holds a pipe).
_MAX_JOBS = 64


def _range(text: str) -> tuple[int, int | None]:
    try:
        return parse_range(text, parse_size)
    except SizeTooLargeError as exc:
        raise invalid(str(exc)) from None
    except ValueError as exc:
        raise invalid(
            f"{exc} (START-END, either side may be empty: 0-4M, 1G-, 512K)") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="files and directories (recursive)")
    p.add_argument("--files-from", "-b", metavar="LIST",
                   help="read more paths from LIST, one a line ('-' for stdin)")
    p.add_argument("-0", dest="nul", action="store_true",
                   help="paths in --files-from are separated by NUL bytes")
    p.add_argument("--include", "-I", action="append", default=[], metavar="GLOB",
                   help="only files whose name matches GLOB (repeatable)")
    p.add_argument("--exclude", "-i", action="append", default=[], metavar="GLOB",
                   help="skip files and directories whose name matches GLOB (repeatable)")
    p.add_argument("--max-size", "-m", type=size, metavar="SIZE",
                   help="skip files larger than SIZE (4096, 512K, 4M, 2G)")
    p.add_argument("--range", "-p", type=_range, metavar="START-END",
                   help="only this byte range of each file (e.g. 0-4M, 1G-), clamped to it")
    p.add_argument("--follow-symlinks", "-f", action="store_true",
                   help="follow symbolic links inside directories (links named as PATH are "
                   "always followed)")
    p.add_argument("--one-file-system", "-F", action="store_true",
                   help="do not descend into other file systems")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the total / errors")
    p.add_argument("-v", "--verbose", action="store_true", help="say more")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    """Add this module's subcommands to ``sub``."""
    p = sub.add_parser("resident", help="how much of files is in RAM (page cache)",
                       description="Per file and in total: size, pages, resident pages, "
                       "percent. Never reads the files' data (cachestat or mincore).")
    _common(p)
    p.add_argument("--jobs", "-j", type=_jobs, metavar="N",
                   help="worker processes for directory trees (default: one per CPU, at "
                   "most 8; 1: none; at most 64)")
    p.add_argument("--save-profile", metavar="FILE",
                   help="also save each file's identity and resident page ranges to FILE "
                   "(a hot-set profile for touch --profile and lock --profile; JSON, written "
                   "atomically)")
    p.set_defaults(handler=_cmd_resident)

    p = sub.add_parser("touch", help="bring files into RAM without locking them",
                       description="Populate the page cache in parallel chunks, skipping "
                       "what is already resident.")
    _common(p)
    p.add_argument("--profile", metavar="FILE",
                   help="bring back exactly the ranges of a profile (resident "
                   "--save-profile) instead of PATHs; files changed since are skipped (exit 1)")
    p.set_defaults(handler=_cmd_touch)

    p = sub.add_parser("evict", help="drop files' clean pages from RAM",
                       description="posix_fadvise(POSIX_FADV_DONTNEED); locked pages stay.")
    _common(p)
    p.set_defaults(handler=_cmd_evict)

    p = sub.add_parser(
        "lock", help="lock files in RAM and hold them until SIGTERM/SIGINT",
        description="Lock the files (all or nothing unless --keep-going), print one summary "
        "line on stdout once everything is resident and locked, then hold. SIGHUP rescans "
        "the paths; --watch re-locks files that are replaced or rewritten. Sends READY=1 "
        "to systemd when NOTIFY_SOCKET is set. Fails (exit 1) instead of holding when "
        "nothing at all can be locked. Only regular files on disk (or tmpfs) are locked: "
        "procfs and sysfs files are refused. Errors go to stderr; with --daemon, stderr "
        "is closed once everything is locked, so later errors (a rescan that cannot lock a "
        "file) are lost unless --log FILE is given.")
    _common(p)
    p.add_argument("--pidfile", "-P", metavar="FILE", help="write the holder's pid to FILE "
                   "(exists by the time the summary line is printed; removed on exit)")
    p.add_argument("--daemon", "-d", action="store_true",
                   help="go to the background once everything is locked")
    p.add_argument("--watch", "-w", action="store_true",
                   help="re-lock files that are replaced, rewritten or truncated")
    p.add_argument("--interval", type=seconds, default=2.0, metavar="SECONDS",
                   help="--watch polling interval (default 2, at most 86400)")
    p.add_argument("--log", metavar="FILE",
                   help="also append errors, rescans and the summary to FILE, each line "
                   "with a timestamp (they still go to stderr while it is open)")
    p.add_argument("--keep-going", "-k", action="store_true",
                   help="lock what can be locked and report the rest")
    p.add_argument("--onfault", action="store_true",
                   help="lock pages as they are first read instead of now (MLOCK_ONFAULT)")
    p.add_argument("--profile", metavar="FILE",
                   help="lock the ranges of a profile (resident --save-profile) instead of "
                   "PATHs, in its order; files changed since are skipped and reported")
    p.add_argument("--budget", type=size, metavar="SIZE",
                   help="with --profile: lock at most SIZE (whole ranges while they fit, "
                   "then part of the next); touch the rest into the page cache and list it")
    p.set_defaults(handler=_cmd_lock)


# -- shared ------------------------------------------------------------------------------


def _err(prog: str) -> Callable[[str], None]:
    def err(msg: str) -> None:
        sys.stderr.write(f"memlock {prog}: {msg}\n")
        sys.stderr.flush()

    return err


def _paths(args: argparse.Namespace, err: Callable[[str], None]) -> list[str] | None:
    paths = list(args.paths)
    if args.files_from is not None:
        try:
            paths += read_list(args.files_from, args.nul)
        except OSError as exc:
            err(f"{args.files_from}: {exc.strerror or exc}")
            return None
    if not paths:
        err("no files or directories given")
        return None
    return paths


def _options(args: argparse.Namespace) -> WalkOptions:
    return WalkOptions(follow_symlinks=args.follow_symlinks,
                       one_file_system=args.one_file_system, include=args.include,
                       exclude=args.exclude, max_size=args.max_size)


_Row = tuple[str, int, int, int, bool]  # path, bytes, pages, resident, exact


class _Errors:
    def __init__(self, prog: str) -> None:
        self.count = 0
        self._err = _err(prog)

    def __call__(self, path: str, exc: OSError) -> None:
        self.count += 1
        self._err(f"{path}: {exc.strerror or exc}")


def _pct(res: int, pages: int) -> str:
    return f"{100.0 if pages == 0 else 100.0 * res / pages:5.1f}%"


def _cached_pages(fd: int, first: int, count: int) -> tuple[int, bool]:
    """(resident pages, exact) of [first, first+count): ``cached_pages_or_bound``.

    Its module (memlock._files, with the page registry) loads only when a file needs it.
    """
    from .._cli_api import cached_pages_or_bound

    return cached_pages_or_bound(fd, first, count)


def _measure(paths: list[str], options: WalkOptions, rng: tuple[int, int | None] | None,
             errors: _Errors,
             action: Callable[[int, int, int, int], None] | None = None,
             jobs: int | None = None) -> list[_Row]:
    """(path, size, pages, resident pages) of every file, after ``action`` if given.

    The hot loop of ``memlock resident`` over big trees: per file one openat (relative to
    the directory), one fstat, one cachestat and one close; no objects but a tuple. Trees
    are shared among worker processes, one per CPU (see :func:`scan_rows`).
    """
    page = PAGE_SIZE
    slow = _cached_pages
    count_cached = cached_pages_counter() if action is None and rng is None else None
    if count_cached is not None:
        cachestat_ok = True

        def measure(path: str, fd: int, st: os.stat_result) -> _Row | None:
            nonlocal cachestat_ok
            size = st.st_size
            count = (size + page - 1) // page
            if count == 0:
                return (path, size, 0, 0, True)
            if fd < 0:
                return None
            if cachestat_ok:
                n = count_cached(fd)
                if n >= 0:
                    return (path, size, count, n if n < count else count, True)
                if cached_pages(fd, 0, 0)[1] == errno.ENOSYS:
                    cachestat_ok = False  # a kernel before 6.5: mincore from now on
            return (path, size, count, *slow(fd, 0, count))

        if jobs is None:
            single = len(paths) == 1 and not os.path.isdir(paths[0])
            jobs = 1 if single else default_workers()
        return scan_rows(paths, options, errors, measure, jobs)

    return measure_tree(paths, options, rng, errors, action)


def _report(args: argparse.Namespace, rows: list[_Row], verb: str, elapsed: float,
            failed: bool) -> None:
    size = sum([r[1] for r in rows])
    pages = sum([r[2] for r in rows])
    res = sum([r[3] for r in rows])
    if args.json:
        import json

        doc = {
            "files": [{"path": r[0], "size_bytes": r[1], "pages": r[2],
                       "resident_pages": r[3], "exact": r[4]} for r in rows],
            "total": {"files": len(rows), "size_bytes": size, "pages": pages,
                      "resident_pages": res, "exact": all([r[4] for r in rows])},
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    if not rows and failed:
        return  # only errors (on stderr): no table, no total of nothing at 100%
    lines = []
    show_files = not args.quiet and (verb == "resident" or args.verbose)
    if show_files and rows:
        lines.append(f"{'RESIDENT':>10} {'PAGES':>10} {'SIZE':>10} {'PCT':>6}  PATH")
        add = lines.append
        sizes: dict[int, str] = {}  # format_size once per distinct size
        for path, nbytes, npages, nres, exact in rows:
            text = sizes.get(nbytes)
            if text is None:
                text = sizes[nbytes] = f"{format_size(nbytes):>10}"
            pct = 100.0 if npages == 0 else 100.0 * nres / npages
            add(f"{nres:>10} {npages:>10} {text} {pct:5.1f}%{' ' if exact else '*'} {path}")
    share = _pct(res, pages) if rows else f"{'-':>6}"
    lines.append(f"{res:>10} {pages:>10} {format_size(size):>10} {share}  "
                 f"total: {plural(len(rows), 'file')}, {format_size(res * PAGE_SIZE)}"
                 f" resident ({verb}, {elapsed:.3f} s)")
    sys.stdout.write("\n".join(lines) + "\n")
    hidden = sum([not r[4] for r in rows])
    if hidden:
        sys.stdout.flush()
        sys.stderr.write(
            f"memlock {verb}: * {plural(hidden, 'file')}: the kernel shows which pages of a "
            "file are cached only to its owner, a user who may write it, or root "
            "(CAP_FOWNER); for the others it counts every page resident, so these figures "
            "are upper bounds\n")


def _run(args: argparse.Namespace, verb: str,
         action: Callable[[int, int, int, int], None] | None) -> int:
    t0 = time.perf_counter()
    errors = _Errors(verb)
    paths = _paths(args, _err(verb))
    if paths is None:
        return 2
    rows = _measure(paths, _options(args), args.range, errors, action, getattr(args, "jobs", None))
    _report(args, rows, verb, time.perf_counter() - t0, errors.count > 0)
    return 1 if errors.count else 0


# -- commands ------------------------------------------------------------------------------


def _cmd_resident(args: argparse.Namespace) -> int:
    if args.save_profile is None:
        return _run(args, "resident", None)
    t0 = time.perf_counter()
    errors = _Errors("resident")
    paths = _paths(args, _err("resident"))
    if paths is None:
        return 2
    profile, rows = capture_profile(paths, _options(args), args.range, errors)
    try:
        profile.save(args.save_profile)
    except OSError as exc:
        _err("resident")(f"cannot save the profile {args.save_profile}: {exc.strerror or exc}")
        return 1
    _report(args, rows, "resident", time.perf_counter() - t0, errors.count > 0)
    return 1 if errors.count else 0


def _load_profile(args: argparse.Namespace, err: Callable[[str], None]) -> memlock.Profile | None:
    """The ``--profile`` of ``args``; None (after saying why) when it cannot be used."""
    if args.paths or args.files_from is not None:
        err("--profile names its files: give no PATH or --files-from with it")
        return None
    for flag, used in (("--range", args.range is not None), ("--watch", getattr(
            args, "watch", False)), ("--include/--exclude", args.include or args.exclude),
            ("--max-size", args.max_size is not None),
            ("--follow-symlinks", args.follow_symlinks),
            ("--one-file-system", args.one_file_system)):
        if used:
            err(f"{flag} does not go with --profile (the profile says what to take)")
            return None
    try:
        return memlock.Profile.load(args.profile)
    except OSError as exc:
        err(f"cannot read the profile {args.profile}: {exc.strerror or exc}")
    except ValueError as exc:
        err(str(exc))
    return None


def _report_skipped(err: Callable[[str], None], skipped: list[tuple[str, str]]) -> None:
    for path, why in skipped:
        err(f"skipped {path}: {why}")


def _touch_profile(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    err = _err("touch")
    profile = _load_profile(args, err)
    if profile is None:
        return 2
    errors = _Errors("touch")
    rows, skipped = restore_rows(profile, errors)
    _report_skipped(err, skipped)
    _report(args, rows, "touch", time.perf_counter() - t0, errors.count > 0)
    return 1 if errors.count or skipped else 0


def _cmd_touch(args: argparse.Namespace) -> int:
    if args.profile is not None:
        return _touch_profile(args)
    bar = Progress(0, 0, not args.quiet and not args.json)
    done = [0, 0]

    def progress(nbytes: int) -> None:
        done[0] += nbytes
        bar.update(done[0], done[1])

    from .._cli_api import touch_fd

    def action(fd: int, size: int, off: int, n: int) -> None:
        touch_fd(fd, size, off, n, progress if bar.enabled else None)
        done[1] += 1

    if bar.enabled:
        # Size the bar before starting (a second walk is cheap next to reading the data).
        paths = _paths(args, lambda _m: None) or []
        entries = list(walk(paths, _options(args), lambda _p, _e: None))
        bar.total = max(1, sum(p.length for p in plan(entries, args.range)))
        bar.files = len(entries)
    try:
        return _run(args, "touch", action)
    finally:
        bar.close()


def _cmd_evict(args: argparse.Namespace) -> int:
    from .._cli_api import evict_fd

    def action(fd: int, size: int, off: int, n: int) -> None:
        if n:
            evict_fd(fd, off, n)

    return _run(args, "evict", action)


def _cmd_lock(args: argparse.Namespace) -> int:
    from ._hold import HoldConfig, hold

    err = _err("lock")
    profile = None
    if args.profile is not None:
        profile = _load_profile(args, err)
        if profile is None:
            return 2
        paths: list[str] | None = []
    else:
        if args.budget is not None:
            err("--budget goes with --profile")
            return 2
        paths = _paths(args, err)
    if paths is None:
        return 2
    cfg = HoldConfig(paths=paths, walk=_options(args), range=args.range, profile=profile,
                     budget=args.budget,
                     keep_going=args.keep_going, onfault=args.onfault, watch=args.watch,
                     interval=args.interval, pidfile=args.pidfile, daemon=args.daemon,
                     quiet=args.quiet, verbose=args.verbose, json=args.json, log=args.log)
    return hold(cfg, err)
