"""measure_latency(): a periodic loop that measures its wake-up latency, as cyclictest does.

Each period sleeps until an absolute deadline (clock_nanosleep with TIMER_ABSTIME on
CLOCK_MONOTONIC, through the backend), reads the clock on waking, and keeps how late it
woke; an optional ``tick()`` runs in the period and its duration is kept too. What each
period cost besides is counted from the kernel's own accounting: page faults and
involuntary context switches (getrusage of this thread on Linux) and the garbage
collector's passes (``gc.callbacks``), so the worst periods come with their causes.

The loop does not measure itself: every per-period figure goes into arrays allocated and
touched before the first period, so the hot loop grows nothing and takes no page fault of
its own. Figures are computed after the last period.
"""

from __future__ import annotations

import errno
import gc
import json
import math
import os
import resource
import sys
import time
from array import array

from ._platform import BACKEND
from ._records import FrozenRecord
from ._units import format_size
from .errors import UnsupportedOperation

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["GarbageCollection", "LatencyReport", "LatencySummary", "Outlier", "measure_latency"]

#: The longest period measure_latency accepts (seconds).
INTERVAL_MAX = 1.0
#: The shortest period (seconds): below it the loop's own cost is the whole period.
INTERVAL_MIN = 1e-6
#: Garbage-collector passes recorded per run at most (the count past it is still kept).
_GC_RECORDS_MAX = 1 << 16
#: Bytes per period a run holds at its peak, while the report is computed (the arrays
#: filled in the loop, then Python lists to sort): measured 121, and 165 with a tick.
_PEAK_BYTES_PER_PERIOD = 128
_PEAK_BYTES_PER_PERIOD_TICK = 176
_POLICIES = {"fifo": "SCHED_FIFO", "rr": "SCHED_RR"}

#: getrusage(2)'s target for page faults, and whether it counts only the calling thread.
_RUSAGE_WHO, _PER_THREAD = BACKEND.faults_rusage()


def _us(ns: float) -> float:
    return round(ns / 1000.0, 3)


class LatencySummary(FrozenRecord):
    """Distribution of one per-period figure, in microseconds.

    Percentiles are nearest-rank: ``p99_us`` is the smallest value that at least 99% of
    the periods do not exceed.

    Attributes:
        min_us: The smallest value.
        avg_us: The mean.
        p50_us: The median.
        p99_us: The 99th percentile.
        p99_9_us: The 99.9th percentile.
        max_us: The largest value.
    """

    __module__ = "memlock"
    __slots__ = __match_args__ = ("min_us", "avg_us", "p50_us", "p99_us", "p99_9_us", "max_us")

    min_us: float
    avg_us: float
    p50_us: float
    p99_us: float
    p99_9_us: float
    max_us: float

    def __init__(self, min_us: float, avg_us: float, p50_us: float, p99_us: float,
                 p99_9_us: float, max_us: float) -> None:
        self._fill(min_us, avg_us, p50_us, p99_us, p99_9_us, max_us)

    @classmethod
    def of(cls, values_ns: Sequence[int]) -> LatencySummary:
        """The summary of nanosecond values (at least one)."""
        ordered = sorted(values_ns)
        n = len(ordered)

        def rank(q: float) -> float:
            return _us(ordered[max(0, math.ceil(q * n) - 1)])

        return cls(_us(ordered[0]), _us(sum(ordered) / n), rank(0.5), rank(0.99),
                   rank(0.999), _us(ordered[-1]))


class GarbageCollection(FrozenRecord):
    """One pass of the garbage collector inside a period.

    Attributes:
        generation: The generation collected (0, 1 or 2).
        duration_us: How long the pass took.
    """

    __module__ = "memlock"
    __slots__ = __match_args__ = ("generation", "duration_us")

    generation: int
    duration_us: float

    def __init__(self, generation: int, duration_us: float) -> None:
        self._fill(generation, duration_us)


