"""``memlock lock``: lock a set of files, hold them, rescan on SIGHUP or by polling.

The holder never reads its mappings (see :mod:`memlock._files`), so a file truncated
while held cannot kill it with SIGBUS; changes are seen through ``stat`` (identity =
st_dev, st_ino, st_size, st_mtime_ns) and the file is locked again. On a rescan the new
lock is taken before the old one is released, so an unchanged or rewritten file never
leaves RAM in between.

Signals are turned into bytes on a pipe (``signal.set_wakeup_fd``) that the main loop
waits on with ``select``: no work ever runs inside a signal handler.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ._files import LockedFile, _cached_pages, _lock_fd, _open_regular, _page_range
from ._filewalk import Planned, Progress, WalkOptions, plan, walk
from ._info import limits
from ._pages import PAGE_SIZE
from ._platform import BACKEND
from ._units import format_size
from .errors import LockLimitError, MemlockError

__all__ = ["HoldConfig", "Holder", "cgroup_memory_headroom", "hold", "sd_notify"]

_UNLIMITED = 1 << 62


# -- environment -------------------------------------------------------------------------


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_memory_headroom(
    cgroup_text: str | None = None, root: str = "/sys/fs/cgroup"
) -> tuple[int, int, str] | None:
    """(limit, usage, cgroup directory) of the tightest memory cgroup above this process.

    Reads cgroup v1 (``memory.limit_in_bytes``/``memory.usage_in_bytes``) or v2
    (``memory.max``/``memory.current``) along the path to the root. None when unlimited.
    """
    if cgroup_text is None:
        try:
            with open("/proc/self/cgroup") as f:
                cgroup_text = f.read()
        except OSError:
            return None
    best: tuple[int, int, str] | None = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "memory" in controllers.split(","):
            base, lim_name, use_name = root + "/memory", "memory.limit_in_bytes", \
                "memory.usage_in_bytes"
        elif controllers == "" and parts[0] == "0":
            base, lim_name, use_name = root, "memory.max", "memory.current"
        else:
            continue
        rel = path.strip("/")
        while True:
            d = f"{base}/{rel}" if rel else base
            lim = _read_int(f"{d}/{lim_name}")
            use = _read_int(f"{d}/{use_name}")
            if lim is not None and use is not None and lim < _UNLIMITED and (
                best is None or lim - use < best[0] - best[1]
            ):
                best = (lim, use, d)
            if not rel:
                break
            rel = rel.rpartition("/")[0]
    return best


def sd_notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` to systemd's NOTIFY_SOCKET; False when there is none."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
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


def _resident_bytes(items: Iterable[Planned]) -> int:
    total = 0
    for p in items:
        try:
            fd, _ = _open_regular(p.entry.path)
        except OSError:
            continue
        try:
            first, count = _page_range(p.offset, p.length)
            total += _cached_pages(fd, first, count) * PAGE_SIZE
        finally:
            os.close(fd)
    return total


def preflight(items: list[Planned], keep_going: bool) -> tuple[list[Planned], list[Planned],
                                                                LockLimitError | None]:
    """Compare what ``items`` need with what may be locked, before locking anything.

    Returns (to lock, left out, the error explaining why). Without ``keep_going`` any
    shortfall leaves everything out.
    """
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
                hint=BACKEND.limit_fix(total + locked), requested=total, limit=lim.soft,
                locked=locked,
            )
    cg = cgroup_memory_headroom()
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


# -- the holder ----------------------------------------------------------------------------


@dataclass
class HoldConfig:
    """What ``memlock lock`` was asked to do."""

    paths: list[str]
    walk: WalkOptions = field(default_factory=WalkOptions)
    range: tuple[int, int | None] | None = None
    keep_going: bool = False
    onfault: bool = False
    watch: bool = False
    interval: float = 2.0
    pidfile: str | None = None
    daemon: bool = False
    quiet: bool = False
    verbose: bool = False
    json: bool = False


class Holder:
    """The locked files of one ``memlock lock``, keyed by path."""

    def __init__(self, config: HoldConfig, err: Callable[[str], None]) -> None:
        self.config = config
        self.err = err
        self.held: dict[str, LockedFile] = {}
        self.failed: dict[str, str] = {}
        self._reported: set[tuple[str, tuple[int, int, int, int]]] = set()
        self._stamp: list[int | None] | None = None

    def scan(self) -> list[Planned]:
        """Walk the paths now."""
        def on_error(path: str, exc: OSError) -> None:
            self.failed[path] = exc.strerror or str(exc)

        return plan(walk(self.config.paths, self.config.walk, on_error), self.config.range)

    @property
    def locked_bytes(self) -> int:
        """Bytes of the files held."""
        return sum(f.nbytes for f in self.held.values())

    def _lock_one(self, p: Planned) -> LockedFile:
        fd, st = _open_regular(p.entry.path)
        try:
            if (st.st_dev, st.st_ino) != (p.entry.dev, p.entry.ino):
                # Replaced (or swapped for a symbolic link) since the walk saw it: lock only
                # what the walk checked; a rescan picks up the new file.
                raise OSError(errno.ESTALE, "replaced since it was scanned", p.entry.path)
            off = min(p.offset, st.st_size)
            n = min(p.length, st.st_size - off)
            return _lock_fd(p.entry.path, fd, st, off, n, self.config.onfault)
        finally:
            os.close(fd)

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
            self.held[p.entry.path] = lf
            done += p.length
            if self.config.verbose:
                self.err(f"locked {p.entry.path} ({format_size(lf.nbytes)})")
            if progress is not None:
                progress(done, len(self.held))

    def rescan(self) -> tuple[int, int, int]:
        """Lock new and changed files (new lock first), release vanished ones.

        Returns (new, changed, released) counts.
        """
        self.failed = {}
        items = self.scan()
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
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# -- process -----------------------------------------------------------------------------


def _check_pidfile(path: str) -> None:
    """Raise OSError now if the pidfile could not be written later."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
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
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
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


