"""Another process from /proc: its mappings as the kernel treats them (``memlock verify``),
and what bears on whether it may lock memory (``memlock doctor --pid``).

Loaded on first use (by :meth:`LinuxBackend.process_mappings` and
:meth:`LinuxBackend.process_context`), not at ``import memlock``.

Which mappings the kernel never locks follows mm/mlock.c (``mlock_fixup``): whatever a
process asks, mlock and mlockall leave these without ``VM_LOCKED``:

- ``VM_IO``, ``VM_PFNMAP``, ``VM_DONTEXPAND``, ``VM_MIXEDMAP`` (``VM_SPECIAL``; VmFlags
  ``io``, ``pf``, ``de``, ``mm``): device memory, ``[vvar]`` and ``[vdso]``, driver
  mappings (GPU buffers, RDMA, /dev/mem);
- hugetlbfs mappings (``ht``): huge pages are never swapped, but are not marked locked;
- the gate page ``[vsyscall]`` (not one of the process's own mappings);
- ``VM_DROPPABLE`` mappings (``dp``, Linux 6.11+: the vDSO getrandom state), which the
  kernel may free at any time by design;
- DAX mappings (files on persistent memory): smaps does not show them, so they are not
  excepted here.

Whether a core dump holds a mapping follows fs/coredump.c (``vma_dump_size``) with the
process's ``/proc/PID/coredump_filter`` bits; the ELF-header page (bit 4: the first page
of a file mapped privately from offset 0) is not counted: it is the file's header.
"""

from __future__ import annotations

import errno
import os

from . import _procfs

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from .._records import ProcessContext, ProcessMapping

__all__ = ["dumped", "mappings_from_text", "never_locked", "process_context",
           "process_mappings", "read_proc"]

#: Files a container runtime leaves in the container's root (Docker, Podman).
CONTAINER_FILES = ("/.dockerenv", "/run/.containerenv")

#: VM_SPECIAL flags as smaps shows them, and what each means.
_SPECIAL = {"io": "VM_IO (device memory)", "pf": "VM_PFNMAP (raw page frames)",
            "de": "VM_DONTEXPAND (a kernel-special mapping)",
            "mm": "VM_MIXEDMAP (driver memory)"}
#: /proc/PID/coredump_filter bits (MMF_DUMP_*).
_ANON_PRIVATE, _ANON_SHARED, _MAPPED_PRIVATE, _MAPPED_SHARED = 0, 1, 2, 3
_HUGETLB_PRIVATE, _HUGETLB_SHARED = 5, 6
_DELETED = " (deleted)"


def read_proc(pid: int, name: str) -> str:
    """The text of /proc/PID/NAME.

    Raises:
        ProcessLookupError: No process ``pid``.
        PermissionError: The caller may not read it (naming the file and who may).
    """
    path = f"/proc/{pid}/{name}"
    try:
        return _procfs.read_text(path)
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"may not read {path}: only the process's own user (while it is "
            "dumpable) or a caller with CAP_SYS_PTRACE, such as root, may") from None


def never_locked(path: str, vmflags: frozenset[str]) -> str | None:
    """Why the kernel never locks a mapping with these VmFlags (see the module); else None."""
    special = [_SPECIAL[f] for f in sorted(vmflags & _SPECIAL.keys())]
    if special:
        return f"{' and '.join(special)}: the kernel never locks such mappings"
    if "ht" in vmflags:
        return "hugetlbfs pages: never swapped, and never marked locked"
    if path == "[vsyscall]":
        return "the kernel's gate page ([vsyscall]), not one of the process's mappings"
    if "dp" in vmflags:
        return "VM_DROPPABLE (the kernel may free it at any time): never locked"
    return None


def dumped(entry: _procfs.SmapsEntry, vmflags: frozenset[str], deleted: bool,
           coredump_filter: int) -> bool:
    """Whether a core dump holds the mapping's contents (fs/coredump.c vma_dump_size)."""
    def bit(n: int) -> bool:
        return bool(coredump_filter >> n & 1)

    if "dd" in vmflags:
        return False
    if "ht" in vmflags:
        return bit(_HUGETLB_SHARED if "sh" in vmflags else _HUGETLB_PRIVATE)
    if "io" in vmflags:
        return False
    if "sh" in vmflags:  # shared: anonymous (shmem: a file with no name left) or a file's
        anonymous = deleted or entry.path.startswith("[")
        return bit(_ANON_SHARED if anonymous else _MAPPED_SHARED)
    # Private: pages the process wrote (anonymous memory, copy-on-write copies) are dumped
    # under bit 0; a file's own pages under bit 2.
    has_anon = bool(entry.fields.get("Anonymous", 0) or entry.fields.get("Swap", 0))
    if has_anon and bit(_ANON_PRIVATE):
        return True
    file_backed = not entry.path.startswith("[")
    return file_backed and bit(_MAPPED_PRIVATE)