class Outlier(FrozenRecord):
    """A late period and what happened in it.

    A period runs from the end of the previous one's bookkeeping to the end of its own:
    the sleep, the wake-up, and the tick.

    Attributes:
        period: Its index, from 0 (cyclictest's cycle number).
        latency_us: How late it woke after its deadline.
        tick_us: How long the tick ran (None without a tick).
        late_us: How long after its deadline the period's work was done: the latency
            plus the tick. Outliers are ranked by it.
        minor_faults: Minor page faults taken in the period (getrusage).
        major_faults: Major page faults (read from disk or swap).
        involuntary_switches: Times the scheduler took the CPU away (ru_nivcsw).
        collections: The garbage collector's passes in the period (started by any
            thread: a pass holds the GIL, so it stops the loop's thread too).
    """

    __module__ = "memlock"
    __slots__ = __match_args__ = ("period", "latency_us", "tick_us", "late_us", "minor_faults",
                                  "major_faults", "involuntary_switches", "collections")

    period: int
    latency_us: float
    tick_us: float | None
    late_us: float
    minor_faults: int
    major_faults: int
    involuntary_switches: int
    collections: tuple[GarbageCollection, ...]

    def __init__(self, period: int, latency_us: float, tick_us: float | None, late_us: float,
                 minor_faults: int, major_faults: int, involuntary_switches: int,
                 collections: tuple[GarbageCollection, ...]) -> None:
        self._fill(period, latency_us, tick_us, late_us, minor_faults, major_faults,
                   involuntary_switches, tuple(collections))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (collections as dicts)."""
        d = super().to_dict()
        d["collections"] = [c.to_dict() for c in self.collections]
        return d


class LatencyReport(FrozenRecord):
    """What :func:`measure_latency` measured.

    Attributes:
        interval_us: The period.
        loops: Periods measured.
        latency: Wake-up latency: how late each period woke after its deadline.
        tick: Duration of the tick (None without a tick).
        overruns: Periods whose work ended after the next deadline.
        missed_deadlines: Deadlines skipped after overruns: as cyclictest does, the next
            period waits for the first deadline still ahead (on the same grid), so one
            stall makes one late period, not a run of catch-up periods.
        minor_faults, major_faults, involuntary_switches: Totals over the run.
        collections: Garbage-collector passes over the run.
        outliers: The late periods, worst first, with what happened in each (any
            period: :meth:`period`).
        threshold_us: Periods whose work was done later than this after their deadline
            (``Outlier.late_us``) were outliers (None: the worst N).
        late_periods: Periods later than ``threshold_us`` (None without a threshold).
        per_thread: Faults and switches are of the measuring thread only (else of the
            whole process).
        sleep: How the loop slept (clock_nanosleep with TIMER_ABSTIME, or a fallback).
        locked: The process was locked first (:func:`memlock.lock_process`).
        policy: Scheduling policy of the loop (``SCHED_OTHER``, ``SCHED_FIFO``...).
        priority: Its real-time priority (0 for SCHED_OTHER).
        cpu: The CPU it was pinned to (None: not pinned).
    """

    __module__ = "memlock"
    __match_args__ = (
        "interval_us", "loops", "latency", "tick", "overruns", "missed_deadlines",
        "minor_faults", "major_faults",
        "involuntary_switches", "collections", "outliers", "threshold_us", "late_periods",
        "per_thread", "sleep", "locked", "policy", "priority", "cpu")
    __slots__ = (*__match_args__, "_periods")

    interval_us: float
    loops: int
    latency: LatencySummary
    tick: LatencySummary | None
    overruns: int
    missed_deadlines: int
    minor_faults: int
    major_faults: int
    involuntary_switches: int
    collections: int
    outliers: tuple[Outlier, ...]
    threshold_us: float | None
    late_periods: int | None
    per_thread: bool
    sleep: str
    locked: bool
    policy: str
    priority: int
    cpu: int | None
    _periods: _Periods

    def __init__(self, *values: Any, periods: _Periods) -> None:
        self._fill(*values)
        object.__setattr__(self, "_periods", periods)

    def latencies_us(self) -> list[float]:
        """Every period's wake-up latency, in order."""
        return [_us(v) for v in self._periods.lat]

    def period(self, index: int) -> Outlier:
        """What happened in period ``index`` (from 0), late or not, as an :class:`Outlier`.

        Raises:
            IndexError: No such period.
        """
        if not 0 <= index < self.loops:
            raise IndexError(f"period {index} out of range (0 to {self.loops - 1})")
        return self._periods.record(index)

    def histogram(self, max_us: int) -> tuple[list[int], list[int]]:
        """The histogram of cyclictest -h: ``(counts, overflow_periods)``.

        ``counts[i]`` is the number of periods that woke between ``i`` and ``i + 1``
        microseconds late (cyclictest's whole microseconds); periods ``max_us`` or more
        late are overflows, listed by period index.
        """
        if not isinstance(max_us, int) or isinstance(max_us, bool) or max_us < 1:
            raise ValueError(f"max_us must be a whole number of microseconds >= 1, not {max_us!r}")
        counts = [0] * max_us
        overflows = []
        for period, ns in enumerate(self._periods.lat):
            us = ns // 1000
            if us < max_us:
                counts[max(0, us)] += 1
            else:
                overflows.append(period)
        return counts, overflows

    def cyclictest_histogram(self, max_us: int) -> str:
        """The histogram in cyclictest -h's text format, which its plotting scripts read.

        One ``%06d %06d`` row per microsecond bucket, then ``# Total:``, ``# Min
        Latencies:``, ``# Avg Latencies:``, ``# Max Latencies:``, ``# Histogram
        Overflows:`` and the overflowing cycle numbers (at most ``max_us`` of them, as
        cyclictest lists), as rt-tests' cyclictest prints them for one thread.
        """
        counts, overflows = self.histogram(max_us)
        lines = ["# Histogram"]
        lines += [f"{i:06d} {c:06d}" for i, c in enumerate(counts)]
        whole = [ns // 1000 for ns in self._periods.lat]
        avg = sum(whole) // len(whole) if whole else 0
        lines += [
            f"# Total: {sum(counts):09d}",
            f"# Min Latencies: {min(whole, default=0):05d}",
            f"# Avg Latencies: {avg:05d}",
            f"# Max Latencies: {max(whole, default=0):05d}",
            f"# Histogram Overflows: {len(overflows):05d}",
            "# Histogram Overflow at cycle number:",
        ]
        listed = " ".join(f"{p:05d}" for p in overflows[:max_us])
        others = f" # {len(overflows) - max_us:05d} others" if len(overflows) > max_us else ""
        lines.append(f"# Thread 0:{' ' if listed else ''}{listed}{others}")
        return "\n".join(lines) + "\n\n"

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain values (nested dicts and lists), ready for JSON."""
        d = super().to_dict()
        d["latency"] = self.latency.to_dict()
        d["tick"] = None if self.tick is None else self.tick.to_dict()
        d["outliers"] = [o.to_dict() for o in self.outliers]
        return d

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON text (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)


# -- arguments --------------------------------------------------------------------------------


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return float(value)


def _loop_count(interval: float, duration: float | None, loops: int | None) -> int:
    if duration is not None and loops is not None:
        raise ValueError("give duration or loops, not both")
    if loops is not None:
        if isinstance(loops, bool) or not isinstance(loops, int):
            raise TypeError(f"loops must be an int, not {type(loops).__name__}")
        if loops < 1:
            raise ValueError(f"loops must be at least 1, not {loops}")
        return loops
    seconds = 10.0 if duration is None else _number("duration", duration)
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"duration must be a finite number of seconds above 0, not {seconds}")
    return max(1, round(seconds / interval))


def _check_memory(loops: int, tick: object) -> None:
    """MemoryError, before anything runs, when the run's figures cannot fit in memory."""
    per = _PEAK_BYTES_PER_PERIOD if tick is None else _PEAK_BYTES_PER_PERIOD_TICK
    need = loops * per
    why = BACKEND.allocation_refusal(need)[0]
    try:
        available = BACKEND.system_status().available_bytes
    except OSError:  # unreadable /proc/meminfo: nothing known forbids it
        available = None
    if why is None and available is not None and need > available:
        why = f"more than the memory available now (MemAvailable {format_size(available)})"
    if why is not None:
        raise MemoryError(
            f"{loops} periods need about {format_size(need)} for their figures ({per} bytes "
            f"each, kept for the report): {why}; measure fewer periods (loops, duration)")


def _scheduling(policy: str | None, priority: int | None) -> tuple[int, int] | None:
    """(OS policy, priority) to set, or None to leave the scheduler alone."""
    if policy is None and priority is None:
        return None
    if policy is not None and policy not in _POLICIES:
        raise ValueError(f"policy must be 'fifo' or 'rr', not {policy!r}")
    if priority is None:
        raise ValueError(f"policy {policy!r} needs a priority (1-99 on Linux)")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if sys.platform == "darwin":
        raise UnsupportedOperation("real-time scheduling (sched_setscheduler) is not "
                                   "available on macOS")
    os_policy: int = getattr(os, _POLICIES[policy or "fifo"])
    low, high = os.sched_get_priority_min(os_policy), os.sched_get_priority_max(os_policy)
    if not low <= priority <= high:
        raise ValueError(f"priority must be from {low} to {high} for "
                         f"{_POLICIES[policy or 'fifo']}, not {priority}")
    return os_policy, priority


def _check_cpu(cpu: int | None) -> int | None:
    if cpu is None:
        return None
    if isinstance(cpu, bool) or not isinstance(cpu, int):
        raise TypeError(f"cpu must be an int, not {type(cpu).__name__}")
    if sys.platform == "darwin" or not hasattr(os, "sched_setaffinity"):
        raise UnsupportedOperation(f"pinning to a CPU (sched_setaffinity) is not available on "
                                   f"{sys.platform}")
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        raise ValueError(f"cpu {cpu} is not one this process may run on "
                         f"({', '.join(map(str, sorted(allowed)))})")
    return cpu


def _policy_name(policy: int) -> str:
    for name in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE"):
        if getattr(os, name, None) == policy:
            return name
    return str(policy)


def _rt_permission_error(policy: int, priority: int) -> PermissionError:
    rtprio = getattr(resource, "RLIMIT_RTPRIO", None)
    limit = "" if rtprio is None else f" and RLIMIT_RTPRIO is {resource.getrlimit(rtprio)[0]}"
    return PermissionError(
        errno.EPERM,
        f"cannot run the loop as {_policy_name(policy)} priority {priority}: this process "
        f"may not use real-time scheduling (it lacks CAP_SYS_NICE{limit}); run it as root, "
        "grant CAP_SYS_NICE (systemd AmbientCapabilities=CAP_SYS_NICE), or raise "
        "RLIMIT_RTPRIO (`ulimit -r`, systemd LimitRTPRIO=); with real-time group "
        "scheduling, its cgroup also needs cpu.rt_runtime_us above 0",
    )


# -- the loop ---------------------------------------------------------------------------------


def _zeros(n: int) -> array[int]:
    """A touched array of ``n`` 64-bit zeros (repetition writes every page)."""
    return array("q", [0]) * n


def _run(loops: int, interval_ns: int, tick: Callable[[], object] | None,
         sleep_until: Callable[[int], object]) -> dict[str, Any]:
    """Run the periods; every figure goes into preallocated arrays."""
    now = time.monotonic_ns
    getrusage, who = resource.getrusage, _RUSAGE_WHO
    lat, tick_ns = _zeros(loops), _zeros(loops if tick is not None else 0)
    minflt, majflt, nivcsw = _zeros(loops), _zeros(loops), _zeros(loops)
    gc_cap = min(_GC_RECORDS_MAX, 2 * loops + 16)
    gc_period, gc_gen, gc_ns = _zeros(gc_cap), _zeros(gc_cap), _zeros(gc_cap)
    # [current period, passes seen, start of the pass in progress]
    state = _zeros(3)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            state[2] = now()
            return
        i = state[1]
        if i < gc_cap:
            gc_period[i] = state[0]
            gc_gen[i] = info["generation"]
            gc_ns[i] = now() - state[2]
        state[1] = i + 1

    # Warm the calls the loop makes, so their first-use costs land before period 0.
    getrusage(who)
    sleep_until(now())
    gc.callbacks.append(on_gc)
    try:
        start = getrusage(who)
        missed = 0
        deadline = now()
        # Two copies of the loop, so the one without a tick tests nothing per period.
        if tick is None:
            for k in range(loops):
                state[0] = k
                deadline += interval_ns
                sleep_until(deadline)
                woke = now()
                lat[k] = woke - deadline
                if woke >= deadline + interval_ns:  # skip the deadlines already past
                    behind = (woke - deadline) // interval_ns
                    deadline += behind * interval_ns
                    missed += behind
                r = getrusage(who)
                minflt[k] = r.ru_minflt
                majflt[k] = r.ru_majflt
                nivcsw[k] = r.ru_nivcsw
        else:
            for k in range(loops):
                state[0] = k
                deadline += interval_ns
                sleep_until(deadline)
                woke = now()
                lat[k] = woke - deadline
                tick()
                done = now()
                tick_ns[k] = done - woke
                if done >= deadline + interval_ns:
                    behind = (done - deadline) // interval_ns
                    deadline += behind * interval_ns
                    missed += behind
                r = getrusage(who)
                minflt[k] = r.ru_minflt
                majflt[k] = r.ru_majflt
                nivcsw[k] = r.ru_nivcsw
    finally:
        gc.callbacks.remove(on_gc)
    passes = min(state[1], gc_cap)
    return {"lat": lat, "tick": tick_ns if tick is not None else None,
            "faults": _per_period(start.ru_minflt, minflt),
            "major": _per_period(start.ru_majflt, majflt),
            "switches": _per_period(start.ru_nivcsw, nivcsw),
            "gc": list(zip(gc_period[:passes], gc_gen[:passes], gc_ns[:passes], strict=True)),
            "gc_total": state[1], "missed": missed}


def _per_period(base: int, cumulative: array[int]) -> list[int]:
    """Per-period counts from cumulative counters read at the end of each period."""
    out, prev = [], base
    for v in cumulative:
        out.append(v - prev)
        prev = v
    return out


def measure_latency(
    interval: float = 0.001,
    *,
    duration: float | None = None,
    loops: int | None = None,
    tick: Callable[[], object] | None = None,
    lock: bool = False,
    prefault_heap: int | None = None,
    priority: int | None = None,
    policy: str | None = None,
    cpu: int | None = None,
    outliers: int = 10,
    threshold_us: float | None = None,
) -> LatencyReport:
    """Run a periodic loop and measure how late each period wakes (a Python cyclictest).

    Each period sleeps until an absolute deadline on CLOCK_MONOTONIC (clock_nanosleep
    with TIMER_ABSTIME, as cyclictest does), so a late wake-up does not shift later
    deadlines; the wake-up latency is the clock on waking minus the deadline. ``tick``
    runs inside each period (after the wake-up) and its duration is recorded. A period
    that ends after the next deadline (an overrun) skips the deadlines already past, as
    cyclictest does: the next period waits for the first one ahead. Page faults and
    involuntary context switches (getrusage: of this thread on Linux) and garbage-collector
    passes (``gc.callbacks``) are counted per period, and reported for the late ones.

    Scheduling and pinning apply to the calling thread for the run and are restored
    after it. ``lock=True`` calls :func:`memlock.lock_process` first, which stays in
    effect (as that call leaves it). Memory: 32 bytes per period (40 with a tick),
    allocated before the loop, and about 128 (176) at the peak while the report is
    computed; a run that cannot have that much is refused first (MemoryError).

    Args:
        interval: The period in seconds (1 µs to 1 s).
        duration: Seconds to run; ``loops = round(duration / interval)``. Default 10 s.
        loops: Periods to run instead of ``duration``.
        tick: Called with no arguments inside each period.
        lock: Lock the process first (:func:`memlock.lock_process`).
        prefault_heap: Bytes of heap :func:`memlock.lock_process` prefaults (needs lock).
        priority: Real-time priority of the loop (1-99 on Linux).
        policy: ``"fifo"`` (SCHED_FIFO, the default with a priority) or ``"rr"``.
        cpu: Pin the loop to this CPU for the run.
        outliers: How many late periods to explain, worst first (ranked by latency plus
            tick: :attr:`Outlier.late_us`).
        threshold_us: Explain periods whose work was done more than this many
            microseconds after their deadline (latency plus tick; at most ``outliers``
            of them, worst first) instead of the worst ``outliers``.

    Returns:
        A :class:`LatencyReport` (``to_dict()``, ``to_json()``, ``cyclictest_histogram()``).

    Raises:
        TypeError, ValueError: Bad arguments; nothing changed.
        MemoryError: The run's figures cannot fit in memory; nothing changed.
        PermissionError: The process may not use real-time scheduling (CAP_SYS_NICE,
            RLIMIT_RTPRIO); nothing changed. Errors of :func:`memlock.lock_process`.
        UnsupportedOperation: Real-time scheduling or pinning that the OS lacks.

    Availability: Linux (verified); FreeBSD and illumos through clock_nanosleep
    (simulated only); macOS sleeps with a relative ``time.sleep`` (the report's ``sleep``
    says so) and has no ``priority``/``cpu``. Per-thread counts: Linux only.
    """
    interval = _number("interval", interval)
    if not INTERVAL_MIN <= interval <= INTERVAL_MAX:
        raise ValueError(f"interval must be from {INTERVAL_MIN:g} to {INTERVAL_MAX:g} seconds, "
                         f"not {interval}")
    n = _loop_count(interval, duration, loops)
    if tick is not None and not callable(tick):
        raise TypeError(f"tick must be callable, not {type(tick).__name__}")
    if not isinstance(lock, bool):
        raise TypeError(f"lock must be a bool, not {type(lock).__name__}")
    if prefault_heap is not None and not lock:
        raise ValueError("prefault_heap needs lock=True (lock_process prefaults the heap)")
    if isinstance(outliers, bool) or not isinstance(outliers, int) or outliers < 0:
        raise ValueError(f"outliers must be a whole number >= 0, not {outliers!r}")
    if threshold_us is not None:
        threshold_us = _number("threshold_us", threshold_us)
        if not threshold_us >= 0:
            raise ValueError(f"threshold_us must be >= 0, not {threshold_us}")
    sched = _scheduling(policy, priority)
    cpu = _check_cpu(cpu)
    _check_memory(n, tick)  # after the usage errors, before anything changes
    sleep_until, how = BACKEND.deadline_sleeper()

    restore_sched = restore_cpus = None
    try:
        if sched is not None and sys.platform != "darwin":
            restore_sched = (os.sched_getscheduler(0), os.sched_getparam(0))
            try:
                os.sched_setscheduler(0, sched[0], os.sched_param(sched[1]))
            except PermissionError:
                restore_sched = None
                raise _rt_permission_error(*sched) from None
        if cpu is not None and sys.platform != "darwin":
            restore_cpus = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cpu})
        if lock:
            from ._realtime import lock_process

            lock_process(prefault_heap=prefault_heap or 0)
        got = _run(n, round(interval * 1e9), tick, sleep_until)
        if sys.platform != "darwin":
            policy_now = os.sched_getscheduler(0)
            priority_now = os.sched_getparam(0).sched_priority
        else:
            policy_now, priority_now = 0, 0
    finally:
        if sys.platform != "darwin":
            _restore_scheduling(restore_cpus, restore_sched)
    return _report(got, interval, n, outliers, threshold_us,
                   per_thread=_PER_THREAD, sleep=how, locked=lock,
                   policy=_policy_name(policy_now), priority=priority_now, cpu=cpu)


