"""The host scan (``host_processes``, ``host_unaccounted_bytes``): every process's locks.

Judged by the kernel: real children that locked a known amount (with memlock, with
``vmtouch -l``, without CAP_IPC_LOCK under limits set by prlimit), read back from
/proc/PID/status, /proc/PID/limits and smaps by the independent oracles of tests/kernel.py;
as root and as uid 65534, who may not read root's smaps but sees VmLck.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import memlock
from memlock._cli_api import HostProcess, host_processes, host_unaccounted_bytes
from memlock._platform._hostscan import cgroup_name, limits_from_text

from .kernel import (
    PAGE,
    Arg,
    child_env,
    have,
    mappings,
    python_cmd,
    run_as_nobody,
    status_bytes,
    unprivileged_cmd,
    vmlck,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux /proc")

KEYS = ["pid", "user", "command", "locked_bytes", "limit_soft", "limit_hard", "privileged",
        "cgroup", "regions"]

#: A child that locks N bytes of fresh anonymous memory, says "ready" and waits for stdin.
LOCKER = """
import mmap, sys
import memlock
m = mmap.mmap(-1, int(sys.argv[1]), flags=mmap.MAP_PRIVATE)
lk = memlock.lock(m)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def holding(cmd: Sequence[Arg], ready: str = "ready") -> Iterator[int]:
    """Run ``cmd`` until the block ends; yields its pid once it printed "ready" (``ready``
    "locked": once its VmLck is above 0; "started": at once). Killed and reaped
    afterwards, also on failure."""
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=child_env()) as child:
        try:
            if ready == "ready":
                assert child.stdout is not None and child.stdout.readline().strip() == ready
            elif ready == "locked":
                deadline = time.monotonic() + 30
                while vmlck(child.pid) == 0:
                    assert child.poll() is None and time.monotonic() < deadline, "never locked"
                    time.sleep(0.02)
            yield child.pid
        finally:
            child.kill()
            child.wait()


def kernel_limits(pid: int) -> tuple[int | None, int | None]:
    """Soft and hard RLIMIT_MEMLOCK from /proc/PID/limits (independent of memlock)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max locked memory"):
            soft, hard = line.split()[3:5]
            return (None if soft == "unlimited" else int(soft),
                    None if hard == "unlimited" else int(hard))
    raise AssertionError("no Max locked memory line")


def kernel_cap_ipc_lock(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & 1 << 14)
    raise AssertionError("no CapEff line")


def by_pid(processes: Sequence[HostProcess]) -> dict[int, HostProcess]:
    return {p.pid: p for p in processes}


def test_a_child_that_locked_a_known_amount_is_listed_as_the_kernel_counts_it() -> None:
    nbytes = 48 * PAGE
    with holding(python_cmd(LOCKER, str(nbytes))) as pid:
        listed = by_pid(host_processes())
        assert vmlck(pid) == nbytes
        p = listed[pid]
        assert p.locked_bytes == nbytes
        assert (p.limit_soft, p.limit_hard) == kernel_limits(pid)
        assert p.privileged is kernel_cap_ipc_lock(pid) is True
        assert p.user == pwd.getpwuid(os.geteuid()).pw_name
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        assert p.command == " ".join(a.decode() for a in argv)
        assert p.regions is not None
        kernel_locked = [v for v in mappings(pid) if "lo" in v["flags"]]
        assert [(r.start, r.end) for r in p.regions] == [(v["start"], v["end"])
                                                         for v in kernel_locked]
        assert sum(r.size for r in p.regions) == nbytes
        assert list(p.to_dict()) == KEYS
        json.dumps(p.to_dict())
        # Named, it is the same record; the scan is sorted, the most locked first.
        assert host_processes(pids=[pid]) == [p]
        sizes = [q.locked_bytes for q in listed.values()]
        assert sizes == sorted(sizes, reverse=True) and min(sizes) > 0
    assert pid not in by_pid(host_processes())
    with pytest.raises(ProcessLookupError, match=f"no process {pid}"):
        host_processes(pids=[pid])


def test_processes_with_nothing_locked_only_on_request_and_never_kernel_threads() -> None:
    me = os.getpid()
    assert vmlck(me) == 0
    assert me not in by_pid(host_processes())
    everyone = by_pid(host_processes(include_unlocked=True, regions=False))
    assert everyone[me].locked_bytes == 0 and everyone[me].regions is None
    # kthreadd (pid 2 outside a pid namespace) and its children have no memory of their own.
    kernel_threads = [int(d) for d in os.listdir("/proc") if d.isdigit()
                      and "\nKthread:\t1" in _status_text(int(d))]
    assert kernel_threads, "this kernel marks no kernel thread (Kthread:, 6.x)"
    assert not set(kernel_threads) & set(everyone)
    # Named, a kernel thread is reported as one: [its name], nothing locked.
    named = host_processes(pids=[kernel_threads[0]])[0]
    assert named.command.startswith("[") and named.locked_bytes == 0 and named.regions == ()


def _status_text(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(not have("vmtouch"), reason="needs vmtouch")
def test_a_vmtouch_holder_and_its_file(tmp_path: Path) -> None:
    path = tmp_path / "weights"
    path.write_bytes(os.urandom(64 * PAGE))
    with holding(["vmtouch", "-l", str(path)], ready="locked") as pid:
        p = by_pid(host_processes())[pid]
        assert p.locked_bytes == vmlck(pid) >= 64 * PAGE
        assert p.command == f"vmtouch -l {path}"
        assert p.regions is not None
        mine = [r for r in p.regions if r.path == str(path)]
        assert [(r.size, r.locked_bytes) for r in mine] == [(64 * PAGE, 64 * PAGE)]


def test_a_process_without_cap_ipc_lock_and_its_limits() -> None:
    soft, hard = 64 * PAGE, 128 * PAGE
    cmd = unprivileged_cmd(*python_cmd(LOCKER, str(8 * PAGE)), limit=(soft, hard))
    with holding(cmd) as pid:
        assert kernel_limits(pid) == (soft, hard) and not kernel_cap_ipc_lock(pid)
        p = by_pid(host_processes())[pid]
        assert (p.locked_bytes, p.limit_soft, p.limit_hard) == (8 * PAGE, soft, hard)
        assert p.privileged is False


NOBODY_SCAN = """
import json, sys
from memlock._cli_api import host_processes
pid = int(sys.argv[1])
mine = [p.to_dict() for p in host_processes() if p.pid == pid]
named = host_processes(pids=[pid])[0].to_dict()
try:
    host_processes(pids=[2**31 - 1])
