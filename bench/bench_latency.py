"""Wake-up latency: `memlock latency` (Python) beside rt-tests' cyclictest (C), one run.

Same interval, same number of periods, same scheduling (priority, CPU, mlockall), both
with an empty period (no tick): the difference is what a Python loop costs over C's. Each
round runs both, alternating which goes first; figures are medians over the rounds.
Percentiles of both come from their 1-microsecond histograms (cyclictest -h), the same
arithmetic for both; overflows count at the histogram's top (a lower bound).

    .venv/bin/python bench/bench_latency.py [--interval-us 1000] [--duration 5]
        [--rounds 5] [--priority 80] [--cpu N] [--no-lock]

cyclictest writes 0 to /dev/cpu_dma_latency while it runs (no deep C-states); this bench
does the same for memlock's runs, so both measure the same machine. Needs rt-tests and,
for --priority, root or CAP_SYS_NICE. Not run in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_US = 20_000  # histogram buckets: 20 ms


@contextlib.contextmanager
def no_deep_idle() -> Iterator[bool]:
    """Hold /dev/cpu_dma_latency at 0 (what cyclictest does); False where it cannot."""
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_RDWR)
    except OSError:
        yield False
        return
    try:
        os.write(fd, (0).to_bytes(4, sys.byteorder))
        yield True
    finally:
        os.close(fd)


def percentile(counts: list[int], overflows: int, q: float) -> int:
    """Nearest-rank percentile (whole microseconds) of a histogram; overflows at its top."""
    n = sum(counts) + overflows
    rank = max(1, -(-int(q * n * 1000) // 1000))
    seen = 0
    for us, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return us
    return len(counts)


def parse_cyclictest(text: str) -> dict[str, float]:
    counts = [int(m.group(2)) for m in re.finditer(r"^(\d{6}) (\d+)$", text, re.M)]

    def footer(name: str) -> int:
        m = re.search(rf"^# {name}: +(\d+)", text, re.M)
        if m is None:
            raise ValueError(f"cyclictest printed no '# {name}:' line:\n{text[-500:]}")
        return int(m.group(1))

    overflows = footer("Histogram Overflows")
    return {"min": footer("Min Latencies"), "avg": footer("Avg Latencies"),
            "p50": percentile(counts, overflows, 0.5), "p99": percentile(counts, overflows, 0.99),
            "p99.9": percentile(counts, overflows, 0.999), "max": footer("Max Latencies")}


def run_cyclictest(a: argparse.Namespace, loops: int) -> dict[str, float]:
    cmd = ["cyclictest", "-q", "-h", str(MAX_US), "-l", str(loops), "-i", str(a.interval_us),
           "--clock=0"]  # CLOCK_MONOTONIC and clock_nanosleep (its default), as memlock
    if a.priority:
        cmd += ["-p", str(a.priority)]
    if a.cpu is not None:
        cmd += ["-a", str(a.cpu)]
    if a.lock:
        cmd += ["-m"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_cyclictest(out)


def run_memlock(a: argparse.Namespace, loops: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "memlock", "latency", "--json", f"--histogram={MAX_US}",
           "--interval", f"{a.interval_us}us", "--loops", str(loops)]
    if a.priority:
        cmd += ["--priority", str(a.priority)]
    if a.cpu is not None:
        cmd += ["--cpu", str(a.cpu)]
    cmd += ["--lock"] if a.lock else ["--no-lock"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with no_deep_idle():
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    r = json.loads(out)
    h = r["histogram"]
    lat = r["latency"]
    return {"min": lat["min_us"], "avg": lat["avg_us"],
            "p50": percentile(h["counts"], h["overflows"], 0.5),
            "p99": percentile(h["counts"], h["overflows"], 0.99),
            "p99.9": percentile(h["counts"], h["overflows"], 0.999), "max": lat["max_us"],
            "exact_p99": lat["p99_us"], "exact_p50": lat["p50_us"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval-us", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--priority", type=int, default=80, help="0: SCHED_OTHER")
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--no-lock", dest="lock", action="store_false")
    a = ap.parse_args()
    loops = max(1, round(a.duration * 1e6 / a.interval_us))
    runs: dict[str, list[dict[str, float]]] = {"cyclictest": [], "memlock": []}
    tools = {"cyclictest": run_cyclictest, "memlock": run_memlock}
    for i in range(a.rounds):
        order = ["cyclictest", "memlock"] if i % 2 == 0 else ["memlock", "cyclictest"]
        for tool in order:
            runs[tool].append(tools[tool](a, loops))
        c, m = runs["cyclictest"][-1], runs["memlock"][-1]
        print(f"round {i + 1} ({order[0]} first): cyclictest min/avg/p99/max "
              f"{c['min']:.0f}/{c['avg']:.0f}/{c['p99']:.0f}/{c['max']:.0f} us, memlock "
              f"{m['min']:.1f}/{m['avg']:.1f}/{m['p99']:.0f}/{m['max']:.1f} us", flush=True)
    load = os.getloadavg()
    sched = f"SCHED_FIFO {a.priority}" if a.priority else "SCHED_OTHER"
    seconds = loops * a.interval_us / 1e6
    print(f"\n{a.rounds} rounds of {loops} periods of {a.interval_us} us ({seconds:g} s each), "
          f"{sched}, CPU {a.cpu if a.cpu is not None else 'any'}, "
          f"{'mlockall' if a.lock else 'not locked'}; load average {load[0]:.2f}")
    print(f"medians of the rounds (us)  {'min':>8}{'avg':>8}{'p50':>8}{'p99':>8}{'p99.9':>8}"
          f"{'max':>9}")
    med = {tool: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for tool, rs in
           runs.items()}
    for tool in ("cyclictest", "memlock"):
        r = med[tool]
        print(f"  {tool:<26}{r['min']:>8.1f}{r['avg']:>8.1f}{r['p50']:>8.0f}{r['p99']:>8.0f}"
              f"{r['p99.9']:>8.0f}{r['max']:>9.1f}")
    c, m = med["cyclictest"], med["memlock"]
    print(f"Python over C: min {m['min'] - c['min']:+.1f} us, avg {m['avg'] - c['avg']:+.1f} "
          f"us, p50 {m['p50'] - c['p50']:+.0f} us, p99 {m['p99'] - c['p99']:+.0f} us "
          f"(memlock's exact p50/p99: {m['exact_p50']:.1f}/{m['exact_p99']:.1f} us)")


if __name__ == "__main__":
    main()
