"""``memlock latency``: a Python cyclictest, with the cause of each late period."""

from __future__ import annotations

import argparse
import math
import os
import sys

import memlock

from .._cli_api import describe_error, quote_arg
from ._arguments import add_program, module_found, program_target, size

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

__all__ = ["register"]

#: Histogram buckets of a bare ``--histogram`` (microseconds).
HISTOGRAM_DEFAULT_US = 1000
#: The most buckets ``--histogram`` takes (cyclictest's HIST_MAX).
HISTOGRAM_MAX_US = 1_000_000

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

_DESCRIPTION = """\
Run a periodic loop, as cyclictest does, and measure how late each period wakes up: each
period sleeps until an absolute deadline (clock_nanosleep with TIMER_ABSTIME on
CLOCK_MONOTONIC), and its wake-up latency is the clock on waking minus the deadline.
Prints min, avg, p50, p99, p99.9 and max in microseconds, and for the worst periods what
happened in them: page faults, involuntary context switches, garbage-collector passes.

Given a Python script or module, memlock latency imports it (its `if __name__ ==
"__main__":` block does not run, sys.argv is its ARGS) and calls its tick() function
inside each period; the tick's duration is measured too. A period that ends after the
next deadline skips the deadlines already past, as cyclictest does.
"""

_EPILOG = """\
examples:
  memlock latency --interval 1ms --duration 10s
  memlock latency --loops 100000 --priority 80 --cpu 1 --histogram=200 > hist.txt
  memlock latency --lock --prefault-heap 64M -- control_loop.py --rate 1000
  memlock latency --json -m mypackage.controller

DURATION: a number with a unit: 500us, 1ms, 10s, 2m (no unit: seconds).
SIZE: bytes, or with a suffix K, M, G (binary): 4096, 512K, 64M, 1G.
--histogram prints cyclictest -h's format (one `%06d %06d` row per microsecond, then
`# Min Latencies:` ... lines) so its plotting scripts read it; the summary follows as
`#` comment lines.
Exit status: 0 measured; 1 failed (no permission for real-time scheduling, cannot lock,
the program's tick raised); 2 usage error.
"""


def duration(text: str, *, inclusive: bool = False) -> float:
    """A time with a unit (``500us``, ``1ms``, ``10s``; bare numbers: seconds) above 0.

    ``inclusive`` also takes 0.
    """
    stripped = text.strip().lower()
    number, unit = stripped, "s"
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if stripped.endswith(suffix):
            number, unit = stripped[: -len(suffix)].strip(), suffix
            break
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = math.nan
    low_ok = value >= 0 if inclusive else value > 0
    if not (low_ok and value < math.inf) or not number or number[-1].isalpha():
        what = "from 0" if inclusive else "above 0"
        raise argparse.ArgumentTypeError(
            f"not a duration {what}: {quote_arg(text)} (examples: 500us, 1ms, 10s)")
    return value


def _threshold(text: str) -> float:
    return duration(text, inclusive=True)