except ProcessLookupError as exc:
    missing = str(exc)
print(json.dumps({"scan": mine, "named": named, "missing": missing}))
"""


def test_as_nobody_regions_are_unknown_but_vmlck_is_shown() -> None:
    """uid 65534 may not read root's smaps, nor prlimit it: /proc/PID/limits answers."""
    nbytes = 16 * PAGE
    with holding(unprivileged_cmd(*python_cmd(LOCKER, str(nbytes)), drop=(),
                                  limit=(32 * PAGE, 64 * PAGE))) as pid:
        proc = run_as_nobody(NOBODY_SCAN, args=[str(pid)])
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout)
        assert seen["scan"] == [seen["named"]]
        p = seen["named"]
        assert (p["locked_bytes"], p["regions"]) == (vmlck(pid), None) == (nbytes, None)
        assert (p["limit_soft"], p["limit_hard"]) == (32 * PAGE, 64 * PAGE)
        assert p["privileged"] is True and p["user"] == "root"
        assert seen["missing"] == f"[Errno 3] no process {2**31 - 1}"


SHM_LOCKER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
size = int(sys.argv[1])
shmid = libc.shmget(0, size, 0o600)  # IPC_PRIVATE
assert shmid >= 0, ctypes.get_errno()
addr = libc.shmat(shmid, None, 0)
assert libc.shmctl(shmid, 0, None) == 0  # IPC_RMID now: gone when this process ends
assert libc.shmctl(shmid, 11, None) == 0, ctypes.get_errno()  # SHM_LOCK
ctypes.memset(addr, 1, size)
print("ready", flush=True)
sys.stdin.read()
"""


def test_shm_locked_memory_is_counted_as_unaccounted() -> None:
    """SHM_LOCK'd shared memory is unevictable, in no VmLck and not Mlocked."""
    size = 64 << 20

    def unaccounted() -> int:
        value = host_unaccounted_bytes(host_processes(), memlock.system_status())
        assert value is not None
        return value

    for _ in range(10):  # other processes may lock or unlock memory meanwhile: retry
        before = unaccounted()
        with holding(python_cmd(SHM_LOCKER, str(size))) as pid:
            assert vmlck(pid) == 0 and status_bytes("RssShmem", pid) >= size
            during = unaccounted()
        if abs(during - before - size) <= size // 8:
            break
    else:
        pytest.fail(f"unaccounted went from {before} to {during}, not up by {size}")


def test_unaccounted_is_not_raised_by_processes_that_lock() -> None:
    nbytes = 32 << 20
    for _ in range(10):
        before = host_unaccounted_bytes(host_processes(), memlock.system_status())
        with holding(python_cmd(LOCKER, str(nbytes))):
            during = host_unaccounted_bytes(host_processes(), memlock.system_status())
        assert before is not None and during is not None
        if abs(during - before) <= nbytes // 8:
            break
    else:
        pytest.fail(f"unaccounted went from {before} to {during} with {nbytes} locked")


