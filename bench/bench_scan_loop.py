"""The host scan's hot loop alone: Python (os.open/os.read) against C (proc_status_scan).

Runs itself in a new PID namespace with its own /proc (``unshare --pid --fork
--mount-proc``, root), so /proc lists exactly the processes it starts: for each count, that
many ``sleep 3600`` children (killed at the end, also on failure; the namespace's end kills
any left). Alternates the loops, 30 rounds, and prints the best and the median in ms.

    python bench/bench_scan_loop.py [COUNT ...]     (default: 100 300 1000)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

ROUNDS = 30


def scanners() -> dict[str, Callable[[], object]]:
    from memlock._platform import _hostscan
    from memlock._speedups import proc_status_scan
    from memlock._threads import run_parallel

    def python_loop() -> object:
        names = [n for n in os.listdir("/proc") if n.isdigit()]
        if len(names) < _hostscan._PARALLEL_MIN_PROCESSES:
            return _hostscan._kept_statuses(names, False)
        run_parallel([names[0::2], names[1::2]],
                     lambda share: _hostscan._kept_statuses(share, False), workers=2)
        return None

    return {"python": python_loop,
            "c, 1 thread": lambda: proc_status_scan(False, 1),
            "c, 2 threads": lambda: proc_status_scan(False, 2)}


def measure(count: int) -> None:
    children: list[subprocess.Popen[bytes]] = []
    try:
        while len([n for n in os.listdir("/proc") if n.isdigit()]) < count:
            children.append(subprocess.Popen(["sleep", "3600"]))
        listed = len([n for n in os.listdir("/proc") if n.isdigit()])
        times: dict[str, list[float]] = {name: [] for name in scanners()}
        loops = scanners()
        for _ in range(ROUNDS):
            for name, loop in loops.items():  # alternating: drift hits every loop alike
                start = time.perf_counter()
                loop()
                times[name].append((time.perf_counter() - start) * 1e3)
        for name, ms in times.items():
            print(f"{listed:5d} processes  {name:13s} best {min(ms):6.2f} ms  "
                  f"median {statistics.median(ms):6.2f} ms", flush=True)
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [100, 300, 1000]
    if os.environ.get("BENCH_IN_NAMESPACE") != "1":
        with open("/proc/loadavg") as f:
            print("load average:", " ".join(f.read().split()[:3]))
        env = dict(os.environ, BENCH_IN_NAMESPACE="1")
        sys.exit(subprocess.call(["unshare", "--pid", "--fork", "--mount-proc",
                                  sys.executable, __file__, *map(str, counts)], env=env))
    for count in counts:
        measure(count)


if __name__ == "__main__":
    main()
