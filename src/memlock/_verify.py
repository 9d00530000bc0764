"""Proving another process's protections from the kernel's own accounting (``memlock verify``).

Each check reads what the kernel says of the process (on Linux its smaps: VmFlags ``lo``,
``lf``, ``dd``, ``wf``, ``Locked:``, ``Swap:``; and VmLck of its status), never what the
process claims:

- ``locked``: every mapping is locked, except those the kernel never locks whatever the
  process asks (``[vvar]``, ``[vdso]``, ``[vsyscall]``, device mappings...: the backend's
  :attr:`ProcessMapping.never_locked`); a mapping locked on fault (``lf``) counts as locked;
- ``min-locked``: VmLck is at least the size asked (VmLck is world-readable: this check alone
  works on any process);
- ``path``: the mappings of files matching each glob are locked, and there is at least one;
- ``no-dump``: no locked mapping would be written to a core dump: each carries ``dd``
  (MADV_DONTDUMP), or is of a kind the process's coredump_filter leaves out (read-only
  file mappings, under the default filter);
- ``no-swap``: no locked mapping has any of its pages in swap (``Swap: 0 kB``).
"""

from __future__ import annotations

from ._platform import BACKEND
from ._records import FrozenRecord, ProcessMapping
from ._units import format_size

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["CHECKS", "Verification", "Violation", "verify_process"]

#: The checks, by the names of their command-line flags.
CHECKS = ("locked", "min-locked", "path", "no-dump", "no-swap")


class Violation(FrozenRecord):
    """One way the process does not have what was asked.

    Attributes:
        check: Which check (one of :data:`CHECKS`).
        message: What is wrong, for people.
        mapping: The mapping at fault; None when the fault is the whole process's.
    """

    __slots__ = __match_args__ = ("check", "message", "mapping")

    check: str
    message: str
    mapping: ProcessMapping | None

    def __init__(self, check: str, message: str, mapping: ProcessMapping | None = None) -> None:
        self._fill(check, message, mapping)

    def to_dict(self) -> dict[str, Any]:
        """``check``, ``message`` and the mapping's fields (``mapping``: null if none)."""
        return {"check": self.check, "message": self.message,
                "mapping": None if self.mapping is None else mapping_dict(self.mapping)}


def mapping_dict(m: ProcessMapping) -> dict[str, Any]:
    """A mapping's fields and its size, JSON-ready."""
    return {**m.to_dict(), "size": m.size}


class Verification(FrozenRecord):
    """The verdict on one process.

    Attributes:
        pid: The process.
        checks: The checks made (names of :data:`CHECKS`).
        locked_bytes: Its VmLck; None where unknown.
        mappings: How many mappings were judged; None when no check needed them.
        violations: Every failure found; empty: the process has what was asked.
        excepted: Mappings the kernel never locks, left out of the ``locked`` and
            ``path`` checks.
    """

    __slots__ = __match_args__ = ("pid", "checks", "locked_bytes", "mappings", "violations",
                                  "excepted")

    pid: int
    checks: tuple[str, ...]
    locked_bytes: int | None
    mappings: int | None
    violations: tuple[Violation, ...]
    excepted: tuple[ProcessMapping, ...]

    def __init__(self, pid: int, checks: tuple[str, ...], locked_bytes: int | None,
                 mappings: int | None, violations: tuple[Violation, ...],
                 excepted: tuple[ProcessMapping, ...]) -> None:
        self._fill(pid, checks, locked_bytes, mappings, violations, excepted)

    @property
    def ok(self) -> bool:
        """No violation."""
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``ok`` and the fields, mappings as dicts."""
        return {"pid": self.pid, "ok": self.ok, "checks": list(self.checks),
                "locked_bytes": self.locked_bytes, "mappings": self.mappings,
                "violations": [v.to_dict() for v in self.violations],
                "excepted": [mapping_dict(m) for m in self.excepted]}


def _matches(path: str, pattern: str) -> bool:
    from fnmatch import fnmatchcase

    return path == pattern or fnmatchcase(path, pattern)


def verify_process(pid: int, *, locked: bool = False, min_locked: int | None = None,
                   paths: Sequence[str] = (), no_dump: bool = False,
                   no_swap: bool = False) -> Verification:
    """Check that process ``pid`` has what is asked (see the module).

    ``locked`` is checked when nothing else is asked.

    Raises:
        ProcessLookupError: No process ``pid``.
        PermissionError: The caller may not see its mappings (only ``min_locked`` needs none).
        UnsupportedOperation: The OS does not tell.
    """
    if not (locked or min_locked is not None or paths or no_dump or no_swap):
        locked = True
    asked = (locked, min_locked is not None, bool(paths), no_dump, no_swap)
    checks = tuple(name for name, on in zip(CHECKS, asked, strict=True) if on)
    maps: tuple[ProcessMapping, ...] | None = None
    if locked or paths or no_dump or no_swap:
        maps = BACKEND.process_mappings(pid, dumps=no_dump)
    locked_bytes = BACKEND.process_locked_bytes(pid)
    violations: list[Violation] = []
    excepted: dict[ProcessMapping, None] = {}
    if locked and maps is not None:
        if not maps:
            violations.append(Violation("locked", "the process has no mappings (a kernel "
                                        "thread, or a process that is exiting)"))
        for m in maps:
            if m.never_locked:
                excepted[m] = None
            elif not m.locked:
                violations.append(Violation("locked", "not locked", m))
    if min_locked is not None:
        if locked_bytes is None:
            violations.append(Violation("min-locked", "the process has no memory of its own "
                                        "(no VmLck: a kernel thread or a zombie)"))
        elif locked_bytes < min_locked:
            violations.append(Violation(
                "min-locked", f"{format_size(locked_bytes)} locked (VmLck), less than the "
                f"{format_size(min_locked)} asked"))
    for pattern in paths:
        matching = [m for m in maps or () if _matches(m.path, pattern)]
        if not matching:
            violations.append(Violation("path", f"no mapping of a file matching {pattern!r}"))
        for m in matching:
            if m.never_locked:
                excepted[m] = None
            elif not m.locked:
                violations.append(Violation("path", f"matches {pattern!r}, not locked", m))
    for m in maps or ():
        if no_dump and m.locked and m.dumped:
            violations.append(Violation("no-dump", "locked, and a core dump would hold it "
                                        "(no dd: MADV_DONTDUMP)", m))
        if no_swap and m.locked and m.swap_bytes:
            violations.append(Violation(
                "no-swap", f"locked, yet {format_size(m.swap_bytes)} of it is in swap", m))
    return Verification(pid, checks, locked_bytes, None if maps is None else len(maps),
                        tuple(violations), tuple(excepted))
