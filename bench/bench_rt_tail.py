"""Tail latency of a 1 ms Python loop: plain vs lock_process() with the tail settings.

Each period of the loop allocates a few MiB (a fresh buffer, touched) and keeps a little
state, while another thread churns memory (allocates, touches and frees bigger blocks and
short-lived objects); the process holds a large long-lived state (as a service after
warm-up: parsed config, caches, models), which is what makes full garbage collections
slow. The wake-up latency of every period comes from :func:`memlock.measure_latency`
(absolute-deadline clock_nanosleep, as cyclictest). Two variants, each in its own fresh
interpreter, the order swapped every run, several runs:

- plain: the same program, nothing set up;
- tuned: ``memlock.lock_process(prefault_heap=..., gc_freeze=True, arena_max=1,
  thp="disable")`` after warm-up, before the threads start;
- with ``--breakdown`` also locked (the same without ``gc_freeze``) and frozen (only
  ``gc.collect(); gc.freeze()``, nothing locked): which setting buys what.

Prints p99.9 and max (and p50, faults, GC passes) per run and their medians.

    .venv/bin/python bench/bench_rt_tail.py [--seconds 10] [--runs 5] [--tick-mib 4]

Needs CAP_IPC_LOCK (or RLIMIT_MEMLOCK above the process size). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_files import back_guest_memory

CHILD = textwrap.dedent("""
    import collections, gc, json, resource, sys, threading, time
    import memlock
    variant, seconds, tick_mib, churn_mib, state_n, switch = (
        sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
        float(sys.argv[6]))
    if switch:
        sys.setswitchinterval(switch)  # how long another thread may keep the GIL

    # warm-up: the long-lived state of a service (tracked by the collector)
    state = [[i, str(i), (i, i + 1)] for i in range(state_n)]
    heap = (2 * tick_mib + 2 * churn_mib + 64) << 20
    if variant == "tuned":
        memlock.lock_process(prefault_heap=heap, gc_freeze=True, arena_max=1, thp="disable")
    elif variant == "locked":  # the memory settings without the collector's
        memlock.lock_process(prefault_heap=heap, arena_max=1, thp="disable")
    elif variant == "frozen":  # the collector's without locking anything
        gc.collect()
        gc.freeze()

    longest_gc, gc_start = [0.0], [0.0]

    def timed(phase, info):  # the longest collector pass, in any thread
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            longest_gc[0] = max(longest_gc[0], time.perf_counter() - gc_start[0])
    gc.callbacks.append(timed)

    stop = threading.Event()

    def churn():  # another thread: bigger blocks and short-lived objects, all the time
        while not stop.is_set():
            b = bytearray(churn_mib << 20)
            b[::4096] = b"\\1" * (len(b) // 4096)
            junk = [[j] for j in range(2000)]
            del b, junk
            time.sleep(0.002)

    recent = collections.deque(maxlen=2000)  # state the loop keeps for a while

    def tick():
        buf = bytearray(tick_mib << 20)
        buf[::4096] = b"\\1" * (len(buf) // 4096)
        recent.append([len(buf), [0] * 8])

    worker = threading.Thread(target=churn)
    worker.start()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    try:
        report = memlock.measure_latency(0.001, duration=seconds, tick=tick, outliers=5)
    finally:
        stop.set()
        worker.join()
    process_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    lat = report.latency
    causes = [{"latency_us": o.latency_us, "minor": o.minor_faults,
               "gc": [c.generation for c in o.collections],
               "switches": o.involuntary_switches} for o in report.outliers]
    print(json.dumps({"p50": lat.p50_us, "p99": lat.p99_us, "p999": lat.p99_9_us,
                      "max": lat.max_us, "minor": report.minor_faults,
                      "process_minor": process_faults, "gc_max_ms": 1e3 * longest_gc[0],
                      "collections": report.collections, "worst": causes}))
""")

VARIANTS = ("plain", "tuned")
#: Variants that tell the two causes apart (--breakdown).
PARTS = ("locked", "frozen")


def run_variant(variant: str, a: argparse.Namespace) -> dict[str, object]:
    back_guest_memory(512 << 20)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, variant, str(a.seconds), str(a.tick_mib),
         str(a.churn_mib), str(a.state), str(a.switch_interval)],
        capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="per variant and run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tick-mib", type=int, default=4, help="allocated per period")
    ap.add_argument("--churn-mib", type=int, default=8, help="allocated per churn step")
    ap.add_argument("--state", type=int, default=500_000, help="long-lived objects")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval in both variants (0: Python's 5 ms)")
    ap.add_argument("--json", action="store_true", help="also print every run as JSON")
    ap.add_argument("--breakdown", action="store_true",
                    help="also the locked-only and frozen-only variants")
    a = ap.parse_args()
    variants = VARIANTS + PARTS if a.breakdown else VARIANTS
    print(f"1 ms loop, {a.seconds:g} s per variant and run, {a.tick_mib} MiB allocated per "
          f"period, a thread churning {a.churn_mib} MiB blocks, {a.state:,} long-lived "
          f"state objects; GIL switch interval "
          f"{1e3 * a.switch_interval if a.switch_interval else 5:g} ms; "
          f"load {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[dict[str, object]]] = {v: [] for v in variants}
    print(f"{'run':>3} {'variant':<7}{'p50 µs':>8}{'p99 µs':>9}{'p99.9 µs':>10}{'max µs':>10}"
          f"{'faults loop':>12}{'all threads':>12}{'GC passes':>10}{'longest GC':>11}")
    for i in range(a.runs):
        order = variants if i % 2 == 0 else variants[::-1]
        for variant in order:
            r = run_variant(variant, a)
            runs[variant].append(r)
            print(f"{i + 1:>3} {variant:<7}{r['p50']:>8.0f}{r['p99']:>9.0f}{r['p999']:>10.0f}"
                  f"{r['max']:>10.0f}{r['minor']:>12,}{r['process_minor']:>12,}"
                  f"{r['collections']:>10,}{r['gc_max_ms']:>9.1f}ms", flush=True)
            if a.json:
                print(json.dumps({"run": i + 1, "variant": variant, **r}))
    med = {v: {k: statistics.median(float(r[k]) for r in runs[v])  # type: ignore[arg-type]
               for k in ("p50", "p99", "p999", "max", "minor", "process_minor", "gc_max_ms")}
           for v in variants}
    print(f"median of {a.runs} runs:")
    for v in variants:
        m = med[v]
        print(f"    {v:<7}{m['p50']:>8.0f}{m['p99']:>9.0f}{m['p999']:>10.0f}{m['max']:>10.0f}"
              f"{m['minor']:>12,.0f}{m['process_minor']:>12,.0f}{'':>10}"
              f"{m['gc_max_ms']:>9.1f}ms")
    for k, name in (("p999", "p99.9"), ("max", "max")):
        print(f"  {name}: plain / tuned = {med['plain'][k] / med['tuned'][k]:.1f}x")
    print(f"  load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
