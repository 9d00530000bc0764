"""Plain result records returned by the public API (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Limits", "LockedRegion", "ProcessStatus", "SystemStatus"]


@dataclass(frozen=True)
class Limits:
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

    soft: int | None
    hard: int | None
    locked_bytes: int | None
    available_bytes: int | None
    privileged: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class LockedRegion:
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

    start: int
    end: int
    path: str
    size: int
    locked_bytes: int | None
    onfault: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class ProcessStatus:
    """What one process has locked.

    Attributes:
        pid: The process id.
        locked_bytes: Virtual size of its locked ranges (VmLck); None if unknown.
        regions: Its locked mappings, in address order.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    pid: int
    locked_bytes: int | None
    regions: tuple[LockedRegion, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return {
            "pid": self.pid,
            "locked_bytes": self.locked_bytes,
            "regions": [r.to_dict() for r in self.regions],
        }


@dataclass(frozen=True)
class SystemStatus:
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

    mlocked_bytes: int | None = None
    unevictable_bytes: int | None = None
    total_bytes: int | None = None
    available_bytes: int | None = None
    wired_bytes: int | None = None
    user_wired_bytes: int | None = None
    max_user_wired_bytes: int | None = None
    max_map_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)