def test_bad_pids_are_refused() -> None:
    for bad in (0, -1, True, "1"):
        with pytest.raises(ValueError, match="not a process id"):
            host_processes(pids=[bad])  # type: ignore[list-item]


@pytest.mark.parametrize(("text", "name"), [
    ("0::/system.slice/docker-" + "a" * 64 + ".scope\n", "docker:" + "a" * 12),
    ("4:memory:/docker/" + "b1" * 32 + "\n1:name=systemd:/docker/" + "b1" * 32 + "\n",
     "docker:" + "b1" * 6),
    ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
     "0c1d2e3f_4a5b_6c7d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-" + "c" * 64 + ".scope\n",
     "k8s:pod0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"),
    ("11:memory:/kubepods/besteffort/pod0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f/" + "d" * 64,
     "k8s:pod0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"),
    ("0::/machine.slice/libpod-" + "e" * 64 + ".scope/container\n", "podman:" + "e" * 12),
    ("0::/system.slice/elasticsearch.service\n", "elasticsearch.service"),
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/llama.service\n",
     "llama.service"),
    ("9:name=systemd:/user.slice/user-0.slice/session-3.scope\n4:memory:/\n0::/\n",
     "session-3.scope"),
    ("4:memory:/process_api/b612\n9:name=systemd:/\n0::/\n", "/process_api/b612"),
    ("0::/\n", "/"),
    ("", ""),
])
def test_cgroup_names(text: str, name: str) -> None:
    assert cgroup_name(text) == name


def test_limits_text() -> None:
    head = "Limit                     Soft Limit           Hard Limit           Units     \n"
    assert limits_from_text(head + "Max locked memory         8388608              unlimited"
                            "            bytes     \n") == (8388608, None)
    assert limits_from_text(head + "Max locked memory         unlimited            unlimited"
                            "            bytes     \n") == (None, None)


CGROUP_V1 = Path("/sys/fs/cgroup/memory")


@pytest.mark.skipif(not (CGROUP_V1 / "cgroup.procs").exists(), reason="needs cgroup v1 memory")
def test_a_process_in_a_memory_cgroup_shows_its_path() -> None:
    group = CGROUP_V1 / f"memlock-test-hostscan-{os.getpid()}"
    group.mkdir()
    try:
        with holding(python_cmd(LOCKER, str(4 * PAGE))) as pid:
            (group / "cgroup.procs").write_text(str(pid))
            assert f"memory:/{group.name}" in Path(f"/proc/{pid}/cgroup").read_text()
            assert by_pid(host_processes())[pid].cgroup == f"/{group.name}"
    finally:
        for _ in range(100):  # the killed child leaves the group once it is reaped
            with contextlib.suppress(OSError):
                group.rmdir()
                break
            time.sleep(0.05)


def test_other_oses_say_unsupported() -> None:
    from memlock._platform import Backend

    from .simlibc import FreeBSDLibc

    b = Backend(FreeBSDLibc())  # the base: what an OS without the scan inherits
    with pytest.raises(memlock.UnsupportedOperation):
        b.host_processes()
    with pytest.raises(memlock.UnsupportedOperation):
        b.host_unaccounted_bytes([], memlock.SystemStatus())



def test_ctrl_c_in_the_scan_leaves_the_other_thread_a_few_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python loop on two threads (no C module): Ctrl-C in the caller's thread stops the
    other one at the end of its job, so a job is a few dozen reads, not half the host."""
    from memlock._platform import _hostscan

    monkeypatch.setenv("MEMLOCK_PURE_PYTHON", "1")
    monkeypatch.setattr(_hostscan, "_PARALLEL_MIN_PROCESSES", 1)
    monkeypatch.setattr(_hostscan, "_PIECE", 8, raising=False)  # this host has ~70 processes
    real = _hostscan._kept_statuses
    caller = threading.get_ident()
    worker_started, caller_started = threading.Event(), threading.Event()
    interrupted = threading.Event()
    jobs: list[tuple[int, bool]] = []  # the other thread's: (names, after the interrupt)

    def kept(names: Sequence[str], include_unlocked: bool) -> list[tuple[int, bytes]]:
        if threading.get_ident() == caller:  # both threads hold a job when Ctrl-C lands
            caller_started.set()
            worker_started.wait(10)
            interrupted.set()
            raise KeyboardInterrupt
        jobs.append((len(names), interrupted.is_set()))
        worker_started.set()
        caller_started.wait(10)  # else it could take every job before the caller takes one
        return real(names, include_unlocked)

    monkeypatch.setattr(_hostscan, "_kept_statuses", kept)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        _hostscan.host_processes(include_unlocked=True, regions=False)
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
        assert not thread.is_alive()
    assert jobs, "the other thread never ran"
    assert max(n for n, _ in jobs) <= 8
    assert sum(1 for _, after in jobs if after) <= 2  # the job it had, and one it took
