"""Model weights: memlock.safetensors.load(lock=True) vs memlock.lock_file of the same file.

Side by side in one run, alternating which goes first on every repetition, warm page cache:

1. time to return, with everything locked: ``memlock.safetensors.load(path)`` (parse the
   header, map, lock, build one numpy array per tensor) vs ``memlock.lock_file(path)``
   (map and lock); medians and their ratio (target: at most 1.2x, parsing costs nothing
   measurable);
2. RssAnon growth of the process across a load (target: under 1 MiB: no private copy);
3. major faults of a full pass over every tensor after the file was evicted
   (POSIX_FADV_DONTNEED drops only unlocked pages: target 0).

Usage: python bench/bench_models.py [--dir /var/tmp] [--size 1G] [--tensors 64] [--reps 7]
Needs numpy and safetensors (requirements-models.txt); the file is deleted after.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file

import memlock
import memlock.safetensors
from memlock._units import format_size, parse_size


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise LookupError("RssAnon")


def timed_safetensors(path: str) -> float:
    t = time.perf_counter()
    tensors = memlock.safetensors.load(path)
    took = time.perf_counter() - t
    tensors.unlock()
    return took


def timed_lock_file(path: str) -> float:
    t = time.perf_counter()
    lf = memlock.lock_file(path)
    took = time.perf_counter() - t
    lf.unlock()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--size", default="1G")
    ap.add_argument("--tensors", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    size = parse_size(args.size)
    per = size // args.tensors // 4
    fd, path = tempfile.mkstemp(suffix=".safetensors", dir=args.dir)
    os.close(fd)
    try:
        save_file({f"layers.{i}.weight": np.full(per, i, dtype=np.float32)
                   for i in range(args.tensors)}, path)
        print(f"memlock model bench: {format_size(os.path.getsize(path))} safetensors file, "
              f"{args.tensors} tensors, warm page cache, {args.reps} repetitions")
        timed_safetensors(path)  # warm: page cache, threads, imports
        timed_lock_file(path)
        st, lf = [], []
        for rep in range(args.reps):
            pair = [(st, timed_safetensors), (lf, timed_lock_file)]
            for out, fn in pair if rep % 2 == 0 else reversed(pair):
                out.append(fn(path))
        a, b = statistics.median(st), statistics.median(lf)
        ratios = sorted(x / y for x, y in zip(st, lf, strict=True))
        print(f"lock warm      safetensors.load {a * 1e3:8.1f} ms   lock_file {b * 1e3:8.1f} ms"
              f"   ratio {a / b:.2f}x  (target <= 1.2x; per rep {ratios[0]:.2f}-"
              f"{ratios[-1]:.2f})")

        before = rss_anon()
        tensors = memlock.safetensors.load(path)
        grew = rss_anon() - before
        print(f"RssAnon growth across load: {grew} bytes (target < 1 MiB)")
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # unlocked pages go
        finally:
            os.close(fd)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        total = sum(float(t.sum(dtype=np.float64)) for t in tensors.values())
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
        print(f"full pass after eviction: {faults} major faults (target 0); "
              f"checksum {total:.0f}")
        tensors.unlock()
        del tensors
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
