"""``memlock status``: the host's table, its filters and JSON, one PID in detail.

Judged by the kernel: children that locked a known amount (as root, without CAP_IPC_LOCK,
as uid 65534, in a memory cgroup), their VmLck and /proc/PID/limits read by the oracles
of tests/kernel.py; the CLI runs as root and as uid 65534.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kernel import (
    output,
    python_cmd,
    run_as_nobody,
    run_cli,
    unprivileged_cmd,
    vmlck,
)
from .test_hostscan import KEYS, LOCKER, holding, kernel_limits

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux /proc")

MiB = 1 << 20

#: A child of uid 65534 (Debian's Python, no memlock) that locks N bytes and waits.
NOBODY_LOCKER = """
import ctypes, mmap, sys
m = mmap.mmap(-1, int(sys.argv[1]), flags=mmap.MAP_PRIVATE)
buf = (ctypes.c_char * len(m)).from_buffer(m)
libc = ctypes.CDLL(None, use_errno=True)
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
assert libc.mlock(ctypes.addressof(buf), len(m)) == 0, ctypes.get_errno()
print("ready", flush=True)
sys.stdin.read()
"""


def pids_in(text: str) -> set[int]:
    return {int(line.split()[0]) for line in text.splitlines()
            if line.split() and line.split()[0].isdigit()}


def test_the_table_lists_a_locking_child_as_the_kernel_counts_it() -> None:
    soft, hard = 4 * MiB, 6 * MiB
    cmd = unprivileged_cmd(*python_cmd(LOCKER, str(MiB)), limit=(soft, hard))
    with holding(python_cmd(LOCKER, str(3 * MiB))) as root_pid, holding(cmd) as limited_pid:
        assert (vmlck(root_pid), vmlck(limited_pid)) == (3 * MiB, MiB)
        text = output(run_cli("status"))
        heading, *lines = text.splitlines()
        assert heading.split() == ["PID", "USER", "LOCKED", "SOFT", "HARD", "IPC_LOCK",
                                   "CGROUP", "COMMAND"]
        _, user, locked, soft_cell, hard_cell, cap, _cgroup, command = _cells(text, root_pid)
        assert (user, locked, cap) == ("root", "3.0 MiB", "yes")
        assert (soft_cell, hard_cell) == tuple(_size(v) for v in kernel_limits(root_pid))
        assert "-c" in command
        _, user, locked, soft_cell, hard_cell, cap, _cgroup, command = _cells(
            text, limited_pid)
        assert (locked, soft_cell, hard_cell, cap) == ("1.0 MiB", "4.0 MiB", "6.0 MiB", "no")
        # The most locked first; the host's totals last.
        order = [int(line.split()[0]) for line in lines[:-1]]
        assert order.index(root_pid) < order.index(limited_pid)
        assert lines[-1].startswith("host: Mlocked ") and "Unevictable" in lines[-1] \
            and "unaccounted by any process" in lines[-1]
        # Nothing locked: not listed, unless --all.
        me = os.getpid()
        if vmlck(me) == 0:
            assert me not in pids_in(text)
            assert me in pids_in(output(run_cli("status", "--all")))


def _cells(text: str, pid: int) -> tuple[str, ...]:
    """A row's cells, sizes whole (``3.0 MiB``), from the columns of the heading."""
    lines = text.splitlines()
    heading = lines[0]
    starts = [heading.index(h) for h in ("USER", "SOFT", "HARD", "IPC_LOCK", "CGROUP",
                                         "COMMAND")]
    line = next(x for x in lines if x.split() and x.split()[0] == str(pid))
    # PID and LOCKED, SOFT, HARD are right-aligned: cut at the ends of their headings.
    user_at, soft_at, hard_at, cap_at, cgroup_at, command_at = starts
    locked_end = heading.index("LOCKED") + len("LOCKED")
    soft_end = soft_at + len("SOFT")
    hard_end = hard_at + len("HARD")
    return (line[:user_at].strip(), line[user_at:line.index(" ", user_at)].strip(),
            line[line.index(" ", user_at):locked_end].strip(),
            line[locked_end:soft_end].strip(), line[soft_end:hard_end].strip(),
            line[cap_at:cgroup_at].strip(), line[cgroup_at:command_at].strip(),
            line[command_at:])


def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.1f} KiB"


