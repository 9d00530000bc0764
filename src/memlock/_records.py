"""Records: the public results and :class:`FrozenRecord`, the base of every record.

The public ones are ``Limits``, ``LockedRegion``, ``ProcessStatus`` and ``SystemStatus``;
``HostProcess`` (one row of the host scan) is the command line's, through ``memlock._cli_api``.

Small immutable records without :mod:`dataclasses`, which pulls in ``inspect`` and ``ast``
(~20 ms here), too much for the ``memlock resident`` and ``memlock status`` paths. A
subclass lists its fields in ``__match_args__`` (also its ``__slots__``), fills them in
``__init__`` with ``_fill``, and gets immutability, equality, hashing, a dataclass-style
repr, pickling and ``to_dict()``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Environment", "FrozenRecord", "HostProcess", "Limits", "LockedRegion", "ProcessContext",
           "ProcessMapping", "ProcessStatus", "SystemStatus"]


class FrozenRecord:
    """Base class of immutable records (see the module docstring)."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def _fill(self, *values: object) -> None:
        """Set the fields, in ``__match_args__`` order (from ``__init__`` only)."""
        for name, value in zip(self.__match_args__, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            assert isinstance(other, FrozenRecord)
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__match_args__)
        return f"{self.__class__.__qualname__}({fields})"

    def __reduce__(self) -> tuple[type[FrozenRecord], tuple[Any, ...]]:
        return (self.__class__, self._values())

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return {name: getattr(self, name) for name in self.__match_args__}


class Limits(FrozenRecord):
    """What this process may lock.

    Attributes:
        soft: Soft RLIMIT_MEMLOCK in bytes; None means unlimited.
        hard: Hard RLIMIT_MEMLOCK in bytes; None means unlimited.
        locked_bytes: Bytes locked by this process now (VmLck on Linux); None if unknown.
        available_bytes: Bytes that may still be locked; None when unlimited or privileged.
        privileged: The process holds the privilege that lifts the limit (CAP_IPC_LOCK on
            Linux, root on the BSDs, PRIV_PROC_LOCK_MEMORY on illumos).
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = __match_args__ = ("soft", "hard", "locked_bytes", "available_bytes",
                                  "privileged")

    soft: int | None
    hard: int | None
    locked_bytes: int | None
    available_bytes: int | None
    privileged: bool

    def __init__(self, soft: int | None, hard: int | None, locked_bytes: int | None,
                 available_bytes: int | None, privileged: bool) -> None:
        self._fill(soft, hard, locked_bytes, available_bytes, privileged)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return super().to_dict()


class LockedRegion(FrozenRecord):
    """One mapping of a process that holds locked pages.

    Attributes:
        start: First address of the mapping.
        end: One past its last address.
        path: The file or pseudo-path mapped ("[heap]", "[anon]" ...).
        size: ``end - start`` in bytes.
        locked_bytes: Resident locked bytes in it (smaps ``Locked:``); None if unknown.
        onfault: Locked with MLOCK_ONFAULT/MCL_ONFAULT (pages lock as they fault in).
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = __match_args__ = ("start", "end", "path", "size", "locked_bytes", "onfault")

    start: int
    end: int
    path: str
    size: int
    locked_bytes: int | None
    onfault: bool

    def __init__(self, start: int, end: int, path: str, size: int,
                 locked_bytes: int | None, onfault: bool) -> None:
        self._fill(start, end, path, size, locked_bytes, onfault)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return super().to_dict()


