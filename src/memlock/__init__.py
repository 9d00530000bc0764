"""memlock: keep memory in RAM from Python, correctly, fast, and provably.

The public facade: everything here is re-exported from private modules. Dangerous raw
calls on integer addresses live in :mod:`memlock.lowlevel`.
"""

from __future__ import annotations

import sys

from ._pages import PAGE_SIZE
from .errors import (
    CopyOnWriteWarning,
    LockLimitError,
    LockPermissionError,
    MemlockError,
    UnsupportedOperation,
)

TYPE_CHECKING = False  # typing costs ~12 ms at import; mypy reads the block below
if TYPE_CHECKING:
    from typing import Any

    from ._files import LockedFile, Residency, evict, lock_file, residency, touch
    from ._latency import (
        GarbageCollection,
        LatencyReport,
        LatencySummary,
        Outlier,
        measure_latency,
    )
    from ._lock import Lock, lock
    from ._process import lock_all, unlock_all
    from ._profile import Profile, ProfiledFile
    from ._realtime import PageFaults, lock_process, page_faults
    from ._records import Limits, LockedRegion, ProcessStatus, SystemStatus
    from ._secrets import SecureBuffer, getpass, read_secret
    from ._status import limits, set_limit, status, system_status
    from ._thread_stacks import explain_thread_errors
    from ._trees import FileTotals, LockedFiles, lock_files

# Feature modules load on first use, so `import memlock` (and every CLI call) stays cheap.
_LAZY = {
    "._files": ("LockedFile", "Residency", "evict", "lock_file", "residency", "touch"),
    "._latency": ("GarbageCollection", "LatencyReport", "LatencySummary", "Outlier",
                  "measure_latency"),
    "._lock": ("Lock", "lock"),
    "._process": ("lock_all", "unlock_all"),
    "._profile": ("Profile", "ProfiledFile"),
    "._realtime": ("PageFaults", "lock_process", "page_faults"),
    "._records": ("Limits", "LockedRegion", "ProcessStatus", "SystemStatus"),
    "._secrets": ("SecureBuffer", "getpass", "read_secret"),
    "._status": ("limits", "set_limit", "status", "system_status"),
    "._thread_stacks": ("explain_thread_errors",),
    "._trees": ("FileTotals", "LockedFiles", "lock_files"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'memlock' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}{module}", fromlist=[name]), name)  # no importlib
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if sys.platform == "linux":
    from ._platform import MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT
elif sys.platform == "darwin" or sys.platform.startswith("freebsd") or sys.platform == "sunos5":
    from ._platform import MCL_CURRENT, MCL_FUTURE

__version__ = "0.1.0"

__all__ = [
    "PAGE_SIZE",
    "CopyOnWriteWarning",
    "FileTotals",
    "GarbageCollection",
    "LatencyReport",
    "LatencySummary",
    "Limits",
    "Lock",
    "LockLimitError",
    "LockPermissionError",
    "LockedFile",
    "LockedFiles",
    "LockedRegion",
    "MemlockError",
    "Outlier",
    "PageFaults",
    "ProcessStatus",
    "Profile",
    "ProfiledFile",
    "Residency",
    "SecureBuffer",
    "SystemStatus",
    "UnsupportedOperation",
    "evict",
    "explain_thread_errors",
    "getpass",
    "limits",
    "lock",
    "lock_all",
    "lock_file",
    "lock_files",
    "lock_process",
    "measure_latency",
    "page_faults",
    "read_secret",
    "residency",
    "set_limit",
    "status",
    "system_status",
    "touch",
    "unlock_all",
]
if sys.platform == "linux":
    __all__ += ["MCL_CURRENT", "MCL_FUTURE", "MCL_ONFAULT", "MLOCK_ONFAULT"]
elif sys.platform == "darwin" or sys.platform.startswith("freebsd") or sys.platform == "sunos5":
    __all__ += ["MCL_CURRENT", "MCL_FUTURE"]