def mappings_from_text(smaps_text: str, coredump_filter: int | None = None
                       ) -> tuple[ProcessMapping, ...]:
    """Every mapping of an smaps text; ``dumped`` judged when ``coredump_filter`` is given."""
    from .._records import ProcessMapping

    out = []
    for e in _procfs.parse_smaps(smaps_text):
        flags = e.vmflags or frozenset()
        deleted = e.path.endswith(_DELETED)
        path = e.path[: -len(_DELETED)] if deleted else e.path
        out.append(ProcessMapping(
            start=e.start, end=e.end, path=path, perms=e.perms, locked=e.locked,
            onfault=e.onfault, locked_bytes=e.fields.get("Locked"),
            swap_bytes=e.fields.get("Swap"), no_dump="dd" in flags,
            wipe_on_fork="wf" in flags, never_locked=never_locked(path, flags),
            dumped=None if coredump_filter is None else dumped(e, flags, deleted,
                                                               coredump_filter),
        ))
    return tuple(out)


def process_mappings(pid: int, *, dumps: bool = False) -> tuple[ProcessMapping, ...]:
    """The mappings of process ``pid`` (see :meth:`Backend.process_mappings`)."""
    smaps = read_proc(pid, "smaps")
    coredump_filter = int(read_proc(pid, "coredump_filter"), 16) if dumps else None
    return mappings_from_text(smaps, coredump_filter)


def _container_files(pid: int) -> bool | None:
    """Whether the root of ``pid`` has a container runtime's marker file; None where the
    caller may not look (another user's process: /proc/PID/root needs ptrace access)."""
    try:
        os.stat(f"/proc/{pid}/root/")
    except (PermissionError, ProcessLookupError):
        return None
    except OSError:  # a kernel thread or a zombie: no root
        return False
    return any(os.path.exists(f"/proc/{pid}/root{f}") for f in CONTAINER_FILES)


def _environ(pid: int) -> dict[str, str] | None:
    """The environment variables of ``pid``; None where the caller may not read them."""
    try:
        text = read_proc(pid, "environ")
    except (PermissionError, ProcessLookupError):  # ESRCH: a kernel thread or a zombie
        return None
    return dict(v.partition("=")[::2] for v in text.split("\0") if "=" in v)


def _manager_limits(pid: int, uid: int) -> tuple[int, int | None, int | None] | None:
    """(pid, soft, hard RLIMIT_MEMLOCK) of the ``systemd --user`` manager of uid ``uid``
    above ``pid``: the first ancestor in ``user@UID.service/init.scope``; None if none."""
    from ._hostscan import limits_from_text

    scope = f"user@{uid}.service/init.scope"
    for _ in range(8):  # a service is the manager's child; a few levels for helpers
        try:
            ppid = int(read_proc(pid, "stat").rpartition(")")[2].split()[1])
            if ppid <= 1:
                return None
            if scope in read_proc(ppid, "cgroup"):
                soft, hard = limits_from_text(read_proc(ppid, "limits"))
                return ppid, soft, hard
        except (OSError, ValueError, IndexError):
            return None
        pid = ppid
    return None


def process_context(pid: int) -> ProcessContext:
    """What bears on whether ``pid`` may lock memory (see Backend.process_context)."""
    from .._hints import SYSTEMD_USER, describe_environment
    from .._records import Limits, ProcessContext
    from ._hostscan import host_processes
    from ._linux_probes import cgroup_memory_headroom
    from .linux import CAP_SYS_RESOURCE, capability_effective

    found = host_processes(pids=[pid], regions=False)[0]
    status = read_proc(pid, "status")
    cgroup_text = read_proc(pid, "cgroup")
    memory = _procfs.parse_kib_fields(status)
    root_files = _container_files(pid)
    environment = describe_environment(cgroup_text, _environ(pid), root_files)
    manager = None
    if environment.kind == SYSTEMD_USER and environment.user_uid is not None:
        manager = _manager_limits(pid, environment.user_uid)
    soft, privileged = found.limit_soft, found.privileged
    available = None if soft is None or privileged else max(0, soft - found.locked_bytes)
    return ProcessContext(
        pid=pid, command=found.command, user=found.user,
        limits=Limits(soft, found.limit_hard, found.locked_bytes, available, privileged),
        may_raise_hard_limit=capability_effective(status, CAP_SYS_RESOURCE),
        vm_size=memory.get("VmSize"), rss=memory.get("VmRSS"), environment=environment,
        cgroup_memory=cgroup_memory_headroom(cgroup_text), manager_limits=manager)