class ProcessStatus(FrozenRecord):
    """What one process has locked.

    Attributes:
        pid: The process id.
        locked_bytes: Virtual size of its locked ranges (VmLck); None if unknown.
        regions: Its locked mappings, in address order.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = __match_args__ = ("pid", "locked_bytes", "regions")

    pid: int
    locked_bytes: int | None
    regions: tuple[LockedRegion, ...]

    def __init__(self, pid: int, locked_bytes: int | None,
                 regions: tuple[LockedRegion, ...] = ()) -> None:
        self._fill(pid, locked_bytes, regions)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return {
            "pid": self.pid,
            "locked_bytes": self.locked_bytes,
            "regions": [r.to_dict() for r in self.regions],
        }


class SystemStatus(FrozenRecord):
    """Machine-wide locked and wired memory. A field the OS cannot tell is None, not 0.

    Attributes:
        mlocked_bytes: Memory locked by mlock/mlockall (Linux ``Mlocked:``).
        unevictable_bytes: Memory that cannot be reclaimed (Linux ``Unevictable:``).
        total_bytes: Physical memory.
        available_bytes: Memory available for new work (Linux ``MemAvailable:``).
        wired_bytes: All wired memory (FreeBSD ``vm.stats.vm.v_wire_count``).
        user_wired_bytes: Memory wired by user processes (FreeBSD).
        max_user_wired_bytes: System-wide limit on user-wired memory (FreeBSD
            ``vm.max_user_wired``).
        max_map_count: Mappings a process may have (Linux ``vm.max_map_count``).
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = __match_args__ = (
        "mlocked_bytes", "unevictable_bytes", "total_bytes", "available_bytes", "wired_bytes",
        "user_wired_bytes", "max_user_wired_bytes", "max_map_count")

    mlocked_bytes: int | None
    unevictable_bytes: int | None
    total_bytes: int | None
    available_bytes: int | None
    wired_bytes: int | None
    user_wired_bytes: int | None
    max_user_wired_bytes: int | None
    max_map_count: int | None

    def __init__(self, mlocked_bytes: int | None = None,
                 unevictable_bytes: int | None = None, total_bytes: int | None = None,
                 available_bytes: int | None = None, wired_bytes: int | None = None,
                 user_wired_bytes: int | None = None,
                 max_user_wired_bytes: int | None = None,
                 max_map_count: int | None = None) -> None:
        self._fill(mlocked_bytes, unevictable_bytes, total_bytes, available_bytes,
                   wired_bytes, user_wired_bytes, max_user_wired_bytes, max_map_count)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return super().to_dict()


class ProcessMapping(FrozenRecord):
    """One mapping of a process, with what the kernel does with it (``memlock verify``).

    Attributes:
        start: First address of the mapping.
        end: One past its last address.
        path: The file or pseudo-path mapped ("[heap]", "[anon]" ...), without the
            kernel's " (deleted)" suffix.
        perms: ``rwxp``-style permissions.
        locked: The kernel locked it (Linux VmFlags ``lo``).
        onfault: Locked as pages fault in (``lf``): pages never touched are not resident.
        locked_bytes: Resident locked bytes (smaps ``Locked:``); None if unknown.
        swap_bytes: Bytes of it in swap (smaps ``Swap:``); None if unknown.
        no_dump: Marked to stay out of core dumps (``dd``, MADV_DONTDUMP).
        wipe_on_fork: A forked child gets zeros here (``wf``, MADV_WIPEONFORK).
        never_locked: Why mlock and mlockall leave this mapping unlocked whatever the
            process asks (device and kernel-special mappings ...); None for the others.
        dumped: Whether a core dump of the process would hold its contents (the kernel's
            rules and the process's coredump_filter); None when not asked or unknown.
    """

    __slots__ = __match_args__ = ("start", "end", "path", "perms", "locked", "onfault",
                                  "locked_bytes", "swap_bytes", "no_dump", "wipe_on_fork",
                                  "never_locked", "dumped")

    start: int
    end: int
    path: str
    perms: str
    locked: bool
    onfault: bool
    locked_bytes: int | None
    swap_bytes: int | None
    no_dump: bool
    wipe_on_fork: bool
    never_locked: str | None
    dumped: bool | None

    def __init__(self, start: int, end: int, path: str, perms: str, locked: bool,
                 onfault: bool, locked_bytes: int | None, swap_bytes: int | None,
                 no_dump: bool, wipe_on_fork: bool, never_locked: str | None,
                 dumped: bool | None) -> None:
        self._fill(start, end, path, perms, locked, onfault, locked_bytes, swap_bytes,
                   no_dump, wipe_on_fork, never_locked, dumped)

    @property
    def size(self) -> int:
        """``end - start`` in bytes."""
        return self.end - self.start
