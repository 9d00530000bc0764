"""``memlock lock``: lock a set of files, hold them, rescan on SIGHUP or by polling.

The holder never reads its mappings (see :mod:`memlock._files`), so a file truncated
while held cannot kill it with SIGBUS; changes are seen through ``stat`` (identity =
st_dev, st_ino, st_size, st_mtime_ns) and the file is locked again. On a rescan the new
lock is taken before the old one is released, so an unchanged or rewritten file never
leaves RAM in between.

Signals are turned into bytes on a pipe (``signal.set_wakeup_fd``) that the main loop
waits on with ``select``: no work ever runs inside a signal handler.

Each held file keeps one descriptor open (Python's ``mmap`` keeps a duplicate of the
file's descriptor for the mapping's lifetime): before locking, the holder makes sure
RLIMIT_NOFILE allows them all, raising its soft limit up to the hard one if needed, and
otherwise fails with the count and the fix. Nothing at all to lock is a failure too:
the holder never holds nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Callable

import memlock
from memlock.errors import LockLimitError, MemlockError

from .._cli_api import (
    Planned,
    WalkOptions,
    describe_error,
    descriptor_room,
    format_size,
    lock_planned,
    page_range,
    plan,
    plural,
    preflight,
    pseudo_file_systems,
    touch_planned,
    walk,
    within_budget,
)
from ._progress import Progress

__all__ = ["HoldConfig", "Holder", "descriptor_room", "hold", "sd_notify"]


# -- environment -------------------------------------------------------------------------


def sd_notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` to systemd's NOTIFY_SOCKET; False when there is none."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    import socket  # only under systemd (~5 ms of start-up otherwise)

    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError:
        return False
    return True


# -- planning ------------------------------------------------------------------------------


def _descriptor_message(files: int, needed: int, soft: int, hard: int) -> str:
    limit = f"RLIMIT_NOFILE {soft}" + (f" (hard limit {hard})" if hard != soft else "")
    return (f"cannot hold {plural(files, 'file')}: each locked file keeps a descriptor open, "
            f"so this needs {needed} open files, over {limit}, which this process cannot "
            f"raise. How to fix: allow {needed} open files: `ulimit -n {needed}` in the shell "
            f"that starts memlock, `LimitNOFILE={needed}` in a systemd unit, `docker run "
            f"--ulimit nofile={needed}`; or lock fewer files (--max-size, --include, --exclude)")


def _nothing_to_lock(cfg: HoldConfig, items: list[Planned]) -> str:
    """Why the walk found nothing to lock, for a message."""
    if cfg.profile is not None:
        return (f"the profile {cfg.profile.path} has no range to lock"
                + (" within --budget" if cfg.budget is not None else "")
                + (f" ({plural(len(cfg.profile.files), 'file')} in it)"))
    if not items:
        opts = cfg.walk
        used = [flag for flag, on in (
            (f"--max-size {format_size(opts.max_size)}", opts.max_size is not None),
            ("--include", bool(opts.include)), ("--exclude", bool(opts.exclude)),
            ("--one-file-system", opts.one_file_system)) if on]
        return "no files found" + (f" that pass {', '.join(used)}" if used else "")
    if cfg.range is not None and any(p.entry.size for p in items):
        return f"--range is past the end of every file ({plural(len(items), 'file')})"
    return "the file is empty" if len(items) == 1 else f"all {len(items)} files are empty"


# -- the holder ----------------------------------------------------------------------------


class HoldConfig:
    """What ``memlock lock`` was asked to do.

    A plain class, not a dataclass: :mod:`dataclasses` imports :mod:`inspect` (tens of
    milliseconds before a cold ``memlock lock --daemon`` can start reading).
    """

    def __init__(self, paths: list[str], walk: WalkOptions | None = None,
                 range: tuple[int, int | None] | None = None, keep_going: bool = False,
                 onfault: bool = False, watch: bool = False, interval: float = 2.0,
                 pidfile: str | None = None, daemon: bool = False, quiet: bool = False,
                 verbose: bool = False, json: bool = False, log: str | None = None,
                 profile: memlock.Profile | None = None, budget: int | None = None) -> None:
        self.paths = paths
        self.walk = WalkOptions() if walk is None else walk
        self.range = range
        self.keep_going = keep_going
        self.onfault = onfault
        self.watch = watch
        self.interval = interval
        self.pidfile = pidfile
        self.daemon = daemon
        self.quiet = quiet
        self.verbose = verbose
        self.json = json
        self.log = log
        #: Lock this profile's ranges instead of walking ``paths``.
        self.profile = profile
        #: With ``profile``: bytes to lock at most (the rest is touched).
        self.budget = budget


class Holder:
    """The locked files of one ``memlock lock``, keyed by path."""

    def __init__(self, config: HoldConfig, err: Callable[[str], None]) -> None:
        self.config = config
        self.err = err
        self.held: dict[str, memlock.LockedFile] = {}
        self.failed: dict[str, str] = {}
        self._reported: set[tuple[str, tuple[int, int, int, int]]] = set()
        self._stamp: list[int | None] | None = None
        #: With a profile: (path, reason) of its files that changed since it was saved,
        #: and the ranges over the budget (touched instead of locked).
        self.skipped: tuple[tuple[str, str], ...] = ()
        self.over_budget: list[Planned] = []

    def key(self, p: Planned) -> str:
        """The key of ``p`` in :attr:`held`: its path (with a profile, path and range)."""
        if self.config.profile is None:
            return p.entry.path
        return f"{p.entry.path} [{p.offset}, {p.offset + p.length})"

    def scan(self) -> list[Planned]:
        """Walk the paths now (with a profile: its ranges within the budget)."""
        profile = self.config.profile
        if profile is not None:
            items, self.skipped = profile.plan()
            items, self.over_budget = within_budget(items, self.config.budget)
            return items

        def on_error(path: str, exc: OSError) -> None:
            self.failed[path] = exc.strerror or str(exc)

        return plan(walk(self.config.paths, self.config.walk, on_error), self.config.range)

    @property
    def locked_bytes(self) -> int:
        """Bytes of the files held."""
        return sum(f.nbytes for f in self.held.values())

    def _lock_one(self, p: Planned) -> memlock.LockedFile:
        return lock_planned(p, self.config.onfault, exact=self.config.profile is not None)

    def lock_initial(self, items: list[Planned], progress: Callable[[int, int], None] | None,
                     stop: Callable[[], bool]) -> None:
        """Lock ``items``; all or nothing unless keep_going (then failures are recorded)."""
        done = 0
        for p in items:
            if stop():
                return
            try:
                lf = self._lock_one(p)
            except (OSError, ValueError) as exc:
                if not self.config.keep_going:
                    self.release_all()
                    raise
                self.failed[p.entry.path] = _describe(exc)
                continue
            self.held[self.key(p)] = lf
            done += p.length
            if self.config.verbose:
                self.err(f"locked {p.entry.path} ({format_size(lf.nbytes)})")
            if progress is not None:
                progress(done, len(self.held))

    def rescan(self) -> tuple[int, int, int]:
        """Lock new and changed files (new lock first), release vanished ones.

        Returns (new, changed, released) counts. With a profile, nothing changes: it
        names fixed ranges of files whose identity it checked.
        """
        if self.config.profile is not None:
            return 0, 0, 0
        self.failed = {}
        items = self.scan()
        # New locks are taken before old ones go: room for all of them (else EMFILE, whose
        # message names RLIMIT_NOFILE).
        descriptor_room(sum(1 for p in items if p.length))
        wanted = {p.entry.path: p for p in items}
        new = changed = released = 0
        for path, p in wanted.items():
            old = self.held.get(path)
            ident = _current_identity(path)
            if old is not None and old.identity == ident and old.locked:
                continue
            try:
                lf = self._lock_one(p)
            except (OSError, ValueError) as exc:
                if old is not None and isinstance(exc, LockLimitError):
                    old.unlock()  # make room: the old copy is stale anyway
                    del self.held[path]
                    try:
                        lf = self._lock_one(p)
                    except (OSError, ValueError) as exc2:
                        self._report(path, ident, exc2)
                        continue
                else:
                    self._report(path, ident, exc)
                    continue
            self.held[path] = lf
            if old is not None:
                old.unlock()
                changed += 1
            else:
                new += 1
            if self.config.verbose:
                self.err(f"locked {path} ({format_size(lf.nbytes)})")
        for path in [p for p in self.held if p not in wanted]:
            self.held.pop(path).unlock()
            released += 1
            if self.config.verbose:
                self.err(f"released {path}")
        return new, changed, released

    def changed(self) -> bool:
        """Whether a held file was replaced, rewritten, or vanished (a stat each)."""
        return any(_current_identity(p) != f.identity for p, f in self.held.items())

    def _report(self, path: str, ident: tuple[int, int, int, int] | None,
                exc: BaseException) -> None:
        self.failed[path] = _describe(exc)
        key = (path, ident or (0, 0, 0, 0))
        if key not in self._reported:
            self._reported.add(key)
            self.err(f"cannot lock {path}: {_describe(exc)}")

    def tree_changed(self) -> bool:
        """A cheap check for new files: the named paths' mtimes moved since the last call."""
        stamp: list[int | None] = []
        for p in self.config.paths:
            try:
                stamp.append(os.stat(p).st_mtime_ns)
            except OSError:
                stamp.append(None)
        prev, self._stamp = self._stamp, stamp
        return prev is not None and prev != stamp

    def release_all(self) -> None:
        """Unlock everything held."""
        while self.held:
            _, lf = self.held.popitem()
            lf.unlock()


