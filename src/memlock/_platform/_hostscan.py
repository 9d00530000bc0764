"""Every process on a Linux host, from /proc in one pass: what each has locked and may lock.

One read of /proc/PID/status per process says whether it has anything locked (VmLck), its
user, its name and its capabilities; only the processes that are kept cost more reads:
``cmdline``, ``cgroup``, the limits (prlimit(2), or /proc/PID/limits where the caller may
not ask) and, for those with locked memory, ``smaps``. Files are read as bytes with
os.open/os.read: a scan of 1,000 processes is mostly the kernel's time. Where the C module
is built, its ``proc_status_scan`` does the status reads, on two threads without the GIL.

Loaded on first use (by :meth:`LinuxBackend.host_processes`), not at ``import memlock``.
"""

from __future__ import annotations

import errno
import os
import resource
import sys

from .._records import HostProcess, LockedRegion, SystemStatus
from . import _procfs

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TypeVar

    T = TypeVar("T")

__all__ = ["cgroup_name", "host_processes", "limits_from_text", "locked_regions",
           "process_locked_bytes", "resident_locked_bytes", "unaccounted_bytes"]

CAP_IPC_LOCK = 14
_RLIM_INFINITY = resource.RLIM_INFINITY
_READ_SIZE = 16384
#: From this many processes on, two threads read /proc (fewer: one thread is as fast).
_PARALLEL_MIN_PROCESSES = 256
#: Processes per job of the two threads (see _pieces).
_PIECE = 64
#: Threads of the C loop over /proc (proc_status_scan) where there are 2 CPUs or more; it
#: starts one per 16 processes at most. bench/bench_scan_loop.py on this project's 2-CPU VM
#: (best of 30; the Python loop, then C on one thread, then C on two): 100 processes 1.19,
#: 1.06, 0.61 ms; 300: 2.14, 3.22, 1.76 ms; 1,000: 7.04, 10.78, 5.81 ms. With the other CPU
#: busy, two C threads cost what one does (each takes the next pid: none waits for another).
_C_THREADS = 2
#: errno values of a process that ended since /proc was listed, or that is hidden (hidepid).
_GONE_OR_HIDDEN = (errno.ENOENT, errno.ESRCH, errno.EACCES, errno.EPERM)
#: Unit suffixes systemd gives cgroups.
_UNIT_SUFFIXES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap")


def _read(path: str) -> bytes:
    """The whole of a /proc file made in one go (status, cmdline, cgroup, limits): the
    kernel fills a large enough buffer in one read (raises OSError as os.open does)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data
        chunks = [data]
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_records(path: str) -> bytes:
    """The whole of a /proc file the kernel hands out a record at a time (smaps: about a
    page per read), read to its end."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _field(status: bytes, name: bytes) -> bytes | None:
    """The value of the ``\\nName:`` line of a status text, stripped; None if absent."""
    at = status.find(name)
    if at < 0:
        return None
    at += len(name)
    end = status.find(b"\n", at)
    return status[at:end if end >= 0 else len(status)].strip()


def _kib(value: bytes | None) -> int:
    """``N kB`` in bytes (0 for None)."""
    return int(value.split()[0]) * 1024 if value else 0


def limits_from_text(text: str) -> tuple[int | None, int | None]:
    """Soft and hard ``Max locked memory`` of a /proc/PID/limits text (None = unlimited)."""
    for line in text.splitlines():
        if line.startswith("Max locked memory"):
            soft, hard = line[len("Max locked memory"):].split()[:2]
            return (None if soft == "unlimited" else int(soft),
                    None if hard == "unlimited" else int(hard))
    return None, None


def _limits(pid: int) -> tuple[int | None, int | None]:
    """The RLIMIT_MEMLOCK of ``pid``: prlimit(2) (one call), else /proc/PID/limits.

    prlimit answers only a caller with the target's uids and gids or CAP_SYS_RESOURCE;
    /proc/PID/limits is readable by all.
    """
    if sys.platform == "linux":  # prlimit(2) is Linux's (mypy checks every OS)
        try:
            soft, hard = resource.prlimit(pid, resource.RLIMIT_MEMLOCK)
        except PermissionError:
            pass
        else:
            return (None if soft == _RLIM_INFINITY else soft,
                    None if hard == _RLIM_INFINITY else hard)
    return limits_from_text(_read(f"/proc/{pid}/limits").decode("ascii", "replace"))