def test_json_has_exactly_the_issues_keys_and_the_kernels_numbers() -> None:
    with holding(python_cmd(LOCKER, str(2 * MiB))) as pid, \
            holding(["sleep", "60"], ready="started") as sleeper:
        data = json.loads(output(run_cli("status", "--json")))
        assert set(data) == {"processes", "system"}
        mine = {p["pid"]: p for p in data["processes"]}
        p = mine[pid]
        assert list(p) == KEYS
        assert p["locked_bytes"] == vmlck(pid) == 2 * MiB
        assert (p["limit_soft"], p["limit_hard"]) == kernel_limits(pid)
        assert p["privileged"] is True and p["user"] == "root"
        assert sum(r["size"] for r in p["regions"]) == 2 * MiB
        assert sleeper not in mine
        for key in ("mlocked_bytes", "unevictable_bytes", "unaccounted_bytes"):
            assert isinstance(data["system"][key], int)
        every = {q["pid"]: q for q in json.loads(output(run_cli("status", "--all",
                                                                "--json")))["processes"]}
        assert (every[sleeper]["locked_bytes"], every[sleeper]["regions"]) == (0, [])
        assert every[pid]["locked_bytes"] == 2 * MiB


@pytest.fixture
def nobody_locker() -> Iterator[int]:
    """A uid-65534 process that holds 1 MiB locked (Debian's Python: any uid may run it)."""
    py = "/usr/bin/python3"
    if not os.access(py, os.X_OK):
        pytest.skip(f"needs {py}")
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py, "-c",
           NOBODY_LOCKER, str(MiB)]
    with holding(cmd) as pid:
        yield pid


def test_user_filter_by_name_and_by_uid(nobody_locker: int) -> None:
    with holding(python_cmd(LOCKER, str(MiB))) as root_pid:
        for user in ("nobody", "65534"):
            listed = pids_in(output(run_cli("status", "--user", user)))
            assert nobody_locker in listed and root_pid not in listed, user
        listed = pids_in(output(run_cli("status", "--user", "root")))
        assert root_pid in listed and nobody_locker not in listed
        both = pids_in(output(run_cli("status", "--user", "root", "--user", "nobody")))
        assert {root_pid, nobody_locker} <= both
        data = json.loads(output(run_cli("status", "--json", "--user", "nobody")))
        assert [p["user"] for p in data["processes"]] == ["nobody"] * len(data["processes"])
        assert "no process matches" in output(run_cli("status", "--user", "4243"))


CGROUP_V1 = Path("/sys/fs/cgroup/memory")


@contextlib.contextmanager
def memory_cgroup(name: str) -> Iterator[Path]:
    """A v1 memory cgroup, removed afterwards (once its processes are gone)."""
    group = CGROUP_V1 / name
    group.mkdir()
    try:
        yield group
    finally:
        for _ in range(200):
            with contextlib.suppress(OSError):
                group.rmdir()
                break
            time.sleep(0.05)


@pytest.mark.skipif(not (CGROUP_V1 / "cgroup.procs").exists(), reason="needs cgroup v1 memory")
def test_cgroup_filter_and_column() -> None:
    name = f"memlock-test-status-{os.getpid()}"
    with memory_cgroup(name) as group, holding(python_cmd(LOCKER, str(MiB))) as inside, \
            holding(python_cmd(LOCKER, str(MiB))) as outside:
        (group / "cgroup.procs").write_text(str(inside))
        text = output(run_cli("status", "--cgroup", name))
        assert pids_in(text) == {inside}
        assert _cells(text, inside)[6] == f"/{name}"
        assert outside in pids_in(output(run_cli("status")))


def test_one_pid_prints_its_regions_and_the_host_totals() -> None:
    with holding(python_cmd(LOCKER, str(MiB))) as pid:
        text = output(run_cli("status", str(pid)))
        assert f"pid {pid}: 1.0 MiB locked in 1 region\n" in text
        assert "RLIMIT_MEMLOCK soft 8.0 MiB hard 8.0 MiB, CAP_IPC_LOCK yes" in text
        assert text.splitlines()[-1].startswith("host: Mlocked ")
    gone = run_cli("status", str(pid))
    assert gone.returncode == 1 and gone.stderr == f"memlock status: no process {pid}\n"