def _current_identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns)


def _describe(exc: BaseException) -> str:
    """A per-file reason: the error's text; for EMFILE, the limit and the fix."""
    text = describe_error(exc, with_hint=False)
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        text += (f" (RLIMIT_NOFILE {soft} reached: each held file keeps a descriptor open; "
                 "raise it with `ulimit -n N` or systemd LimitNOFILE=N)")
    return text


# -- process -----------------------------------------------------------------------------


def _check_pidfile(path: str) -> None:
    """Raise OSError now if the pidfile could not be written later.

    The pidfile is replaced by a rename: one that exists must be a regular file (a
    ``--pidfile /dev/null`` must not replace the device).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "exists and is not a regular file", path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w"):
        pass
    os.unlink(tmp)


def _write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove_pidfile(path: str) -> None:
    """Remove the pidfile if it is still ours: a regular file holding our pid.

    Never waits: a FIFO put in its place is opened without blocking, and left alone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            ours = stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 64).strip() == str(
                os.getpid()).encode()
        finally:
            os.close(fd)
        if ours:
            os.unlink(path)
    except OSError:
        pass


def _daemonize() -> int | None:
    """Fork; in the parent wait for the child's status byte and return it; None in the child.

    The child writes its status with :func:`_daemon_ready` once it is locked (or failed).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        data = b""
        try:
            while True:
                chunk = os.read(r, 16)
                if not chunk:
                    break
                data += chunk
        except KeyboardInterrupt:
            # Ctrl-C reaches only the parent (the child has its own session): stop the
            # child too, so that no holder survives a command that reported failure.
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            return 128 + signal.SIGINT
        finally:
            os.close(r)
        if not data:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else (code or 1)
        return data[0]
    os.close(r)
    os.setsid()
    _DAEMON_PIPE.append(w)
    return None


_DAEMON_PIPE: list[int] = []


def _daemon_ready(status: int) -> None:
    """Tell the waiting parent our status and detach from its terminal."""
    if not _DAEMON_PIPE:
        return
    w = _DAEMON_PIPE.pop()
    sys.stdout.flush()
    sys.stderr.flush()
    if status == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    with contextlib.suppress(OSError):
        os.write(w, bytes([status]))
    os.close(w)


_LOG_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY
              | getattr(os, "O_CLOEXEC", 0))


def _append_log(path: str, message: str) -> None:
    """Append ``message`` to the log at ``path``, each line with a timestamp and our pid.

    Opened for each message: a rotated log is followed, and no descriptor stays open.
    O_NONBLOCK: a FIFO without a reader is an error (ENXIO), not a hang.
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    text = "".join(f"{stamp} memlock lock[{os.getpid()}]: {line}\n"
                   for line in message.splitlines() or [""])
    fd = os.open(path, _LOG_FLAGS, 0o644)
    try:
        os.write(fd, text.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)


