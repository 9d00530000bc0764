"""The C loop of the host scan (``proc_status_scan`` in _speedups.c) against the Python one.

Judged by the kernel: children that locked a known amount and idle ``sleep`` children,
read back through both loops and through ``host_processes`` on each path; a status text
over 16 KiB (thousands of supplementary groups) read whole; short-lived processes and a
SIGALRM storm during repeated scans; /proc/self/fd and /proc/self/task after them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from memlock._cli_api import host_processes
from memlock._platform import _hostscan

from .conftest import c_path_built
from .kernel import PAGE, python_cmd, run_child, vmlck
from .test_hostscan import LOCKER, holding

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="reads Linux /proc"),
    pytest.mark.skipif(not c_path_built(), reason="the C module is not built here"),
]

Scan = Callable[[bool, int], list[tuple[int, bytes]]]


def c_scan() -> Scan:
    """The C module's loop (an AttributeError, so a failure, where it lacks one)."""
    from memlock import _speedups

    scan: Scan = _speedups.proc_status_scan
    return scan


def python_scan(include_unlocked: bool, threads: int = 1) -> list[tuple[int, bytes]]:
    """The Python loop over the whole of /proc (one thread)."""
    names = [name for name in os.listdir("/proc") if name.isdigit()]
    return _hostscan._kept_statuses(names, include_unlocked)


def vmlck_of(status: bytes) -> int:
    """VmLck in bytes, from a status text (independent of memlock's parser)."""
    found = re.search(rb"\nVmLck:\s+(\d+) kB\n", status)
    assert found, status[-300:]
    return int(found.group(1)) * 1024


def test_the_c_and_python_loops_keep_the_same_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [8 * PAGE, 24 * PAGE, 40 * PAGE]
    with contextlib.ExitStack() as stack:
        lockers = {stack.enter_context(holding(python_cmd(LOCKER, str(n)))): n for n in sizes}
        idle = [stack.enter_context(holding(["sleep", "3600"], ready="started"))
                for _ in range(3)]
        assert [vmlck(pid) for pid in lockers] == sizes and [vmlck(p) for p in idle] == [0] * 3
        mine = {*lockers, *idle}
        every = {**lockers, **dict.fromkeys(idle, 0)}
        for include_unlocked in (False, True):
            expected = every if include_unlocked else lockers
            for scan in (c_scan(), python_scan):
                for threads in (1, 2):
                    kept = scan(include_unlocked, threads)
                    assert all(include_unlocked or vmlck_of(s) > 0 for _, s in kept)
                    assert len({pid for pid, _ in kept}) == len(kept)
                    assert {p: vmlck_of(s) for p, s in kept if p in mine} == expected
        # host_processes on each path: the same records (regions, limits, cgroup...).
        records = {}
        for pure in ("0", "1"):
            monkeypatch.setenv("MEMLOCK_PURE_PYTHON", pure)
            assert (_hostscan._c_scan() is None) is (pure == "1")
            records[pure] = sorted((p for p in host_processes(include_unlocked=True)
                                    if p.pid in mine), key=lambda p: p.pid)
            assert {p.pid: p.locked_bytes for p in records[pure]} == every
        assert records["0"] == records["1"]


