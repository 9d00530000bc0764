"""Restoring a hot set: ``memlock touch --profile`` vs ``vmtouch -t`` of the whole file.

A 2 GiB file on disk whose profile holds 25% of its pages in 8 ranges (of 64 MiB, spread
over the file). Each repetition evicts the file (POSIX_FADV_DONTNEED), backs guest memory
(see ``bench_files.back_guest_memory``), and times one tool as a whole process, until it
exits (both return once the data is in the page cache); the tool that goes first swaps
every repetition. Prints the medians, their ratio and the per-repetition ratios, and what
memlock brought back: the share of the profiled pages resident right after it (the least of
any repetition) and the most found outside the ranges. On this VM a DAMON ``pageout``
scheme (kdamond) reclaims cold pages in the background: a few dozen pages of a restored
range can be gone again by the time they are counted; tests/test_profiles.py checks
exactness on small files.

Usage: python bench/bench_profile.py [--dir /var/tmp] [--size 2G] [--ranges 8]
       [--share 0.25] [--reps 6] [--no-pyc]
Needs vmtouch (apt-get install vmtouch); the file is created under --dir and deleted after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import memlock
from bench_files import (
    MEMLOCK,
    back_guest_memory,
    evict,
    make_big,
    ratio_line,
    timed,
    use_pyc_cache,
)
from memlock._units import format_size, parse_size


def make_profile(big: str, ranges: int, share: float, path: str) -> memlock.Profile:
    """A profile of ``big`` with ``ranges`` equal ranges, ``share`` of its pages, spread."""
    size = os.path.getsize(big)
    page = memlock.PAGE_SIZE
    pages = size // page
    length = int(pages * share / ranges) * page
    stride = size // ranges
    fd = os.open(big, os.O_RDONLY)
    try:
        evict(big)
        step = 2 * 2**20  # Linux reads at most read_ahead_kb per WILLNEED call
        for k in range(ranges):  # exactly these pages resident: what a server had warm
            for off in range(k * stride, k * stride + length, step):
                os.posix_fadvise(fd, off, min(step, k * stride + length - off),
                                 os.POSIX_FADV_WILLNEED)
        for k in range(ranges):
            for off in range(k * stride, k * stride + length, step):
                os.pread(fd, step, off)  # wait for the reads
    finally:
        os.close(fd)
    profile = memlock.Profile.capture(big)
    profile.save(path)
    expected = [(k * stride, length) for k in range(ranges)]
    assert profile.files[0].ranges == tuple(expected), profile.files[0].ranges[:10]
    return profile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--size", default="2G")
    ap.add_argument("--ranges", type=int, default=8)
    ap.add_argument("--share", type=float, default=0.25)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--no-pyc", action="store_true",
                    help="do not cache memlock's bytecode (compile it on every run)")
    args = ap.parse_args()
    if shutil.which("vmtouch") is None:
        print("needs vmtouch (apt-get install vmtouch)")
        return 2
    work = tempfile.mkdtemp(prefix="memlock-bench-", dir=args.dir)
    try:
        if not args.no_pyc:
            use_pyc_cache(work)
        big = os.path.join(work, "big.bin")
        make_big(big, parse_size(args.size))
        prof = os.path.join(work, "big.profile")
        profile = make_profile(big, args.ranges, args.share, prof)
        timed([*MEMLOCK, "touch", "-q", "--profile", prof])  # fills the bytecode cache
        tools = {"memlock": [*MEMLOCK, "touch", "-q", "--profile", prof],
                 "vmtouch": ["vmtouch", "-q", "-t", big]}
        times: dict[str, list[float]] = {"memlock": [], "vmtouch": []}
        share, outside = 1.0, 0
        for rep in range(args.reps):
            for name in (("vmtouch", "memlock") if rep % 2 == 0 else ("memlock", "vmtouch")):
                evict(big)
                back_guest_memory(os.path.getsize(big) + (1 << 30))
                times[name].append(timed(tools[name]))
                if name == "memlock":  # every profiled page is back; what else is?
                    inside = sum(memlock.residency(big, offset=off, length=n).resident_bytes
                                 for off, n in profile.files[0].ranges)
                    share = min(share, inside / profile.nbytes)
                    outside = max(outside, memlock.residency(big).resident_bytes - inside)
        evict(big)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = parse_size(args.size)
    print(f"# memlock profile bench: {os.cpu_count()} CPUs, {args.reps} reps, order swapped "
          f"each rep; load {os.getloadavg()[0]:.2f}")
    print(ratio_line(f"restore {format_size(profile.nbytes)} of {format_size(size)} "
                     f"({args.ranges} ranges)", times["memlock"], times["vmtouch"],
                     "vmtouch -t"))
    print(f"{'profiled pages resident after memlock':<44} {100 * share:.3f}% at least; "
          f"outside the ranges at most {format_size(outside)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