def _check_log(path: str) -> None:
    """Raise OSError now if the log could not be appended to later.

    A regular file of procfs or sysfs is refused before anything is written to it (a
    write there may change a kernel setting); devices and FIFOs are allowed.
    """
    try:
        fd = os.open(path, _LOG_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(exc.errno, "a FIFO that no process reads", path) from None
        raise
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    fs_type = pseudo_file_systems().get(st.st_dev)
    if stat.S_ISREG(st.st_mode) and fs_type is not None:
        raise OSError(errno.EINVAL, f"a file of the {fs_type} file system, not a log", path)


def _to_log(path: str | None, message: str) -> None:
    """Append ``message`` to the log if there is one; a failing log is not fatal."""
    if path is not None:
        with contextlib.suppress(OSError):
            _append_log(path, message)


def _logged(err: Callable[[str], None], path: str) -> Callable[[str], None]:
    """``err`` that also appends each message to the log."""
    def both(message: str) -> None:
        err(message)
        _to_log(path, message)

    return both


def _summary(cfg: HoldConfig, holder: Holder, seconds: float) -> str:
    nbytes = holder.locked_bytes
    pages = sum(page_range(f.offset, f.nbytes)[1] for f in holder.held.values())
    failed = holder.failed
    over = [p for p in holder.over_budget if p.length]
    if cfg.json:
        import json

        doc = {
            "event": "locked", "pid": os.getpid(),
            "files": len({f.path for f in holder.held.values()}),
            "bytes": nbytes, "pages": pages, "seconds": round(seconds, 6),
            "failed": [{"path": k, "error": v} for k, v in sorted(failed.items())],
        }
        if cfg.profile is not None:
            doc["ranges"] = len(holder.held)
            doc["over_budget"] = [{"path": p.entry.path, "offset": p.offset,
                                   "length": p.length} for p in over]
            doc["skipped"] = [{"path": k, "reason": v} for k, v in holder.skipped]
        return json.dumps(doc)
    what = plural(len(holder.held), "range" if cfg.profile is not None else "file")
    line = (f"memlock: locked {what}, {format_size(nbytes)} "
            f"({plural(pages, 'page')}) in {seconds:.2f} s; holding as pid {os.getpid()}")
    if failed:
        line += f"; {len(failed)} not locked"
    if over:
        line += (f"; {plural(len(over), 'range')}, {format_size(sum(p.length for p in over))}"
                 " over the budget (touched, not locked)")
    if holder.skipped:
        line += f"; {plural(len(holder.skipped), 'file')} skipped (changed since the profile)"
    return line


def hold(cfg: HoldConfig, err: Callable[[str], None]) -> int:
    """Run ``memlock lock``: lock, report, hold until SIGTERM/SIGINT. Returns the exit status."""
    # Absolute (rescans do not depend on the working directory); "" stays "" (no such
    # file), not the working directory that abspath would make of it.
    cfg.paths = [os.path.abspath(p) if p else p for p in cfg.paths]
    if cfg.pidfile is not None:
        cfg.pidfile = os.path.abspath(cfg.pidfile)
    log = cfg.log = os.path.abspath(cfg.log) if cfg.log is not None else None
    if log is not None:
        try:  # fail before locking anything, not after
            _check_log(log)
            _append_log(log, f"starting: {' '.join(cfg.paths)}")
        except OSError as exc:
            err(f"log {log}: {describe_error(exc)}")
            err("nothing was locked")
            return 1
        err = _logged(err, log)
    if cfg.daemon:
        status = _daemonize()
        if status is not None:
            return status
    try:
        code = _hold(cfg, err)
    except BaseException as exc:
        if isinstance(exc, Exception):  # stderr may be gone (--daemon): tell the log
            _to_log(log, f"internal error: {type(exc).__name__}: {describe_error(exc)}")
        _daemon_ready(1)
        raise
    _daemon_ready(code)
    return code


def _hold(cfg: HoldConfig, err: Callable[[str], None]) -> int:
    r, w = os.pipe()
    os.set_blocking(w, False)
    os.set_blocking(r, False)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    caught: list[int] = []
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    old_handlers = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in watched}
    holder = Holder(cfg, err)
    try:
        return _hold_loop(cfg, holder, err, r, caught)
    finally:
        holder.release_all()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(old_fd)
        os.close(r)
        os.close(w)
        if cfg.pidfile is not None:
            _remove_pidfile(cfg.pidfile)


