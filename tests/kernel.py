"""The kernel's own accounting, read independently of memlock's parsers.

Tests judge memlock by these, never by its return values: the VMA that holds an address
in /proc/PID/smaps (``lo``/``lf`` in VmFlags, ``Locked:``, ``Swap:``), VmLck, mincore.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"


def vma(addr: int, pid: int | str = "self") -> dict[str, object]:
    """The smaps entry of the mapping holding ``addr``: flags (set) and kB fields (bytes)."""
    found: dict[str, object] | None = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and ":" not in head:
                if found is not None:
                    break
                lo, hi = (int(x, 16) for x in head.split("-"))
                if lo <= addr < hi:
                    found = {"start": lo, "end": hi}
            elif found is not None:
                key, _, rest = line.partition(":")
                if key == "VmFlags":
                    found["flags"] = set(rest.split())
                elif rest.strip().endswith("kB"):
                    found[key] = int(rest.split()[0]) * 1024
    if found is None:
        raise LookupError(f"no mapping holds {addr:#x}")
    return found


def page_state(addr: int, pid: int | str = "self") -> str:
    """'full', 'onfault' or 'none': the kernel's lock state of the page holding ``addr``."""
    flags = vma(addr, pid)["flags"]
    assert isinstance(flags, set)
    if "lo" not in flags:
        return "none"
    return "onfault" if "lf" in flags else "full"


def page_states(addrs: list[int], pid: int | str = "self") -> list[str]:
    """:func:`page_state` of many addresses from one read of smaps."""
    spans: list[tuple[int, int, set[str]]] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                spans.append((lo, hi, set()))
            elif line.startswith("VmFlags:"):
                spans[-1][2].update(line.split()[1:])
    out = []
    for a in addrs:
        flags = next(fl for lo, hi, fl in spans if lo <= a < hi)
        out.append("none" if "lo" not in flags else ("onfault" if "lf" in flags else "full"))
    return out


def status_kb(field: str, pid: int | str = "self") -> int:
    """A ``Vm*`` field of /proc/PID/status in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def vmlck(pid: int | str = "self") -> int:
    """VmLck in bytes."""
    return status_kb("VmLck", pid)


def address_of(buf: object) -> int:
    """Address of a writable buffer's first byte."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))  # type: ignore[arg-type]


def anon(pages: int) -> mmap.mmap:
    """Fresh private anonymous memory, touched, page aligned."""
    m = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(pages):
        m[i * PAGE] = 1
    return m


def resident_pages(addr: int, length: int) -> int:
    """Pages of [addr, addr+length) resident per mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    start = addr - addr % PAGE
    n = (addr + length - start + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * n)()
    if libc.mincore(start, n * PAGE, vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(v & 1 for v in vec)


def child_env() -> dict[str, str]:
    """Environment for a child Python that imports memlock from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(
    code: str,
    *,
    unprivileged: bool = False,
    limit: int | None = None,
    timeout: float = 60,
    args: list[str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python.

    Args:
        code: Python source (dedented).
        unprivileged: Drop CAP_IPC_LOCK (still uid 0) with setpriv.
        limit: RLIMIT_MEMLOCK (soft and hard) for the child, in bytes.
        timeout: Seconds.
        args: Extra argv for the child.
        cwd: Working directory (the repo root lets the child import ``tests.kernel``).
    """
    cmd = [sys.executable, "-c", textwrap.dedent(code), *(args or [])]
    if limit is not None:
        cmd = ["prlimit", f"--memlock={limit}:{limit}", "--", *cmd]
    if unprivileged:
        cmd = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=child_env(), check=False, cwd=cwd)


def have(tool: str) -> bool:
    """Whether ``tool`` is on PATH."""
    return shutil.which(tool) is not None