class HostProcess(FrozenRecord):
    """One process of the host scan: what it has locked, what it may lock, where it runs.

    Attributes:
        pid: The process id.
        user: Its effective user's name, or the uid as text where it has none.
        command: Its command line, arguments joined by spaces; ``[name]`` where it has
            none (kernel threads, zombies).
        locked_bytes: Virtual size of its locked ranges (VmLck).
        limit_soft: Its soft RLIMIT_MEMLOCK in bytes; None means unlimited.
        limit_hard: Its hard RLIMIT_MEMLOCK in bytes; None means unlimited.
        privileged: CAP_IPC_LOCK is in its effective set (no limit applies to it).
        cgroup: Where it runs: ``docker:<12 hex>``, ``podman:<12 hex>``,
            ``k8s:pod<uid>``, a systemd unit (``foo.service``), else the cgroup path.
        regions: Its locked mappings; None where they were not read (the caller may not
            read its smaps, or did not ask).
    """

    __slots__ = __match_args__ = ("pid", "user", "command", "locked_bytes", "limit_soft",
                                  "limit_hard", "privileged", "cgroup", "regions")

    pid: int
    user: str
    command: str
    locked_bytes: int
    limit_soft: int | None
    limit_hard: int | None
    privileged: bool
    cgroup: str
    regions: tuple[LockedRegion, ...] | None

    def __init__(self, pid: int, user: str, command: str, locked_bytes: int,
                 limit_soft: int | None, limit_hard: int | None, privileged: bool,
                 cgroup: str, regions: tuple[LockedRegion, ...] | None) -> None:
        self._fill(pid, user, command, locked_bytes, limit_soft, limit_hard, privileged,
                   cgroup, regions)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``regions`` a list, or None)."""
        out = super().to_dict()
        if self.regions is not None:
            out["regions"] = [r.to_dict() for r in self.regions]
        return out


class Environment(FrozenRecord):
    """Where a process runs, as its cgroup, environment and root tell.

    Attributes:
        kind: shell, systemd, systemd-user, docker, kubernetes, or unknown (another
            user's process whose cgroup does not tell, and whose root and environment the
            caller may not read).
        runtime: The container runtime (docker, containerd, cri-o, podman), if known.
        container: The container id (12 hex digits), if in one.
        pod: The Kubernetes pod uid, if in one.
        unit: The systemd unit (``foo.service``) or scope, if any.
        user_uid: The uid whose ``systemd --user`` manager runs the unit (user services).
    """

    __slots__ = __match_args__ = ("kind", "runtime", "container", "pod", "unit", "user_uid")

    kind: str
    runtime: str | None
    container: str | None
    pod: str | None
    unit: str | None
    user_uid: int | None

    def __init__(self, kind: str, runtime: str | None = None, container: str | None = None,
                 pod: str | None = None, unit: str | None = None,
                 user_uid: int | None = None) -> None:
        self._fill(kind, runtime, container, pod, unit, user_uid)

    def describe(self) -> str:
        """One line for people: ``kubernetes pod 1b2c... (containerd container 0123...)``."""
        if self.kind == "kubernetes":
            text = "kubernetes" + (f" pod {self.pod}" if self.pod else "")
            if self.container:
                text += f" ({self.runtime or 'container'} container {self.container})"
            return text
        if self.kind == "docker":
            what = f"{self.runtime} container" if self.runtime else "a container"
            return what + (f" {self.container}" if self.container else
                           " (its root has /.dockerenv or /run/.containerenv)")
        if self.kind == "systemd-user":
            return f"systemd user service {self.unit} (the systemd --user of uid {self.user_uid})"
        if self.kind == "systemd":
            return f"systemd unit {self.unit}" if self.unit else "systemd"
        if self.kind == "unknown":
            return ("not known (this user may not read its root or environment)"
                    + (f"; cgroup unit {self.unit}" if self.unit else ""))
        return "shell" + (f" ({self.unit})" if self.unit else "")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return super().to_dict()


class ProcessContext(FrozenRecord):
    """What bears on whether another process may lock memory (``memlock doctor --pid``).

    Attributes:
        pid: The process.
        command: Its command line (``[name]`` where it has none).
        user: Its effective user's name, or the uid as text.
        limits: Its RLIMIT_MEMLOCK, VmLck and privilege (``available_bytes`` as for
            :func:`memlock.limits`).
        may_raise_hard_limit: It may raise its own hard limit (Linux CAP_SYS_RESOURCE).
        vm_size: Its address space (what mlockall(MCL_CURRENT) is charged); None if unknown.
        rss: Its resident memory; None if unknown.
        environment: Where it runs (its unit, container or pod).
        cgroup_memory: (limit, usage, cgroup directory) of the tightest memory cgroup above
            it; None when none limits it.
        manager_limits: For a user service: (pid, soft, hard RLIMIT_MEMLOCK) of the
            ``systemd --user`` manager that starts it (None = unlimited); else None.
    """

    __slots__ = __match_args__ = ("pid", "command", "user", "limits", "may_raise_hard_limit",
                                  "vm_size", "rss", "environment", "cgroup_memory",
                                  "manager_limits")

    pid: int
    command: str
    user: str
    limits: Limits
    may_raise_hard_limit: bool
    vm_size: int | None
    rss: int | None
    environment: Environment
    cgroup_memory: tuple[int, int, str] | None
    manager_limits: tuple[int, int | None, int | None] | None

    def __init__(self, pid: int, command: str, user: str, limits: Limits,
                 may_raise_hard_limit: bool, vm_size: int | None, rss: int | None,
                 environment: Environment, cgroup_memory: tuple[int, int, str] | None,
                 manager_limits: tuple[int, int | None, int | None] | None) -> None:
        self._fill(pid, command, user, limits, may_raise_hard_limit, vm_size, rss,
                   environment, cgroup_memory, manager_limits)