def _list_failed(holder: Holder, err: Callable[[str], None]) -> None:
    """Say which files were not locked and why, one line each (as --json lists them)."""
    for path, why in sorted(holder.failed.items()):
        err(f"not locked: {path}: {why}")


def _touch_over_budget(holder: Holder, err: Callable[[str], None]) -> None:
    """Touch the ranges over the budget into the page cache; say what they are."""
    for p in holder.over_budget:
        if not p.length:
            continue
        try:
            touch_planned(p)
        except OSError as exc:
            holder.failed[holder.key(p)] = _describe(exc)
            continue
        if not holder.config.quiet and not holder.config.json:
            err(f"over the budget, touched but not locked: {p.entry.path} bytes "
                f"{p.offset}-{p.offset + p.length} ({format_size(p.length)})")


def _stopping(caught: list[int]) -> bool:
    return signal.SIGTERM in caught or signal.SIGINT in caught


def _hold_loop(cfg: HoldConfig, holder: Holder, err: Callable[[str], None], r: int,
               caught: list[int]) -> int:
    t0 = time.perf_counter()
    items = holder.scan()
    for path, why in holder.skipped:
        err(f"skipped {path}: {why}")
    if holder.failed and not cfg.keep_going:
        for path, why in holder.failed.items():
            err(f"{path}: {why}")
        err("nothing was locked (use --keep-going to lock the rest)")
        return 1
    if not any(p.length for p in items):
        _touch_over_budget(holder, err)  # a budget under one page: still warm the ranges
        _list_failed(holder, err)
        err(f"nothing to lock: {_nothing_to_lock(cfg, items)}; exiting instead of holding "
            "nothing")
        return 1
    to_lock, left, problem = preflight(items, cfg.keep_going)
    if problem is not None:
        err(str(problem))
        if not cfg.keep_going:
            err("nothing was locked")
            return 1
        err("--keep-going: locking what fits")
    for p in left:
        holder.failed.setdefault(p.entry.path, "over the limit (not attempted)")
    mapped = [p for p in to_lock if p.length]
    short = descriptor_room(len(mapped))
    if short is not None:
        err(_descriptor_message(len(mapped), *short))
        if not cfg.keep_going:
            err("nothing was locked")
            return 1
        err("--keep-going: locking what fits")
        room = len(mapped) - (short[0] - short[1])  # descriptors left for mappings
        fit: list[Planned] = []
        for p in to_lock:
            if p.length and room <= 0:
                holder.failed[p.entry.path] = f"no descriptor left (RLIMIT_NOFILE {short[1]})"
                continue
            room -= bool(p.length)
            fit.append(p)
        to_lock = fit
    if not any(p.length for p in to_lock):
        _list_failed(holder, err)
        err("nothing was locked: none of the files fits")
        return 1
    if cfg.pidfile is not None:
        try:  # fail before locking anything, not after
            _check_pidfile(cfg.pidfile)
        except OSError as exc:
            err(f"pidfile {cfg.pidfile}: {exc.strerror or exc}")
            err("nothing was locked")
            return 1
    bar = Progress(sum(p.length for p in to_lock), len(to_lock), not cfg.quiet)
    try:
        holder.lock_initial(to_lock, bar.update, lambda: _stopping(caught))
    except (MemlockError, OSError, ValueError) as exc:
        bar.close()
        hint = getattr(exc, "hint", None)
        err(_describe(exc) + (f"\n{hint}" if hint else ""))
        err("nothing was locked")
        return 1
    bar.close()
    if _stopping(caught):
        return 0
    _touch_over_budget(holder, err)
    _list_failed(holder, err)
    if not holder.locked_bytes:
        err("nothing was locked: no file could be locked")
        return 1
    if cfg.pidfile is not None:
        try:
            _write_pidfile(cfg.pidfile)
        except OSError as exc:
            err(f"pidfile {cfg.pidfile}: {exc.strerror or exc}")
            return 1
    summary = _summary(cfg, holder, time.perf_counter() - t0)
    print(summary, flush=True)
    _to_log(cfg.log, summary.removeprefix("memlock: "))
    sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=holding {len(holder.held)} files")
    _daemon_ready(0)
    holder.tree_changed()
    timeout = cfg.interval if cfg.watch else None
    while True:
        if not caught:
            try:
                ready, _, _ = select.select([r], [], [], timeout)
            except InterruptedError:
                ready = []
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(r, 512)
        # Take the signals seen so far; one arriving after this stays for the next round.
        sigs = caught[:]
        del caught[: len(sigs)]
        if _stopping(sigs):
            sd_notify("STOPPING=1")
            stop = next(s for s in sigs if s in (signal.SIGTERM, signal.SIGINT))
            _to_log(cfg.log, f"{signal.Signals(stop).name}: releasing "
                    f"{plural(len(holder.held), 'file')}, {format_size(holder.locked_bytes)}")
            return 0
        hup = signal.SIGHUP in sigs
        if hup or (cfg.watch and holder.changed()) or (cfg.watch and holder.tree_changed()):
            if hup:
                usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")  # systemd 253+ wants both
            new, changed, released = holder.rescan()
            line = (f"rescan{' (SIGHUP)' if hup else ''}: {new} new, {changed} re-locked, "
                    f"{released} released, {len(holder.failed)} not locked; holding "
                    f"{plural(len(holder.held), 'file')}, {format_size(holder.locked_bytes)}")
            if not cfg.quiet and (new or changed or released):
                err(line)  # and to the log
            else:  # the log has every rescan
                _to_log(cfg.log, line)
            if hup:
                sd_notify(f"READY=1\nSTATUS=holding {len(holder.held)} files")