def _summary(cfg: HoldConfig, holder: Holder, left: list[Planned], seconds: float) -> str:
    nbytes = holder.locked_bytes
    pages = sum(_page_range(f.offset, f.nbytes)[1] for f in holder.held.values())
    failed = dict(holder.failed)
    for p in left:
        failed.setdefault(p.entry.path, "over the limit (not attempted)")
    if cfg.json:
        return json.dumps({
            "event": "locked", "pid": os.getpid(), "files": len(holder.held),
            "bytes": nbytes, "pages": pages, "seconds": round(seconds, 6),
            "failed": [{"path": k, "error": v} for k, v in sorted(failed.items())],
        })
    line = (f"memlock: locked {len(holder.held)} files, {format_size(nbytes)} ({pages} pages) "
            f"in {seconds:.2f} s; holding as pid {os.getpid()}")
    if failed:
        line += f"; {len(failed)} not locked"
    return line


def hold(cfg: HoldConfig, err: Callable[[str], None]) -> int:
    """Run ``memlock lock``: lock, report, hold until SIGTERM/SIGINT. Returns the exit status."""
    cfg.paths = [os.path.abspath(p) for p in cfg.paths]
    if cfg.pidfile is not None:
        cfg.pidfile = os.path.abspath(cfg.pidfile)
    if cfg.daemon:
        status = _daemonize()
        if status is not None:
            return status
    try:
        code = _hold(cfg, err)
    except BaseException:
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


def _stopping(caught: list[int]) -> bool:
    return signal.SIGTERM in caught or signal.SIGINT in caught


def _hold_loop(cfg: HoldConfig, holder: Holder, err: Callable[[str], None], r: int,
               caught: list[int]) -> int:
    t0 = time.perf_counter()
    items = holder.scan()
    if holder.failed and not cfg.keep_going:
        for path, why in holder.failed.items():
            err(f"{path}: {why}")
        err("nothing was locked (use --keep-going to lock the rest)")
        return 1
    to_lock, left, problem = preflight(items, cfg.keep_going)
    if problem is not None:
        err(str(problem))
        if not cfg.keep_going:
            err("nothing was locked")
            return 1
        err("--keep-going: locking what fits")
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
    for path, why in sorted(holder.failed.items()):
        err(f"not locked: {path}: {why}")
    if cfg.pidfile is not None:
        try:
            _write_pidfile(cfg.pidfile)
        except OSError as exc:
            err(f"pidfile {cfg.pidfile}: {exc.strerror or exc}")
            return 1
    print(_summary(cfg, holder, left, time.perf_counter() - t0), flush=True)
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
            return 0
        hup = signal.SIGHUP in sigs
        if hup or (cfg.watch and holder.changed()) or (cfg.watch and holder.tree_changed()):
            if hup:
                usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")  # systemd 253+ wants both
            new, changed, released = holder.rescan()
            if not cfg.quiet and (new or changed or released):
                err(f"rescan: {new} new, {changed} re-locked, {released} released; holding "
                    f"{len(holder.held)} files, {format_size(holder.locked_bytes)}")
            if hup:
                sd_notify(f"READY=1\nSTATUS=holding {len(holder.held)} files")