def cgroup_name(text: str) -> str:
    """Where a process runs, from its /proc/PID/cgroup text.

    A container or pod where one is recognisable (``docker:<12 hex>``,
    ``podman:<12 hex>``, ``k8s:pod<uid>``), else the systemd unit (the last path component
    with a unit suffix: ``system.slice/foo.service`` is ``foo.service``), else the path
    of the memory controller (cgroup v1), the unified hierarchy (v2) or systemd's.
    """
    by_controller: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                by_controller.setdefault(controller, parts[2])
    paths = [by_controller[c] for c in ("memory", "", "name=systemd") if c in by_controller]
    for path in paths:
        container = _container(path)
        if container is not None:
            return container
    for path in paths:
        for part in reversed(path.split("/")):
            if part.endswith(_UNIT_SUFFIXES):
                return part
    return next((p for p in paths if p != "/"), paths[0] if paths else "")


def _container(path: str) -> str | None:
    """``docker:<id>``, ``podman:<id>`` or ``k8s:pod<uid>`` from a cgroup path, or None."""
    if "kubepods" not in path and "docker" not in path and "libpod" not in path:
        return None
    import re

    pod = re.search(r"kubepods.*?pod([0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12})", path)
    if pod:
        return "k8s:pod" + pod.group(1).replace("_", "-")
    found = re.search(r"(docker|libpod)[-/]([0-9a-f]{64})", path)
    if found:
        return ("podman:" if found.group(1) == "libpod" else "docker:") + found.group(2)[:12]
    return None


def locked_regions(smaps_text: str) -> tuple[LockedRegion, ...]:
    """The locked mappings (VmFlags ``lo``) of an smaps text, in address order.

    Looks only at the ``VmFlags:`` lines and parses the few mappings that are locked: a
    big process has thousands of mappings, and parsing them all took 10 ms here. Kernels
    without VmFlags (before 3.8) get the full parse.
    """
    if "\nVmFlags:" not in smaps_text:
        return tuple(
            LockedRegion(start=e.start, end=e.end, path=e.path, size=e.end - e.start,
                         locked_bytes=e.fields.get("Locked"), onfault=e.onfault)
            for e in _procfs.parse_smaps(smaps_text)
            if e.locked
        )
    out = []
    block = 0  # where the current mapping's lines begin
    while (flags_at := smaps_text.find("\nVmFlags:", block)) >= 0:
        line_end = smaps_text.find("\n", flags_at + 1)
        line_end = len(smaps_text) if line_end < 0 else line_end
        flags = smaps_text[flags_at + 9:line_end].split()
        if "lo" in flags:
            out.append(_region(smaps_text[block:flags_at], "lf" in flags))
        block = line_end + 1
    return tuple(out)


def _region(lines: str, onfault: bool) -> LockedRegion:
    """The LockedRegion of one mapping's smaps lines (before its VmFlags line)."""
    header, _, fields = lines.partition("\n")
    parts = header.split(None, 5)
    lo, _, hi = parts[0].partition("-")
    start, end = int(lo, 16), int(hi, 16)
    path = (parts[5].strip() if len(parts) == 6 else "") or "[anon]"
    at = ("\n" + fields).find("\nLocked:")  # at the start of a line
    locked = None
    if at >= 0:
        value = fields[at + 7:].split(None, 1)[:1]
        locked = int(value[0]) * 1024 if value and value[0].isdigit() else None
    return LockedRegion(start=start, end=end, path=path, size=end - start,
                        locked_bytes=locked, onfault=onfault)


class _Cache:
    """What many processes share, worked out once per scan: user names, cgroup names."""

    def __init__(self) -> None:
        self.users: dict[int, str] = {}
        self.cgroups: dict[bytes, str] = {}

    def user(self, uid: int) -> str:
        name = self.users.get(uid)
        if name is None:
            import pwd

            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self.users[uid] = name
        return name

    def cgroup(self, text: bytes) -> str:
        name = self.cgroups.get(text)
        if name is None:
            name = self.cgroups[text] = cgroup_name(text.decode("utf-8", "replace"))
        return name


