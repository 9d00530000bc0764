"""Parsers for Linux /proc files. Pure functions of text, tested against canned files.

Older kernels lack fields: ``VmFlags`` in smaps (before 3.8), ``VmLck`` in status on some
sandboxes, ``Unevictable`` in meminfo (before 2.6.28). A missing field parses as None.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["SmapsEntry", "parse_kib_fields", "parse_smaps", "read_text"]

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


@dataclass
class SmapsEntry:
    """One mapping from /proc/PID/smaps."""

    start: int
    end: int
    perms: str
    path: str
    fields: dict[str, int]  # bytes, from the "Name: N kB" lines
    vmflags: frozenset[str] | None  # None where the kernel has no VmFlags line

    @property
    def locked(self) -> bool:
        """The mapping is mlocked (``lo``); without VmFlags, any ``Locked:`` bytes."""
        if self.vmflags is not None:
            return "lo" in self.vmflags
        return bool(self.fields.get("Locked", 0))

    @property
    def onfault(self) -> bool:
        """Locked with MLOCK_ONFAULT / MCL_ONFAULT (``lf``)."""
        return self.vmflags is not None and "lf" in self.vmflags


def read_text(path: str) -> str:
    """A /proc file's text (raises OSError as open() does)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def parse_kib_fields(text: str) -> dict[str, int]:
    """``Name:  N kB`` lines (status, meminfo) as bytes; lines without kB are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[name.strip()] = int(parts[0]) * 1024
    return out


def parse_smaps(text: str) -> Iterator[SmapsEntry]:
    """The mappings of an smaps file, in order."""
    entry: SmapsEntry | None = None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            if entry is not None:
                yield entry
            entry = SmapsEntry(
                start=int(m.group(1), 16),
                end=int(m.group(2), 16),
                perms=m.group(3),
                path=m.group(4).strip() or "[anon]",
                fields={},
                vmflags=None,
            )
            continue
        if entry is None:
            continue
        if line.startswith("VmFlags:"):
            entry.vmflags = frozenset(line.split()[1:])
            continue
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            entry.fields[name] = int(parts[0]) * 1024
    if entry is not None:
        yield entry
