"""Cold warm-up of a model directory: memlock vs vmtouch, against the disk's own bandwidth.

A directory of shards (default 4 of 512 MiB, like a sharded checkpoint) is evicted from
the page cache (POSIX_FADV_DONTNEED) before every run, guest memory is backed first (see
bench_files.back_guest_memory), and then, side by side in one run, the order rotating on
every repetition:

* ``memlock lock --daemon DIR``: returns once every file is resident and locked;
* ``vmtouch -dlw DIR``: the same promise (Debian's vmtouch);
* ``dd iflag=direct`` with 1, 2 and 4 parallel readers over the same shards (the shards
  dealt round-robin to the readers, each reading its own one after another): the device's
  read bandwidth with no page cache, the best of the three in each repetition;
* ``dd`` without ``iflag=direct``, one reader: how fast the page cache fills from this
  device with the kernel's readahead, no locking. Where vmtouch already runs at that speed,
  no tool can take 0.8x its time; the bench prints both tools against it.

Bandwidth is the shards' bytes over the wall time until the command returned (for
memlock and vmtouch: with everything locked). Prints medians, per-repetition ranges, the
memlock/vmtouch ratio (target at most 0.8x) and memlock's share of dd's best bandwidth
(target at least 90%).

Usage: python bench/bench_warmup.py [--dir /var/tmp] [--shards 4] [--shard-size 512M]
       [--reps 5] [--dd-bs 4M] [--no-pyc]
The directory must be on a real disk (tmpfs is refused: nothing to read). Needs vmtouch
and fincore.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench_files import (
    MEMLOCK,
    assert_evicted,
    back_guest_memory,
    evict,
    kill_pidfile,
    make_big,
    timed,
    use_pyc_cache,
)
from memlock._units import format_size, parse_size

#: File systems with no device behind them: a cold read there reads nothing.
MEMORY_FILE_SYSTEMS = {"tmpfs", "ramfs", "hugetlbfs", "overlayfs"}
READERS = (1, 2, 4)
#: The reference with the page cache: one buffered dd reader.
CACHED = "dd cache"


def file_system_type(path: str) -> str:
    """The type of the file system holding ``path`` (``stat -f``)."""
    out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True,
                         check=True).stdout
    return out.strip()


def dd_readers(shards: list[str], readers: int, block: str, direct: bool = True) -> float:
    """Seconds for ``readers`` parallel readers of dd over ``shards`` (O_DIRECT unless not
    ``direct``: then through the page cache)."""
    parts = [shards[i::readers] for i in range(readers)]
    flags = ["iflag=direct"] if direct else []

    def read(part: list[str]) -> None:
        for path in part:
            subprocess.run(["dd", f"if={path}", "of=/dev/null", f"bs={block}", *flags],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    threads = [threading.Thread(target=read, args=(p,)) for p in parts if p]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def fully_cached(shards: list[str]) -> bool:
    """Whether every byte of every shard is resident (util-linux fincore's count, not ours)."""
    out = subprocess.run(["fincore", "-b", "-n", "-r", "-o", "RES,SIZE", *shards],
                         capture_output=True, text=True, check=True).stdout
    return all(res == size for res, size in (line.split() for line in out.splitlines()))


def spread(values: list[float], unit: str = " s", scale: float = 1.0, fmt: str = ".3f") -> str:
    """Median and range of ``values`` (times ``scale``)."""
    v = sorted(x * scale for x in values)
    return f"median {statistics.median(v):{fmt}}{unit} ({v[0]:{fmt}}-{v[-1]:{fmt}})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-size", default="512M")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dd-bs", default="4M", help="dd's block size (default 4M)")
    ap.add_argument("--no-pyc", action="store_true",
                    help="do not cache memlock's bytecode (compile it on every run)")
    args = ap.parse_args()
    if shutil.which("vmtouch") is None or shutil.which("fincore") is None:
        print("needs vmtouch (apt-get install vmtouch) and fincore (util-linux)")
        return 2
    fs = file_system_type(args.dir)
    if fs in MEMORY_FILE_SYSTEMS:
        print(f"{args.dir} is on {fs}: a cold read needs a real disk (use --dir)")
        return 2
    work = tempfile.mkdtemp(prefix="memlock-warmup-", dir=args.dir)
    try:
        if not args.no_pyc:
            use_pyc_cache(work)
        model = os.path.join(work, "model")
        os.mkdir(model)
        size = parse_size(args.shard_size)
        shards = [os.path.join(model, f"model-{i + 1:05}-of-{args.shards:05}.safetensors")
                  for i in range(args.shards)]
        for path in shards:
            make_big(path, size)
        total = size * len(shards)
        pidfile = os.path.join(work, "holder.pid")
        holders = {
            "memlock": [*MEMLOCK, "lock", "-q", "--daemon", "--pidfile", pidfile, model],
            "vmtouch": ["vmtouch", "-q", "-d", "-l", "-w", "-P", pidfile, model],
        }
        names = [*holders, *(f"dd x{n}" for n in READERS), CACHED]
        times: dict[str, list[float]] = {name: [] for name in names}
        dd_best: list[float] = []
        for rep in range(args.reps):
            k = rep % len(names)
            for name in names[k:] + names[:k]:
                for path in shards:
                    evict(path)
                    assert_evicted(path)
                back_guest_memory(total + (1 << 30))
                if name in holders:
                    times[name].append(timed(holders[name]))
                    if not fully_cached(shards):
                        print(f"{name} returned before every page was resident")
                        return 1
                    kill_pidfile(pidfile)
                elif name == CACHED:
                    times[name].append(dd_readers(shards, 1, args.dd_bs, direct=False))
                else:
                    times[name].append(dd_readers(shards, int(name[4:]), args.dd_bs))
            dd_best.append(min(times[f"dd x{n}"][-1] for n in READERS))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    times["dd best"] = dd_best
    mine, theirs = times["memlock"], times["vmtouch"]
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    shares = [d / m for m, d in zip(mine, dd_best, strict=True)]  # bandwidth ratio = time ratio
    pyc = "compiled on every run" if args.no_pyc else "cached"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# memlock warm-up bench: {len(shards)} x {format_size(size)} on {fs} ({args.dir}), "
          f"{os.cpu_count()} CPUs, {args.reps} reps, order rotating, memlock bytecode {pyc}, "
          f"load after: {load}")
    for name, t in times.items():
        bandwidth = spread([total / x for x in t], " MiB/s", 1 / 2**20, ".0f")
        print(f"{name:<8} {spread(t)}   {bandwidth}")
    ratio = statistics.median(mine) / statistics.median(theirs)
    print(f"memlock / vmtouch -dlw: {ratio:.2f}x of the medians; per rep "
          f"{spread(ratios, 'x', fmt='.2f')}  (target <= 0.8x)")
    share = statistics.median(dd_best) / statistics.median(mine)
    print(f"memlock bandwidth / dd's best: {share:.0%} of the medians; per rep "
          f"{spread(shares, '%', 100, '.0f')}  (target >= 90%)")
    fill = statistics.median(times[CACHED])
    print(f"against filling the page cache (one buffered dd, no locking): vmtouch "
          f"{statistics.median(theirs) / fill:.2f}x, memlock {statistics.median(mine) / fill:.2f}x "
          f"of its time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