def _describe(pid: int, status: bytes, regions: bool, cache: _Cache) -> HostProcess:
    """The record of ``pid``, whose /proc/PID/status text is ``status`` (raises OSError as
    the reads do)."""
    vmlck = _field(status, b"\nVmLck:")
    kernel_thread = vmlck is None  # no memory of its own: a kernel thread or a zombie
    locked = _kib(vmlck)
    uids = (_field(status, b"\nUid:") or b"").split()
    cap_eff = _field(status, b"\nCapEff:")
    privileged = cap_eff is not None and bool(int(cap_eff, 16) >> CAP_IPC_LOCK & 1)
    argv = b"" if kernel_thread else _read(f"/proc/{pid}/cmdline")
    if argv.strip(b"\0"):
        command = argv.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    else:
        name = status[5:status.find(b"\n")].strip() if status.startswith(b"Name:") else b""
        command = f"[{name.decode('utf-8', 'replace')}]"
    soft, hard = _limits(pid)
    cgroup = cache.cgroup(_read(f"/proc/{pid}/cgroup"))
    found: tuple[LockedRegion, ...] | None = ()
    if locked and regions:
        try:
            found = locked_regions(_read_records(f"/proc/{pid}/smaps").decode("utf-8", "replace"))
        except PermissionError:
            found = None
    elif not regions:
        found = None
    return HostProcess(pid, cache.user(int(uids[1])) if len(uids) > 1 else "?", command,
                       locked, soft, hard, privileged, cgroup, found)


def _process_status(pid: int) -> bytes:
    """The /proc/PID/status text of process ``pid``, named by the caller.

    Raises:
        ValueError: ``pid`` is not a process id.
        ProcessLookupError: No process ``pid``, or ``pid`` is a thread of another process
            (/proc/TID resolves, but is not listed).
        PermissionError: The caller may not read it (hidepid).
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
        raise ValueError(f"not a process id: {pid!r}")
    try:
        status = _read(f"/proc/{pid}/status")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
    except PermissionError:
        raise PermissionError(errno.EACCES, f"process {pid}: may not read its "
                              "/proc files (hidepid?)") from None
    tgid = _field(status, b"\nTgid:")
    if tgid and int(tgid) != pid:
        raise ProcessLookupError(errno.ESRCH, f"{pid} is a thread of process {int(tgid)}, "
                                 "not a process")
    return status


def process_locked_bytes(pid: int) -> int | None:
    """VmLck of process ``pid``; None when it has no memory of its own (a kernel thread,
    a zombie). Raises as :func:`host_processes` does for a named PID."""
    vmlck = _field(_process_status(pid), b"\nVmLck:")
    return None if vmlck is None else _kib(vmlck)


def _pieces(items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` in jobs of _PIECE for run_parallel: after Ctrl-C the other thread stops
    at the end of its job, so a job is a few reads (under a millisecond), not half the host."""
    return [items[i:i + _PIECE] for i in range(0, len(items), _PIECE)]


def _c_scan() -> Callable[[bool, int], list[tuple[int, bytes]]] | None:
    """The C module's loop over /proc (``proc_status_scan``), or None: not Linux, not
    built, built before it had one, or MEMLOCK_PURE_PYTHON set. Imports neither
    _critical nor threading (``memlock status`` pays for every import)."""
    if sys.platform == "linux" and os.environ.get("MEMLOCK_PURE_PYTHON", "") in ("", "0"):
        try:
            from .._speedups import proc_status_scan
        except ImportError:
            return None
        return proc_status_scan
    return None


