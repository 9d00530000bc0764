"""SecureBuffer vs libsodium's sodium_malloc/sodium_free, side by side in one run.

1. Create + close of a 32-byte secret: memlock pooled (both backends), isolated, and
   sodium_malloc + sodium_free (through ctypes, here only).
2. Live 32-byte secrets under an 8 MiB RLIMIT_MEMLOCK without CAP_IPC_LOCK (children run
   under setpriv): how many each can hold, and how many of those are really locked
   (sodium_malloc ignores mlock failures; its count of locked secrets is VmLck / page).

Run: .venv/bin/python bench/bench_secure.py [--quick]
Needs libsodium (Debian: libsodium23) and setpriv (util-linux) for part 2.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import shutil
import subprocess
import sys
import textwrap
import time

import memlock
from memlock._secrets import _pool as _securemem

QUICK = "--quick" in sys.argv
SODIUM_PATH = ctypes.util.find_library("sodium") or "libsodium.so.23"


def sodium() -> ctypes.CDLL:
    lib = ctypes.CDLL(SODIUM_PATH)
    if lib.sodium_init() < 0:
        raise RuntimeError("sodium_init failed")
    lib.sodium_malloc.restype = ctypes.c_void_p
    lib.sodium_malloc.argtypes = [ctypes.c_size_t]
    lib.sodium_free.restype = None
    lib.sodium_free.argtypes = [ctypes.c_void_p]
    return lib


def best_per_op(fn: object, n: int, repeat: int = 5) -> float:
    """Best seconds per operation over ``repeat`` runs of ``fn(n)``."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best / n


def time_create_close() -> None:
    lib = sodium()
    malloc, free = lib.sodium_malloc, lib.sodium_free
    SB = memlock.SecureBuffer

    def sodium_pair(n: int) -> None:
        for _ in range(n):
            free(malloc(32))

    def pooled(backend: str) -> object:
        def run(n: int) -> None:
            for _ in range(n):
                SB(32, backend=backend).close()
        return run

    def pooled_used(backend: str) -> object:
        def run(n: int) -> None:
            for _ in range(n):
                with SB(32, backend=backend) as sb, sb.view() as v:
                    v[0] = 1
        return run

    def isolated(backend: str) -> object:
        def run(n: int) -> None:
            for _ in range(n):
                SB(32, isolated=True, backend=backend).close()
        return run

    backends = ["anonymous"] + (["memfd_secret"] if _securemem.probe_memfd_secret() else [])
    for b in backends:  # warm the pools: one empty chunk per class stays
        SB(32, backend=b).close()
    n_fast, n_slow = (20_000, 2_000) if QUICK else (100_000, 10_000)
    ref = best_per_op(sodium_pair, n_slow)
    rows = [("sodium_malloc(32) + sodium_free", ref)]
    for b in backends:
        rows.append((f"SecureBuffer(32) pooled, {b}: create + close",
                     best_per_op(pooled(b), n_fast)))
        rows.append(("  ... with a view written in a with block",
                     best_per_op(pooled_used(b), n_fast)))
        rows.append((f"SecureBuffer(32, isolated=True), {b}", best_per_op(isolated(b), n_slow)))
    print("Create + close of a 32-byte secret (best of 5)")
    for name, sec in rows:
        print(f"  {name:<52} {sec * 1e6:9.2f} µs   {ref / sec:6.1f}x sodium")


CAPACITY_CODE = {
    "sodium": """
        lib = ctypes.CDLL(SODIUM_PATH); lib.sodium_init()
        lib.sodium_malloc.restype = ctypes.c_void_p
        lib.sodium_malloc.argtypes = [ctypes.c_size_t]
        ptrs = []
        t = time.perf_counter()
        while len(ptrs) < 1_000_000:
            p = lib.sodium_malloc(32)
            if not p:
                break
            ptrs.append(p)
        dt = time.perf_counter() - t
        out = {"live": len(ptrs), "locked_bytes": vmlck(), "seconds": dt,
               "locked_secrets": vmlck() // 4096}
    """,
    "memlock": """
        bufs = []
        err = None
        t = time.perf_counter()
        try:
            while len(bufs) < 1_000_000:
                bufs.append(memlock.SecureBuffer(32, isolated=ISO, backend=BACKEND))
        except memlock.MemlockError as exc:
            err = f"{type(exc).__name__}: {exc.strerror}"
        dt = time.perf_counter() - t
        out = {"live": len(bufs), "locked_bytes": vmlck(), "seconds": dt,
               "locked_secrets": len(bufs), "stopped_by": err}
    """,
}


def capacity(kind: str, backend: str = "auto", isolated: bool = False) -> dict[str, object]:
    head = textwrap.dedent("""
        import ctypes, json, resource, time
        import memlock
        def vmlck():
            for line in open("/proc/self/status"):
                if line.startswith("VmLck:"):
                    return int(line.split()[1]) * 1024
        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (8 << 20, hard))
        assert not memlock.limits().privileged
    """)
    params = f"ISO, BACKEND, SODIUM_PATH = {isolated!r}, {backend!r}, {SODIUM_PATH!r}\n"
    code = head + params + textwrap.dedent(CAPACITY_CODE[kind]) + "print(json.dumps(out))\n"
    argv = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock",
            sys.executable, "-c", code]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def capacity_table() -> None:
    if shutil.which("setpriv") is None:
        print("setpriv not found: skipping the capacity comparison")
        return
    print("\nLive 32-byte secrets, RLIMIT_MEMLOCK 8 MiB, no CAP_IPC_LOCK")
    ref = capacity("sodium")
    rows = [("sodium_malloc", ref)]
    backends = ["anonymous"] + (["memfd_secret"] if _securemem.probe_memfd_secret() else [])
    for b in backends:
        rows.append((f"SecureBuffer pooled, {b}", capacity("memlock", b)))
    rows.append(("SecureBuffer isolated, anonymous", capacity("memlock", "anonymous", True)))
    ref_live, ref_locked = int(ref["live"]), max(1, int(ref["locked_secrets"]))  # type: ignore[call-overload]
    print(f"  {'':<36} {'live':>9} {'locked':>9} {'VmLck':>9} {'alloc s':>8}"
          f" {'x sodium live':>14} {'x sodium locked':>16}")
    for name, r in rows:
        live, locked = int(r["live"]), int(r["locked_secrets"])  # type: ignore[call-overload]
        print(f"  {name:<36} {live:>9,} {locked:>9,} {int(r['locked_bytes']) >> 10:>7} K"  # type: ignore[call-overload]
              f" {float(r['seconds']):>8.2f} {live / ref_live:>14.1f} {locked / ref_locked:>16.1f}")  # type: ignore[arg-type]
        if r.get("stopped_by"):
            print(f"      stopped by {r['stopped_by']}")
    print("  (sodium_malloc keeps allocating after mlock fails: its secrets past the limit"
          " are live but not locked; at vm.max_map_count it either returns NULL or, with"
          " some address-space layouts, goes on without room for its own guard pages."
          " memlock stops with LockLimitError when the limit is reached, every secret"
          " locked.)")


if __name__ == "__main__":
    time_create_close()
    capacity_table()