NOBODY_CLI = """
import sys
from memlock.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_as_nobody_a_root_process_shows_vmlck_and_regions_unavailable() -> None:
    """Today's ``memlock status 1`` as a user: "Permission denied". smaps is the caller's
    to read only for its own processes; VmLck in status is world-readable."""
    with holding(python_cmd(LOCKER, str(2 * MiB))) as pid:
        text = run_as_nobody(NOBODY_CLI, args=["status", str(pid)])
        assert text.returncode == 0, text.stderr
        assert f"pid {pid}: 2.0 MiB locked; regions unavailable" in text.stdout
        assert text.stdout.splitlines()[-1].startswith("host: Mlocked ")
        data = json.loads(output(run_as_nobody(NOBODY_CLI, args=["status", str(pid),
                                                                  "--json"])))
        assert (data["pid"], data["locked_bytes"], data["regions"]) == (pid, 2 * MiB, None)
        table = output(run_as_nobody(NOBODY_CLI, args=["status"]))
        assert _cells(table, pid)[2] == "2.0 MiB"


def test_a_named_kernel_thread_is_reported_as_one() -> None:
    kthreadd = next((int(d) for d in os.listdir("/proc") if d.isdigit()
                     and "\nKthread:\t1" in _read(f"/proc/{d}/status")), None)
    if kthreadd is None:
        pytest.skip("this kernel marks no kernel thread (Kthread:)")
    text = output(run_cli("status", str(kthreadd)))
    assert f"pid {kthreadd}: 0 B locked in 0 regions" in text
    assert "command [" in text


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def test_help_promises_what_it_prints() -> None:
    text = output(run_cli("status", "--help"))
    for word in ("--all", "--user", "--cgroup", "--json", "Mlocked", "Unevictable",
                 "limit_soft"):
        assert word in text, word



# -- found by the red-team review of this stop -------------------------------------------


def test_a_thread_id_is_not_taken_for_a_process() -> None:
    """/proc/TID resolves to a thread: status and verify name its process instead."""
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", (
        "import threading, time, os\n"
        "t = threading.Thread(target=time.sleep, args=(60,), daemon=True); t.start()\n"
        "print(t.native_id, flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        tid = int(child.stdout.readline())
        assert tid != child.pid and os.path.exists(f"/proc/{tid}/status")
        for args in (("status", str(tid)), ("verify", str(tid), "--min-locked", "0")):
            proc = run_cli(*args)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            assert f"{tid} is a thread of process {child.pid}" in proc.stderr
            assert "Traceback" not in proc.stderr
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_control_characters_of_a_command_line_never_reach_the_terminal() -> None:
    """A process chooses its own argv: the per-PID views show its control bytes as ?."""
    import subprocess

    hostile = "esc\x1b[31mRED\x1b[0m\rXX\nnext"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", hostile])
    try:
        for args in (("status", str(child.pid)), ("doctor", "--pid", str(child.pid))):
            deadline = time.monotonic() + 10
            while True:
                proc = run_cli(*args)
                if "esc" in proc.stdout or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # the child's argv is set once it has exec'd
            assert proc.returncode in (0, 1), (args, proc.stderr)
            assert "esc?[31mRED?[0m?XX?next" in proc.stdout, proc.stdout
            assert "\x1b" not in proc.stdout and "\r" not in proc.stdout
    finally:
        child.kill()
        child.wait()


def test_doctor_pid_of_a_kernel_thread_and_of_a_zombie() -> None:
    """Both exist (their environ answers ESRCH): doctor diagnoses them, never 'No such
    process'."""
    import subprocess

    zombie_parent = subprocess.Popen([sys.executable, "-c", (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0: os._exit(0)\n"
        "print(pid, flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert zombie_parent.stdout is not None
        zombie = int(zombie_parent.stdout.readline())
        deadline = time.monotonic() + 10
        while "State:\tZ" not in Path(f"/proc/{zombie}/status").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for pid in (2, zombie):  # kthreadd, and the zombie
            proc = run_cli("doctor", "--pid", str(pid))
            assert "No such process" not in proc.stderr, (pid, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert proc.returncode in (0, 1) and proc.stdout, (pid, proc.stderr)
    finally:
        zombie_parent.kill()
        zombie_parent.wait()
        if zombie_parent.stdout is not None:
            zombie_parent.stdout.close()


def test_a_pid_named_twice_is_reported_once() -> None:
    with holding(python_cmd(LOCKER, str(MiB))) as pid:
        text = output(run_cli("status", str(pid), str(pid)))
        assert text.count(f"pid {pid}: ") == 1, text
        data = json.loads(output(run_cli("status", str(pid), str(pid), "--json")))
        assert data["pid"] == pid  # one process: its keys, as for a single PID


def test_an_unknown_user_is_a_usage_error() -> None:
    proc = run_cli("status", "--user", "no-such-user-here")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such user: 'no-such-user-here'" in proc.stderr and "Traceback" not in proc.stderr
    # A uid without a name is a user all the same (as ps shows one): not an error.
    assert run_cli("status", "--user", "4242").returncode == 0