def _kept_statuses(names: Sequence[str], include_unlocked: bool) -> list[tuple[int, bytes]]:
    """The Python loop of the scan (without the C module): the pid and status text of each
    process of ``names`` with a VmLck line and, unless ``include_unlocked``, VmLck > 0."""
    # The hot loop: one status read per process, most of them with nothing locked.
    open_, read, close, flags = os.open, os.read, os.close, os.O_RDONLY | os.O_CLOEXEC
    kept = []
    for name in names:
        try:
            fd = open_(f"/proc/{name}/status", flags)
            try:
                status = read(fd, _READ_SIZE)
                while len(status) % _READ_SIZE == 0 and (more := read(fd, _READ_SIZE)):
                    status += more  # thousands of supplementary groups: over 16 KiB
            finally:
                close(fd)
        except OSError as exc:  # gone since the listing, or hidden (hidepid)
            if exc.errno not in _GONE_OR_HIDDEN:
                raise
            continue
        at = status.find(b"\nVmLck:")
        if at < 0:
            continue  # a kernel thread or a zombie: no memory of its own
        if not include_unlocked and status[at + 7:at + 24].split(None, 1)[0] == b"0":
            continue
        kept.append((int(name), status))
    return kept


def host_processes(*, include_unlocked: bool = False, regions: bool = True,
                   pids: Sequence[int] | None = None) -> list[HostProcess]:
    """The processes of this host that have memory locked (see Backend.host_processes)."""
    cache = _Cache()
    out: list[HostProcess] = []
    if pids is not None:
        for pid in pids:
            status = _process_status(pid)
            try:
                out.append(_describe(pid, status, regions, cache))
            except (FileNotFoundError, ProcessLookupError):
                raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
            except PermissionError:
                raise PermissionError(errno.EACCES, f"process {pid}: may not read its "
                                      "/proc files (hidepid?)") from None
        return out

    def describe(kept: Sequence[tuple[int, bytes]]) -> None:
        for pid, status in kept:
            try:
                found = _describe(pid, status, regions, cache)
            except OSError as exc:  # gone since its status was read, or hidden
                if exc.errno not in _GONE_OR_HIDDEN:
                    raise
                continue
            out.append(found)

    def scan(names: Sequence[str]) -> None:
        describe(_kept_statuses(names, include_unlocked))

    two_cpus = (os.cpu_count() or 1) >= 2
    c_scan = _c_scan()
    if c_scan is not None:  # the C loop: every status read with the GIL released
        kept = c_scan(include_unlocked, _C_THREADS if two_cpus else 1)
        if len(kept) < _PARALLEL_MIN_PROCESSES or not two_cpus:
            describe(kept)
        else:  # --all: a few reads more per process, in two threads as below
            from .._threads import run_parallel

            run_parallel(_pieces(kept), describe, workers=2)
    else:
        names = [name for name in os.listdir("/proc") if name.isdigit()]
        if len(names) < _PARALLEL_MIN_PROCESSES or not two_cpus:
            scan(names)
        else:  # the kernel writes each status text; two threads halve the wait (GIL released)
            from .._threads import run_parallel

            run_parallel(_pieces(names), scan, workers=2)
    out.sort(key=lambda p: (-p.locked_bytes, p.pid))
    return out


def resident_locked_bytes(process: HostProcess) -> int:
    """What ``process`` keeps resident and locked, its share of pages mapped by several
    processes (``Locked:`` of smaps is proportional): its regions' sum, else its
    /proc/PID/smaps_rollup (a quarter of the kernel's time for smaps), else (the caller
    may not read either) at most its VmRSS and VmLck, which are world-readable; 0 if it
    has ended since."""
    if process.regions is not None:
        return sum(r.locked_bytes or 0 for r in process.regions)
    if not process.locked_bytes:
        return 0
    try:
        rollup = _read_records(f"/proc/{process.pid}/smaps_rollup")
        return _kib(_field(rollup, b"\nLocked:"))
    except PermissionError:
        pass
    except OSError:
        return 0
    try:
        rss = _kib(_field(_read(f"/proc/{process.pid}/status"), b"\nVmRSS:"))
    except OSError:
        return 0
    return min(rss, process.locked_bytes)


def unaccounted_bytes(processes: Sequence[HostProcess], system: SystemStatus) -> int | None:
    """Unevictable memory no process's locked mappings account for (see the backend)."""
    if system.unevictable_bytes is None:
        return None
    return max(0, system.unevictable_bytes - sum(map(resident_locked_bytes, processes)))
