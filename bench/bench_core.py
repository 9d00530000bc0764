"""Core benchmarks, side by side in one run against C, printed as ratios.

1. lock()+unlock() of one 4 KiB page vs the same mlock+munlock pair in C (target <= 1.5x),
   through lock()'s C fast path (memlock._speedups, built at install where a compiler is)
   and through the pure-Python path (MEMLOCK_PURE_PYTHON=1), with the bare ctypes pair as
   the floor of any pure-Python binding.
2. lock() of 1 GiB of fresh anonymous memory vs one C mlock() call (target <= 0.75x: the
   registry populates runs >= 64 MiB with mlock chunks from several threads).

Run as root (or with a memlock limit above 1 GiB): ``.venv/bin/python bench/bench_core.py``.
Rounds alternate C and Python so drift hits both; medians are reported.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import subprocess
import time
from pathlib import Path

import memlock
from memlock import _lock, _registry

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin" / "mlock_bench"


def build() -> None:
    """Compile the C baseline (gcc -O2)."""
    BIN.parent.mkdir(exist_ok=True)
    src = HERE / "c" / "mlock_bench.c"
    if not BIN.exists() or BIN.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(BIN), str(src)], check=True)


def c_ns(mode: str, n: int) -> float:
    out = subprocess.run([str(BIN), mode, str(n)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def py_pair_ns(n: int, c_path: bool) -> float:
    if _lock._use_c(c_path) != c_path:
        raise SystemExit("the C fast path is not built: pip install -e . with a C compiler")
    m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.write(b"\1" * (1 << 20))
    page = memoryview(m)[4 * 4096 : 5 * 4096]
    lock = memlock.lock
    t0 = time.perf_counter_ns()
    for _ in range(n):
        lock(page).unlock()
    dt = (time.perf_counter_ns() - t0) / n
    page.release()
    m.close()
    return dt


def ctypes_pair_ns(n: int) -> float:
    """The floor for any ctypes binding: the bare mlock+munlock pair, no bookkeeping."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mlock, munlock = libc.mlock, libc.munlock
    mlock.argtypes = munlock.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.write(b"\1" * (1 << 20))
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m)) + 4 * 4096
    t0 = time.perf_counter_ns()
    for _ in range(n):
        mlock(addr, 4096)
        munlock(addr, 4096)
    return (time.perf_counter_ns() - t0) / n


def py_bulk_ns(nbytes: int) -> float:
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t0 = time.perf_counter_ns()
    lk = memlock.lock(m)
    dt = time.perf_counter_ns() - t0
    lk.unlock()
    m.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bulk-gib", type=float, default=1.0)
    ap.add_argument("--chunk-mib", type=int, default=None, help="override the populate chunk")
    ap.add_argument("--workers", type=int, default=None, help="override the worker count")
    args = ap.parse_args()
    build()
    if args.chunk_mib:
        _registry.PARALLEL_CHUNK_BYTES = args.chunk_mib << 20
    if args.workers:
        _lock.REGISTRY.parallel_workers = args.workers
    cpus = os.cpu_count()
    print(f"memlock core bench: {cpus} CPUs, kernel {os.uname().release}, "
          f"workers {_lock.REGISTRY.parallel_workers}, "
          f"chunk {_registry.PARALLEL_CHUNK_BYTES >> 20} MiB")

    c_pair: list[float] = []
    fast_pair: list[float] = []
    raw_pair: list[float] = []
    pure_pair: list[float] = []
    ratios: list[float] = []
    for _ in range(args.rounds):
        c_pair.append(c_ns("pair", args.pairs))
        fast_pair.append(py_pair_ns(args.pairs, c_path=True))
        raw_pair.append(ctypes_pair_ns(args.pairs))
        pure_pair.append(py_pair_ns(args.pairs, c_path=False))
        ratios.append(fast_pair[-1] / c_pair[-1])
    _lock._use_c(True)
    c, fast, raw, pure = (statistics.median(x) for x in (c_pair, fast_pair, raw_pair, pure_pair))
    print(f"lock+unlock 4 KiB   C {c / 1000:7.2f} us   memlock {fast / 1000:7.2f} us   "
          f"ratio {fast / c:.2f}x  (target <= 1.5x; per round "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"  pure Python (MEMLOCK_PURE_PYTHON=1) {pure / 1000:.2f} us ({pure / c:.2f}x C); "
          f"bare ctypes mlock+munlock {raw / 1000:.2f} us ({raw / c:.2f}x C)")

    nbytes = int(args.bulk_gib * 2**30)
    # In a VM, the first touch of guest memory the host has not backed yet is slow: warm
    # twice the size once, then alternate which side goes first.
    warm = mmap.mmap(-1, 2 * nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    warm.madvise(23)  # MADV_POPULATE_WRITE
    warm.close()
    c_bulk, py_bulk = [], []
    for r in range(args.rounds):
        if r % 2:
            py_bulk.append(py_bulk_ns(nbytes))
            c_bulk.append(c_ns("bulk", nbytes))
        else:
            c_bulk.append(c_ns("bulk", nbytes))
            py_bulk.append(py_bulk_ns(nbytes))
    c, p = statistics.median(c_bulk), statistics.median(py_bulk)
    print(f"lock {args.bulk_gib:g} GiB fresh    C {c / 1e6:7.1f} ms   memlock {p / 1e6:7.1f} ms   "
          f"ratio {p / c:.2f}x  (target <= 0.75x)")


if __name__ == "__main__":
    main()
