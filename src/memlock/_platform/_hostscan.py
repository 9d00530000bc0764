"""Every process on a Linux host, from /proc in one pass: what each has locked and may lock.

One read of /proc/PID/status per process says whether it has anything locked (VmLck), its
user, its name and its capabilities; only the processes that are kept cost more reads:
``cmdline``, ``cgroup``, the limits (prlimit(2), or /proc/PID/limits where the caller may
not ask) and, for those with locked memory, ``smaps``. Files are read as bytes with
os.open/os.read: a scan of 1,000 processes is mostly the kernel's time.

Loaded on first use (by :meth:`LinuxBackend.host_processes`), not at ``import memlock``.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
from collections.abc import Sequence

from .._records import HostProcess, LockedRegion, SystemStatus
from . import _procfs

__all__ = ["cgroup_name", "host_processes", "limits_from_text", "locked_regions",
           "resident_locked_bytes", "unaccounted_bytes"]

CAP_IPC_LOCK = 14
_RLIM_INFINITY = resource.RLIM_INFINITY
_READ_SIZE = 16384
#: Unit suffixes systemd gives cgroups.
_UNIT_SUFFIXES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap")


def _read(path: str) -> bytes:
    """The whole of a /proc file (raises OSError as os.open does).

    Reads until end of file: the kernel hands out smaps a mapping at a time and cmdline a
    page at a time.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_status(pid: int) -> bytes:
    """/proc/PID/status in one read: the kernel makes it whole in one go (single_open),
    and the fields the scan needs are in its first 2 KiB."""
    fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, _READ_SIZE)
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
    """The locked mappings (VmFlags ``lo``) of an smaps text, in address order."""
    return tuple(
        LockedRegion(start=e.start, end=e.end, path=e.path, size=e.end - e.start,
                     locked_bytes=e.fields.get("Locked"), onfault=e.onfault)
        for e in _procfs.parse_smaps(smaps_text)
        if e.locked
    )


class _Users:
    """uid → user name, each uid looked up once per scan."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def name(self, uid: int) -> str:
        name = self.names.get(uid)
        if name is None:
            import pwd

            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self.names[uid] = name
        return name


def _scan_one(pid: int, include_unlocked: bool, regions: bool, named: bool,
              users: _Users) -> HostProcess | None:
    """One process; None when it is not to be listed (raises OSError as the reads do)."""
    status = _read_status(pid)
    vmlck = _field(status, b"\nVmLck:")
    kernel_thread = vmlck is None  # no memory of its own: a kernel thread or a zombie
    if kernel_thread and not named:
        return None
    locked = _kib(vmlck)
    if not (locked or include_unlocked or named):
        return None
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
    cgroup = cgroup_name(_read(f"/proc/{pid}/cgroup").decode("utf-8", "replace"))
    found: tuple[LockedRegion, ...] | None = ()
    if locked and regions:
        try:
            found = locked_regions(_read(f"/proc/{pid}/smaps").decode("utf-8", "replace"))
        except PermissionError:
            found = None
    elif not regions:
        found = None
    return HostProcess(pid, users.name(int(uids[1])) if len(uids) > 1 else "?", command,
                       locked, soft, hard, privileged, cgroup, found)


def host_processes(*, include_unlocked: bool = False, regions: bool = True,
                   pids: Sequence[int] | None = None) -> list[HostProcess]:
    """The processes of this host that have memory locked (see Backend.host_processes)."""
    users = _Users()
    if pids is not None:
        out = []
        for pid in pids:
            if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
                raise ValueError(f"not a process id: {pid!r}")
            try:
                found = _scan_one(pid, include_unlocked, regions, True, users)
            except (FileNotFoundError, ProcessLookupError):
                raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
            except PermissionError:
                raise PermissionError(errno.EACCES, f"process {pid}: may not read its "
                                      "/proc files (hidepid?)") from None
            assert found is not None
            out.append(found)
        return out
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            found = _scan_one(int(name), include_unlocked, regions, False, users)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone since the listing, or hidden from this caller (hidepid)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.ENOENT):
                raise
            continue
        if found is not None:
            out.append(found)
    out.sort(key=lambda p: (-p.locked_bytes, p.pid))
    return out


def resident_locked_bytes(process: HostProcess) -> int:
    """What ``process`` keeps resident and locked: its regions' ``Locked:`` (a page mapped
    by several processes is shared among them), or, where its smaps is unreadable, at most
    VmRSS (world-readable) and VmLck (0 if it has ended since)."""
    if process.regions is not None:
        return sum(r.locked_bytes or 0 for r in process.regions)
    try:
        rss = _kib(_field(_read_status(process.pid), b"\nVmRSS:"))
    except OSError:
        return 0
    return min(rss, process.locked_bytes)


def unaccounted_bytes(processes: Sequence[HostProcess], system: SystemStatus) -> int | None:
    """Unevictable memory no process's locked mappings account for (see the backend)."""
    if system.unevictable_bytes is None:
        return None
    return max(0, system.unevictable_bytes - sum(map(resident_locked_bytes, processes)))
