"""Independent oracles for the file tests: our own mincore, smaps and status readers."""

from __future__ import annotations

import ctypes
import mmap
import os

PAGE = os.sysconf("SC_PAGE_SIZE")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.mincore.restype = ctypes.c_int


def mincore_count(path: str, offset: int = 0, length: int | None = None) -> int:
    """Resident pages of a file range, counted with mincore on our own mapping."""
    size = os.path.getsize(path)
    if length is None:
        length = size - offset
    if length == 0:
        return 0
    first = offset // PAGE
    last = -(-(offset + length) // PAGE)
    n = last - first
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), min(n * PAGE, size - first * PAGE),
                      prot=mmap.PROT_READ | mmap.PROT_WRITE, flags=mmap.MAP_PRIVATE,
                      offset=first * PAGE)
    try:
        # A private writable mapping only to get an address through ctypes; never written.
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        vec = (ctypes.c_ubyte * n)()
        if _libc.mincore(ctypes.c_void_p(addr), n * PAGE, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        count = sum(v & 1 for v in vec)
        del addr
    finally:
        m.close()
    return count


def drop(path: str) -> None:
    """Write back and drop a file's pages (fsync, then POSIX_FADV_DONTNEED)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def make_file(path: str, size: int) -> str:
    """A file of ``size`` random bytes, written back to disk (so it can be evicted)."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    return path


def status_kib(pid: int | str, name: str) -> int:
    """A ``Name: N kB`` field of /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def file_mappings(pid: int | str, path: str) -> list[dict[str, object]]:
    """The smaps entries of ``pid`` that map ``path``: inode, flags, Locked (KiB), Rss."""
    out: list[dict[str, object]] = []
    cur: dict[str, object] | None = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                mapped = line.split(None, 5)[5].strip() if len(parts) >= 6 else ""
                cur = None
                if mapped == path or mapped == path + " (deleted)":
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    cur = {"inode": int(parts[4]), "size": hi - lo, "perms": parts[1],
                           "deleted": mapped.endswith("(deleted)")}
                    out.append(cur)
            elif cur is not None:
                if line.startswith("VmFlags:"):
                    cur["flags"] = set(parts[1:])
                elif len(parts) == 3 and parts[2] == "kB":
                    cur[parts[0].rstrip(":")] = int(parts[1])
    return out