def _whole(low: int, what: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 18 \
                or int(stripped) < low:
            raise argparse.ArgumentTypeError(
                f"not {what}: {quote_arg(text)} (a whole number from {low})")
        return int(stripped)

    convert.__name__ = what
    return convert


def _histogram(text: str) -> int:
    value = _whole(1, "a number of microseconds")(text)
    if value > HISTOGRAM_MAX_US:
        raise argparse.ArgumentTypeError(
            f"--histogram takes at most {HISTOGRAM_MAX_US} buckets, not {value}")
    return value


def register(sub: Any) -> None:
    """Add ``latency`` to ``sub``."""
    p = sub.add_parser(
        "latency",
        help="measure wake-up latency of a periodic loop (a Python cyclictest)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="memlock latency [--interval 1ms] [--duration 10s | --loops N] "
        "[--histogram[=MAX_US]] [--json] [--lock | --no-lock] [--prefault-heap SIZE] "
        "[--priority N] [--policy fifo|rr] [--cpu N] [-- script.py ARGS | -m module ARGS]",
    )
    p.add_argument("--interval", type=duration, default=0.001, metavar="DURATION",
                   help="the period (default 1ms)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--duration", type=duration, metavar="DURATION",
                        help="how long to run (default 10s)")
    length.add_argument("--loops", type=_whole(1, "a number of periods"), metavar="N",
                        help="how many periods to run")
    p.add_argument("--histogram", type=_histogram, nargs="?", const=HISTOGRAM_DEFAULT_US,
                   metavar="MAX_US",
                   help="print cyclictest -h's histogram with MAX_US one-microsecond "
                   f"buckets (default {HISTOGRAM_DEFAULT_US})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--lock", action=argparse.BooleanOptionalAction, default=None,
                   help="lock the process first (memlock.lock_process: mlockall, malloc "
                   "tuning), as cyclictest -m does; default: not locked, unless "
                   "--prefault-heap")
    p.add_argument("--prefault-heap", type=size, metavar="SIZE",
                   help="with --lock: map, touch and keep SIZE bytes of malloc heap")
    p.add_argument("--priority", type=_whole(1, "a priority"), metavar="N",
                   help="run the loop at real-time priority N (SCHED_FIFO unless --policy)")
    p.add_argument("--policy", choices=("fifo", "rr"),
                   help="real-time policy for --priority: fifo (default) or rr")
    p.add_argument("--cpu", type=_whole(0, "a CPU number"), metavar="N",
                   help="pin the loop to CPU N")
    p.add_argument("--outliers", type=_whole(0, "a number of periods"), default=10,
                   metavar="N", help="explain the N latest periods (default 10)")
    p.add_argument("--threshold", type=_threshold, metavar="DURATION",
                   help="explain the periods done later than DURATION (e.g. 100us) after "
                   "their deadline (latency + tick; at most N of them, worst first)")
    add_program(p, "a module whose tick() runs in each period",
                "a script whose tick() runs in each period, and its arguments")
    p.set_defaults(handler=_latency)


def _usage(message: str) -> int:
    print(f"memlock latency: error: {message} (see memlock latency --help)", file=sys.stderr)
    return 2


def _load_tick(module: str | None, script: str | None, tail: list[str]) -> Callable[[], object]:
    """Import the program (not as __main__) and return its tick(); ValueError if it has none."""
    import runpy

    if script is not None:
        sys.argv = [script, *tail]
        sys.path[0:1] = [os.path.dirname(os.path.abspath(script))]
        namespace = runpy.run_path(script, run_name="__memlock_latency__")
        name = script
    else:
        import importlib

        assert module is not None
        sys.argv = [module, *tail]
        namespace = vars(importlib.import_module(module))
        name = module
    tick = namespace.get("tick")
    if not callable(tick):
        raise ValueError(f"{name} defines no tick() function to run in each period")
    return tick  # type: ignore[no-any-return]


def _program_tb(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the program's first frame on; None if it never left memlock."""
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        if name != "memlock" and not name.startswith("memlock."):
            return tb
        tb = tb.tb_next
    return None


def _row(label: str, s: memlock.LatencySummary) -> str:
    return (f"{label:<14}min {s.min_us:.1f}  avg {s.avg_us:.1f}  p50 {s.p50_us:.1f}  "
            f"p99 {s.p99_us:.1f}  p99.9 {s.p99_9_us:.1f}  max {s.max_us:.1f}")


def summary_lines(report: memlock.LatencyReport) -> list[str]:
    """The human report, line by line."""
    r = report
    pinned = f", CPU {r.cpu}" if r.cpu is not None else ""
    sched = r.policy + (f" priority {r.priority}" if r.priority else "")
    lines = [
        f"memlock latency: {r.loops} periods of {r.interval_us:g} us, {r.sleep}, {sched}"
        f"{pinned}, {'locked' if r.locked else 'not locked'}",
        _row("latency (us):", r.latency),
    ]
    if r.tick is not None:
        lines.append(_row("tick (us):", r.tick))
    if r.overruns:
        lines.append(f"overruns: {r.overruns} periods ended after the next deadline; "
                     f"{r.missed_deadlines} deadlines already past were skipped (as "
                     "cyclictest does)")
    whose = "this thread" if r.per_thread else "whole process"
    lines.append(f"in all ({whose}): {r.minor_faults} minor faults, {r.major_faults} major "
                 f"faults, {r.involuntary_switches} involuntary context switches, "
                 f"{r.collections} garbage collections")
    if r.threshold_us is not None:
        lines.append(f"{r.late_periods} periods done later than {r.threshold_us:g} us "
                     "after their deadline")
    if r.outliers:
        lines.append("worst periods (late_us: latency + tick), and what happened in them:")
        lines.append(f"  {'period':>8} {'latency_us':>11} {'tick_us':>9} {'late_us':>9} "
                     f"{'minflt':>6} {'majflt':>6} {'invcsw':>6}  gc")
        for o in r.outliers:
            tick = "-" if o.tick_us is None else f"{o.tick_us:.1f}"
            gcs = ", ".join(f"gen{c.generation} {c.duration_us:.0f} us"
                            for c in o.collections) or "-"
            lines.append(f"  {o.period:>8} {o.latency_us:>11.1f} {tick:>9} {o.late_us:>9.1f} "
                         f"{o.minor_faults:>6} {o.major_faults:>6} "
                         f"{o.involuntary_switches:>6}  {gcs}")
    return lines


def _latency(args: argparse.Namespace) -> int:
    import traceback

    module, script, tail = program_target(args)
    if module == "":
        return _usage("-m needs a module name")
    if args.prefault_heap is not None and args.lock is False:
        return _usage("--prefault-heap needs --lock (lock_process prefaults the heap)")
    if args.policy is not None and args.priority is None:
        return _usage("--policy needs --priority")
    if script is not None and not os.path.isfile(script):
        return _usage(f"can't run {script!r}: not a file")
    lock = bool(args.lock) or (args.lock is None and args.prefault_heap is not None)

    tick = None
    if module is not None or script is not None:
        if module is not None and not module_found(module):
            return _usage(f"no module named {module!r}")
        try:
            tick = _load_tick(module, script, tail)
        except ValueError as exc:
            return _usage(str(exc))
        except SystemExit as exc:
            print(f"memlock latency: the program exited while loading ({exc.code})",
                  file=sys.stderr)
            return 1
        except Exception as exc:  # the program's own error: print it as python would
            traceback.print_exception(type(exc), exc, exc.__traceback__)
            return 1
    try:
        report = memlock.measure_latency(
            args.interval, duration=args.duration, loops=args.loops, tick=tick, lock=lock,
            prefault_heap=args.prefault_heap, priority=args.priority, policy=args.policy,
            cpu=args.cpu, outliers=args.outliers,
            # whole nanoseconds: 100us (1e-4 s) * 1e6 is 99.99999999999999
            threshold_us=None if args.threshold is None else round(args.threshold * 1e9) / 1e3)
    except Exception as exc:
        program_tb = _program_tb(exc.__traceback__)
        if program_tb is not None:  # the tick raised: print it as python would
            traceback.print_exception(type(exc), exc, program_tb)
            return 1
        if isinstance(exc, (TypeError, ValueError)):
            return _usage(str(exc))
        if isinstance(exc, (OSError, MemoryError, OverflowError)):  # MemlockError: OSError
            print(f"memlock latency: {describe_error(exc)}", file=sys.stderr)
            return 1
        raise

    if args.json:
        data = report.to_dict()
        if args.histogram is not None:
            counts, overflows = report.histogram(args.histogram)
            data["histogram"] = {"max_us": args.histogram, "counts": counts,
                                 "overflows": len(overflows), "overflow_periods": overflows}
        print(report.to_json(indent=2) if args.histogram is None else
              __import__("json").dumps(data, indent=2))
    elif args.histogram is not None:
        sys.stdout.write(report.cyclictest_histogram(args.histogram))
        print("\n".join(f"# {line}" for line in summary_lines(report)))
    else:
        print("\n".join(summary_lines(report)))
    return 0
