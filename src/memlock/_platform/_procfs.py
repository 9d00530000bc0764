"""Parsers for Linux /proc files. Pure functions of text, tested against canned files.

Older kernels lack fields: ``VmFlags`` in smaps (before 3.8), ``VmLck`` in status on some
sandboxes, ``Unevictable`` in meminfo (before 2.6.28). A missing field parses as None.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["PSEUDO_FILE_SYSTEMS", "SmapsEntry", "count_lines", "iter_maps",
           "parse_kib_fields", "parse_maps", "parse_smaps", "pseudo_devices", "read_text",
           "status_fields"]


class SmapsEntry:
    """One mapping from /proc/PID/smaps.

    Attributes:
        start, end: Its address range.
        perms: ``rwxp``-style permissions.
        path: The mapped file or pseudo-path; ``[anon]`` when the kernel shows none.
        fields: The ``Name: N kB`` lines, in bytes.
        vmflags: The VmFlags mnemonics; None where the kernel has no VmFlags line.
    """

    __slots__ = ("end", "fields", "path", "perms", "start", "vmflags")

    def __init__(self, start: int, end: int, perms: str, path: str) -> None:
        self.start = start
        self.end = end
        self.perms = perms
        self.path = path
        self.fields: dict[str, int] = {}
        self.vmflags: frozenset[str] | None = None

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


def status_fields(pid: int | str = "self") -> dict[str, int]:
    """The ``kB`` fields of /proc/PID/status in bytes (VmLck, VmSize, ...); {} if unreadable."""
    try:
        return parse_kib_fields(read_text(f"/proc/{pid}/status"))
    except OSError:
        return {}


def count_lines(path: str) -> int:
    """Lines of a /proc file, read a buffer at a time (raises OSError as open() does).

    For /proc/self/maps of a process at vm.max_map_count: reading it whole would need a
    new mapping, which the kernel then refuses.
    """
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def iter_maps(lines: Iterable[str]) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, perms, path) of each /proc/PID/maps line; path "" if none."""
    for line in lines:
        fields = line.split(None, 5)
        if not fields:
            continue
        lo, _, hi = fields[0].partition("-")
        path = fields[5].strip() if len(fields) == 6 else ""
        yield int(lo, 16), int(hi, 16), fields[1], path


def maps_overlapping(text: str, start: int, end: int) -> list[tuple[int, int, str, str]]:
    """:func:`parse_maps` of only the mappings that overlap [start, end).

    Finds them by bisection over the mapping ends, gathered by C code (a regular
    expression and ``map``), so the Python work does not grow with the process's mapping
    count (populating a big lock parses maps for every range it locks).
    """
    import re
    from bisect import bisect_right
    from itertools import repeat

    ends = list(map(int, re.findall(r"(?m)^[0-9a-f]+-([0-9a-f]+) ", text), repeat(16)))
    first = bisect_right(ends, start)
    if first == len(ends):
        return []
    lines = text.splitlines()
    out = []
    for line in lines[first:]:
        m = next(iter_maps((line,)), None)
        if m is None:
            continue
        if m[0] >= end:
            break
        out.append(m)
    return out


#: File systems whose files the kernel makes up when they are read (procfs, sysfs ...):
#: none of it is page cache to keep in RAM, sizes are made up (0 or 4096), some files never
#: end or change something when read, and a few map device memory (sysfs PCI resources).
PSEUDO_FILE_SYSTEMS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "efivarfs", "fusectl", "mqueue", "nsfs", "proc", "pstore", "rpc_pipefs", "securityfs",
    "selinuxfs", "sysfs", "tracefs",
})


def pseudo_devices(mountinfo: bytes) -> dict[int, str]:
    """``st_dev`` -> type of each pseudo file system in a mountinfo text.

    Lines read ``ID PARENT MAJOR:MINOR ROOT MOUNT OPTIONS ... - TYPE SOURCE SUPER``.
    """
    found: dict[int, str] = {}
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        try:
            fs_type = fields[fields.index(b"-", 6) + 1].decode("ascii", "replace")
            major, minor = fields[2].split(b":")
            if fs_type in PSEUDO_FILE_SYSTEMS:
                found[os.makedev(int(major), int(minor))] = fs_type
        except (ValueError, IndexError):
            continue
    return found


def parse_maps(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, path) of each line of a /proc/PID/maps text; path "" if none."""
    return list(iter_maps(text.splitlines()))


def parse_smaps(text: str) -> Iterator[SmapsEntry]:
    """The mappings of an smaps file, in order."""
    entry: SmapsEntry | None = None
    for line in text.splitlines():
        parts = line.split(None, 5)
        head = parts[0] if parts else ""
        if "-" in head and not head.endswith(":") and len(parts) >= 5:
            if entry is not None:
                yield entry
            lo, _, hi = head.partition("-")
            path = parts[5].strip() if len(parts) == 6 else ""
            entry = SmapsEntry(int(lo, 16), int(hi, 16), parts[1], path or "[anon]")
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
