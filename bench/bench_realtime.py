"""Page faults and time of a hot loop: plain Python vs mlockall alone vs lock_process.

The loop allocates, touches (one byte per page) and frees a block, N times: the pattern
of a control loop that builds a fresh buffer per cycle. Each variant runs in its own
interpreter (mlockall cannot be undone cleanly in-process), side by side in one run.

    .venv/bin/python bench/bench_realtime.py [--iterations 200] [--block-mib 64]

Needs CAP_IPC_LOCK (or RLIMIT_MEMLOCK above the process size). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, sys, time
    import memlock
    variant, n, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) << 20
    if variant == "mlockall":
        memlock.lock_all()
    elif variant == "lock_process":
        memlock.lock_process(prefault_heap=2 * block)
    worst = 0.0
    with memlock.page_faults() as pf:
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            b = bytearray(block)
            b[::4096] = b"\\1" * (len(b) // 4096)
            del b
            worst = max(worst, time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    print(json.dumps({"minor": pf.minor, "major": pf.major, "s": elapsed, "worst": worst}))
""")

VARIANTS = {
    "plain": "plain Python (glibc mmaps each block)",
    "mlockall": "memlock.lock_all() only (mlockall, no malloc tuning)",
    "lock_process": "memlock.lock_process(prefault_heap=2*block)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--block-mib", type=int, default=64)
    a = ap.parse_args()
    results = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, variant, str(a.iterations), str(a.block_mib)],
            capture_output=True, text=True, check=True,
        ).stdout
        results[variant] = json.loads(out)
    n = a.iterations
    print(f"{n} iterations of allocate+touch+free {a.block_mib} MiB")
    print(f"{'variant':<14}{'minor/iter':>12}{'major':>8}{'mean ms/iter':>14}"
          f"{'worst ms':>10}{'vs plain':>10}")
    base = results["plain"]["s"]
    for variant, r in results.items():
        print(f"{variant:<14}{r['minor'] / n:>12.1f}{r['major']:>8}{1e3 * r['s'] / n:>14.3f}"
              f"{1e3 * r['worst']:>10.3f}{base / r['s']:>9.1f}x")
    for variant, text in VARIANTS.items():
        print(f"  {variant}: {text}")


if __name__ == "__main__":
    main()