def test_the_status_scan_loads_neither_threading_nor_the_mutexes() -> None:
    """``memlock status`` pays for every import: the C loop needs no Python thread."""
    proc = run_child("""
        import json, sys
        import memlock
        from memlock._cli_api import host_processes
        host_processes()
        print(json.dumps({m: m in sys.modules for m in (
            "threading", "memlock._critical", "memlock._threads", "memlock._speedups")}))
    """, env={"MEMLOCK_PURE_PYTHON": "0"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"threading": False, "memlock._critical": False,
                                       "memlock._threads": False, "memlock._speedups": True}


#: A LOCKER in 6,000 supplementary groups: its status text is over 32 KiB.
GROUPED_LOCKER = "import os\nos.setgroups(range(100000, 106000))\n" + LOCKER


def test_a_status_over_16_kib_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    nbytes = 12 * PAGE
    with holding(python_cmd(GROUPED_LOCKER, str(nbytes))) as pid:
        kernel = Path(f"/proc/{pid}/status").read_bytes()
        assert len(kernel) > 2 * 16384
        groups = re.search(rb"\nGroups:[^\n]*\n", kernel)
        assert groups and groups.group().split()[-1] == b"105999"
        for scan in (c_scan(), python_scan):
            for threads in (1, 2):
                status = dict(scan(False, threads))[pid]
                assert len(status) > 2 * 16384 and groups.group() in status
                last = status[status.rindex(b"\n", 0, -1):]  # the kernel's last line
                assert last.startswith(b"\nnonvoluntary_ctxt_switches:") and last[-1:] == b"\n"
                assert vmlck_of(status) == nbytes == vmlck(pid)
        for pure in ("0", "1"):
            monkeypatch.setenv("MEMLOCK_PURE_PYTHON", pure)
            listed = {p.pid: p for p in host_processes()}
            assert listed[pid].locked_bytes == nbytes


def test_short_lived_processes_during_repeated_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes that end (and zombies) between the listing and the read are skipped."""
    storms = [subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"]) for _ in range(2)]
    try:
        scan = c_scan()
        for round_ in range(40):
            include_unlocked = bool(round_ % 2)
            for kept in (scan(include_unlocked, 2), scan(include_unlocked, 1)):
                assert all(b"\nVmLck:" in status for _, status in kept)
        for pure in ("0", "1", "0"):
            monkeypatch.setenv("MEMLOCK_PURE_PYTHON", pure)
            host_processes(include_unlocked=True, regions=False)
        assert all(storm.poll() is None for storm in storms)  # they ran all along
    finally:
        for storm in storms:
            storm.kill()
            storm.wait()


SIGNAL_STORM = """
import json, os, signal
from memlock._speedups import proc_status_scan

class Tick(Exception):
    pass

armed = False

def tick(signum, frame):  # raises once per arming: never outside the try below
    global armed
    if armed:
        armed = False
        raise Tick

def state():
    return (len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task")),
            sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))

before = state()
signal.signal(signal.SIGALRM, tick)
ticks = scans = 0
signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)  # a scan: 6-12 ms
try:
    while ticks < 100 and scans + ticks < 3000:
        try:
            armed = True
            proc_status_scan(scans % 2 == 0, 2)
            armed = False
            scans += 1
        except Tick:
            ticks += 1
finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
print(json.dumps({"ticks": ticks, "scans": scans, "same": state() == before}))
"""


def test_a_signal_storm_during_c_scans_leaves_no_fd_and_no_thread() -> None:
    proc = run_child(SIGNAL_STORM, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["ticks"] >= 100 and out["same"] is True, out


def test_other_errors_raise_oserror_and_leak_nothing() -> None:
    """EMFILE (no fd left) is not "gone or hidden": OSError(errno, path), nothing open.

    No fd free: opendir("/proc") fails. One fd free: one thread reads every status
    through it (each fd closed before the next open); two threads race for it, and the
    one that loses raises, naming its status file, once both are joined.
    """
    proc = run_child("""
        import errno, json, os, re, resource
        from memlock._speedups import proc_status_scan
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        before = len(os.listdir("/proc/self/fd"))
        spare = []
        try:
            while True:
                spare.append(os.dup(0))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        def error():
            try:
                proc_status_scan(True, 2)
            except OSError as exc:
                if exc.errno == errno.EMFILE and re.fullmatch(r"/proc/[0-9]+/status",
                                                                exc.filename):
                    return "status"
                return [type(exc).__name__, exc.errno == errno.EMFILE, exc.filename]
        none_free = error()
        os.close(spare.pop())
        one_thread = len(proc_status_scan(True, 1)) > 0
        two_threads = [error() for _ in range(500)]
        for fd in spare:
            os.close(fd)
        print(json.dumps({"none_free": none_free, "one_thread": one_thread,
                          "two_threads": sorted(set(map(str, two_threads))),
                          "same": len(os.listdir("/proc/self/fd")) == before,
                          "after": len(proc_status_scan(True, 2)) > 0}))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["none_free"] == ["OSError", True, "/proc"]
    assert out["one_thread"] is out["same"] is out["after"] is True
    assert "status" in out["two_threads"] and set(out["two_threads"]) <= {"status", "None"}


@pytest.mark.parametrize(("args", "error"), [
    ((True, 0), ValueError), ((True, -1), ValueError), ((False, 65), ValueError),
    ((True, 2**40), OverflowError), ((True, "2"), TypeError), ((True, 2.0), TypeError),
    ((True,), TypeError), ((True, 2, 3), TypeError), ((), TypeError),
])
def test_bad_arguments_raise(args: tuple[object, ...], error: type[Exception]) -> None:
    scan: Callable[..., object] = c_scan()
    with pytest.raises(error):
        scan(*args)
