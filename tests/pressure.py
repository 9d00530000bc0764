"""Real memory pressure: a swap file and a memory cgroup that squeezes one child process.

``squeeze(code)`` runs ``code`` in a child confined to a small memory cgroup with a swap
file on; the code fills buffers and then calls ``pressure()`` to allocate far past the
cgroup's limit, forcing the kernel to swap. The swap file and the cgroup are removed
afterwards, also on failure. Root and cgroup v1 (or v2) are needed; else the caller skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from .kernel import run_child

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")

SQUEEZE_PRELUDE = """
import json, mmap, os, sys
from tests.kernel import PAGE, address_of, resident_pages, vma

with open({procs!r}, "w") as f:
    f.write(str(os.getpid()))

def filled(nbytes):
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    chunk = os.urandom(1 << 20)
    for off in range(0, nbytes, 1 << 20):
        m[off:off + (1 << 20)] = chunk[: min(1 << 20, nbytes - off)]
    return m

def pressure(nbytes={pressure}):
    hog = filled(nbytes)
    return hog

def swapped(m):
    # Swap: of the VMA holding m (adjacent unlocked mappings may merge into it).
    return vma(address_of(m))["Swap"]

def resident(m):
    # Bytes of m resident per mincore.
    return resident_pages(address_of(m), len(m)) * PAGE
"""


def unavailable() -> str | None:
    """Why the pressure test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to add swap and a memory cgroup"
    if not shutil.which("mkswap") or not shutil.which("swapon"):
        return "needs mkswap and swapon (util-linux)"
    if not (V1 / "cgroup.procs").exists() and not (V2 / "cgroup.controllers").exists():
        return "no memory cgroup controller mounted"
    if Path("/proc/swaps").read_text().count("\n") > 1:
        return "swap is already on: the test would disturb it"
    return None


def squeeze(code: str, *, limit_mib: int = 96, swap_mib: int = 320, pressure_mib: int = 160,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child inside a ``limit_mib`` memory cgroup with swap on."""
    workdir = Path(tempfile.mkdtemp(prefix="memlock-swap-", dir="/var/tmp"))
    swapfile = workdir / "swapfile"
    name = f"memlock-test-{uuid.uuid4().hex[:8]}"
    v1 = (V1 / "cgroup.procs").exists()
    cgroup = (V1 if v1 else V2) / name
    swap_on = False
    try:
        with open(swapfile, "wb") as f:
            block = b"\0" * (1 << 20)
            for _ in range(swap_mib):
                f.write(block)
        swapfile.chmod(0o600)
        subprocess.run(["mkswap", str(swapfile)], check=True, capture_output=True)
        subprocess.run(["swapon", str(swapfile)], check=True, capture_output=True)
        swap_on = True
        cgroup.mkdir()
        if v1:
            (cgroup / "memory.limit_in_bytes").write_text(str(limit_mib << 20))
        else:
            (cgroup / "memory.max").write_text(str(limit_mib << 20))
        prelude = SQUEEZE_PRELUDE.format(procs=str(cgroup / "cgroup.procs"),
                                         pressure=pressure_mib << 20)
        return run_child(code, prelude=prelude, timeout=timeout)
    finally:
        if cgroup.exists():
            try:
                cgroup.rmdir()
            except OSError:
                pass
        if swap_on:
            subprocess.run(["swapoff", str(swapfile)], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