def _restore_scheduling(cpus: set[int] | None,
                        sched: tuple[int, os.sched_param] | None) -> None:
    """Put back the CPUs and the scheduling a run changed, each on its own.

    A process may have been given a real-time priority it may not set itself (by a
    privileged parent, above its RLIMIT_RTPRIO): lowering it was allowed, raising it back
    is not. That is a RuntimeWarning naming what stays changed, not an error that would
    replace the run's report.
    """
    if sys.platform == "darwin":  # (mypy checks every OS; the caller never calls it there)
        return
    if cpus is not None:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            _warn_not_restored(f"the CPUs {sorted(cpus)}", exc)
    if sched is not None:
        try:
            os.sched_setscheduler(0, sched[0], sched[1])
        except OSError as exc:
            _warn_not_restored(f"the scheduling policy {_policy_name(sched[0])} priority "
                               f"{sched[1].sched_priority}", exc)


def _warn_not_restored(what: str, exc: OSError) -> None:
    import warnings

    warnings.warn(f"memlock.measure_latency: could not put back {what} after the run "
                  f"({exc.strerror or exc}): the process keeps the run's setting",
                  RuntimeWarning, stacklevel=4)


class _Periods:
    """The per-period figures of a run, kept by its report."""

    __slots__ = ("by_period", "done", "faults", "interval_ns", "lat", "major", "switches",
                 "tick")

    def __init__(self, got: dict[str, Any], interval_ns: int) -> None:
        self.interval_ns = interval_ns
        self.lat: array[int] = got["lat"]
        self.tick: array[int] | None = got["tick"]
        self.faults: list[int] = got["faults"]
        self.major: list[int] = got["major"]
        self.switches: list[int] = got["switches"]
        self.done: Sequence[int] = self.lat if self.tick is None else [
            a + b for a, b in zip(self.lat, self.tick, strict=True)]
        self.by_period: dict[int, list[GarbageCollection]] = {}
        for period, gen, ns in got["gc"]:
            self.by_period.setdefault(period, []).append(GarbageCollection(gen, _us(ns)))

    def record(self, k: int) -> Outlier:
        return Outlier(k, _us(self.lat[k]), None if self.tick is None else _us(self.tick[k]),
                       _us(self.done[k]), self.faults[k], self.major[k], self.switches[k],
                       tuple(self.by_period.get(k, ())))


def _report(got: dict[str, Any], interval: float, n: int, outliers: int,
            threshold_us: float | None, **settings: Any) -> LatencyReport:
    per = _Periods(got, round(interval * 1e9))
    done = per.done
    late = None
    candidates = list(range(n))
    if threshold_us is not None:
        limit = threshold_us * 1000
        candidates = [k for k in candidates if done[k] > limit]
        late = len(candidates)
    candidates.sort(key=done.__getitem__, reverse=True)
    explained = tuple(per.record(k) for k in candidates[:outliers])
    overruns = sum(1 for v in done if v > per.interval_ns)
    return LatencyReport(
        _us(per.interval_ns), n, LatencySummary.of(per.lat),
        None if per.tick is None else LatencySummary.of(per.tick), overruns, got["missed"],
        sum(per.faults), sum(per.major), sum(per.switches), got["gc_total"], explained,
        threshold_us, late, settings["per_thread"], settings["sleep"], settings["locked"],
        settings["policy"], settings["priority"], settings["cpu"], periods=per)
