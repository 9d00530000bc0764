"""``memlock verify PID``: judged against the kernel's smaps of real processes.

Each test starts a real process (``memlock run``, a child that locked part of itself, a
``vmtouch -l`` holder, a SecureBuffer holder), runs ``python -m memlock verify`` on it and
compares the verdict with what /proc/PID/smaps says, read by tests/kernel.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kernel import (
    CLI,
    PAGE,
    child_env,
    have,
    locking_child,
    make_file,
    mappings,
    python_cmd,
    run_as_nobody,
    run_cli,
    vmlck,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")

#: VmFlags of mappings the kernel never locks (VM_IO, VM_PFNMAP, VM_DONTEXPAND, VM_MIXEDMAP,
#: hugetlb, VM_DROPPABLE): the test's own list, from mm/mlock.c.
NEVER_LOCKED_FLAGS = {"io", "pf", "de", "mm", "ht", "dp"}


def _unlocked_by_the_kernel(pid: int) -> set[int]:
    """Start addresses of the mappings of ``pid`` without ``lo`` that the kernel could lock."""
    return {v["start"] for v in mappings(pid) if "lo" not in v["flags"]
            and not v["flags"] & NEVER_LOCKED_FLAGS and v["path"] != "[vsyscall]"}


@contextlib.contextmanager
def _waiting(cmd: list[str], ready: str = "ready") -> Iterator[int]:
    """A process running ``cmd`` until the block ends; yields its pid once it printed ``ready``."""
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=child_env()) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.strip() == ready, line
            yield child.pid
        finally:
            child.communicate("", timeout=60)


def _verify(*args: str, **options: object) -> tuple[int, dict[str, object]]:
    proc = run_cli("verify", "--json", *args, **options)  # type: ignore[arg-type]
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


WAIT = 'import sys\nprint("ready", flush=True)\nsys.stdin.read()\n'


def test_a_memlock_run_process_is_verified_locked(tmp_path: Path) -> None:
    script = tmp_path / "wait.py"
    script.write_text(WAIT)
    with _waiting([*CLI, "run", str(script)]) as pid:
        assert _unlocked_by_the_kernel(pid) == set()  # the kernel's word first
        proc = run_cli("verify", str(pid))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith(f"memlock verify {pid}: ok (locked)")
        assert "[vdso]" in proc.stdout and "[vvar]" in proc.stdout  # named as excepted
        status, verdict = _verify("--locked", "--no-swap", "--min-locked", str(vmlck(pid)),
                                  str(pid))
        assert status == 0 and verdict["ok"] and verdict["violations"] == []
        assert verdict["locked_bytes"] == vmlck(pid)
        excepted = verdict["excepted"]
        assert isinstance(excepted, list)
        assert {m["path"] for m in excepted} >= {"[vdso]", "[vvar]"}


def test_a_partly_locked_process_fails_with_each_unlocked_mapping() -> None:
    with locking_child(16 * PAGE) as pid:
        unlocked = _unlocked_by_the_kernel(pid)
        assert unlocked  # the child locked one buffer only
        status, verdict = _verify(str(pid))
        assert status == 1 and not verdict["ok"]
        violations = verdict["violations"]
        assert isinstance(violations, list)
        assert {v["check"] for v in violations} == {"locked"}
        assert {v["mapping"]["start"] for v in violations} == unlocked
        text = run_cli("verify", str(pid))
        assert text.returncode == 1 and "FAILED (locked)" in text.stdout
        assert "[heap]: not locked" in text.stdout or "[stack]: not locked" in text.stdout
        # --min-locked: VmLck against the size asked, both ways.
        assert _verify("--min-locked", str(16 * PAGE), str(pid))[0] == 0
        status, verdict = _verify("--min-locked", str(17 * PAGE), str(pid))
        assert status == 1 and verdict["checks"] == ["min-locked"]


@pytest.mark.skipif(not have("vmtouch"), reason="needs vmtouch")
def test_path_of_a_vmtouch_holder(tmp_path: Path) -> None:
    model = make_file(str(tmp_path / "model.bin"), 64 * PAGE)
    with subprocess.Popen(["vmtouch", "-l", model], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as holder:
        try:
            deadline = time.monotonic() + 30
            while not any("lo" in v["flags"] for v in mappings(holder.pid, path=model)):
                assert time.monotonic() < deadline, "vmtouch did not lock the file"
                time.sleep(0.05)
            pid = str(holder.pid)
            status, verdict = _verify("--path", str(tmp_path / "*.bin"), pid)
            assert status == 0, verdict
            status, verdict = _verify("--path", str(tmp_path / "*.gguf"), pid)
            assert status == 1
            assert "no mapping of a file matching" in verdict["violations"][0]["message"]
            # A read-only file mapping is no part of a core dump (coredump_filter 0x33).
            assert _verify("--no-dump", pid)[0] == 0
            assert _verify(pid)[0] == 1  # vmtouch locks the file, not itself
        finally:
            holder.terminate()
            holder.wait(timeout=30)


def test_path_of_a_file_mapped_but_not_locked(tmp_path: Path) -> None:
    model = make_file(str(tmp_path / "model.bin"), 8 * PAGE)
    code = f"""
        import mmap, sys
        f = open({model!r}, "rb")
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        print("ready", flush=True)
        sys.stdin.read()
    """
    with _waiting(python_cmd(code)) as pid:
        [vma] = mappings(pid, path=model)
        assert "lo" not in vma["flags"]
        status, verdict = _verify("--path", model, str(pid))
        assert status == 1
        [violation] = verdict["violations"]
        assert violation["check"] == "path" and violation["mapping"]["start"] == vma["start"]


def test_no_dump_of_a_secure_buffer_holder_and_of_a_plain_lock() -> None:
    code = """
        import sys, memlock
        secrets = [memlock.SecureBuffer(64), memlock.SecureBuffer(3 * 4096)]
        print("ready", flush=True)
        sys.stdin.read()
        for s in secrets:
            s.close()
    """
    with _waiting(python_cmd(code)) as pid:
        locked = [v for v in mappings(pid) if "lo" in v["flags"]]
        assert locked and all("dd" in v["flags"] for v in locked)  # the kernel's word
        status, verdict = _verify("--no-dump", "--no-swap", str(pid))
        assert status == 0, verdict
    with locking_child(4 * PAGE) as pid:  # memlock.lock: locked, but dumped
        [plain] = [v for v in mappings(pid) if "lo" in v["flags"]]
        assert "dd" not in plain["flags"]
        status, verdict = _verify("--no-dump", str(pid))
        assert status == 1
        [violation] = verdict["violations"]
        assert violation["check"] == "no-dump"
        assert violation["mapping"]["start"] == plain["start"]


def test_a_process_the_caller_may_not_inspect_is_one_line() -> None:
    with locking_child(4 * PAGE) as pid:  # root's
        code = f"""
            import sys
            from memlock.cli import main
            sys.exit(main(["verify", "{pid}"]))
        """
        proc = run_as_nobody(code)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stdout == ""
        [line] = proc.stderr.splitlines()
        assert f"memlock verify: {pid}: may not read /proc/{pid}/smaps" in line
        assert "CAP_SYS_PTRACE" in line
        # VmLck is world-readable: --min-locked alone works for anyone.
        proc = run_as_nobody(code.replace('"verify", ', '"verify", "--min-locked", "16K", '))
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_such_process() -> None:
    proc = run_cli("verify", str(2**31 - 1))
    assert proc.returncode == 1
    assert proc.stderr == f"memlock verify: {2**31 - 1}: no process {2**31 - 1}\n"


def test_each_kind_the_kernel_never_locks_is_named() -> None:
    from memlock._platform._linux_process import never_locked

    for flag in sorted(NEVER_LOCKED_FLAGS):
        assert never_locked("/dev/x", frozenset({"rd", flag})), flag
    assert never_locked("[vsyscall]", frozenset({"ex"}))
    assert never_locked("[heap]", frozenset({"rd", "wr", "lo"})) is None




# -- --no-swap under real memory pressure (a swap file and a memory cgroup: global state; named
# "pressure" so that `-k "not pressure"` leaves it out of runs that share the machine) -----


def test_no_swap_under_pressure_lists_a_region_locked_after_it_was_swapped() -> None:
    from .pressure import squeeze, unavailable

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    proc = squeeze("""
        import subprocess
        import memlock
        early = filled(8 << 20)
        lk_early = memlock.lock(early)         # locked before the pressure: stays in RAM
        late = filled(32 << 20)
        hog = pressure()                        # the unlocked one goes to swap
        del hog
        lk_late = memlock.lock(late, onfault=True)  # locked on fault: swapped pages stay out
        verify = subprocess.run(
            [sys.executable, "-m", "memlock", "verify", "--no-swap", "--json",
             str(os.getpid())], capture_output=True, text=True)
        print(json.dumps({
            "status": verify.returncode, "verdict": json.loads(verify.stdout),
            "early": vma(address_of(early)), "late": vma(address_of(late)),
        }, default=sorted))
    """)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    early, late = result["early"], result["late"]
    assert "lo" in late["flags"] and late["Swap"] > 0, late  # the kernel's word
    assert "lo" in early["flags"] and early["Swap"] == 0, early
    assert result["status"] == 1
    flagged = {v["mapping"]["start"] for v in result["verdict"]["violations"]}
    assert late["start"] in flagged and early["start"] not in flagged
    assert {v["check"] for v in result["verdict"]["violations"]} == {"no-swap"}


def test_an_unprivileged_user_verifies_its_own_process() -> None:
    code = """
        import json, subprocess, sys
        from memlock.cli import main
        locker = ("import mmap, sys, memlock\\n"
                  "m = mmap.mmap(-1, 4 * 4096, flags=mmap.MAP_PRIVATE)\\n"
                  "lk = memlock.lock(m)\\n"
                  "print('ready', flush=True)\\n"
                  "sys.stdin.read()\\n")
        with subprocess.Popen([sys.executable, "-c", locker], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) as child:
            assert child.stdout.readline().strip() == "ready"
            status = main(["verify", "--json", "--no-dump", str(child.pid)])
            child.communicate("")
        sys.exit(status)
    """
    proc = run_as_nobody(code)
    assert proc.returncode == 1, proc.stderr  # its smaps were read: the lock lacks dd
    verdict = json.loads(proc.stdout)
    assert verdict["mappings"] > 0
    [violation] = verdict["violations"]
    assert violation["check"] == "no-dump" and violation["mapping"]["size"] == 4 * 4096


def test_min_locked_of_a_kernel_thread_says_it_has_no_memory() -> None:
    """A kernel thread has no VmLck: "0 B locked" would be a guess, not the kernel's word."""
    kthread = next((int(d) for d in os.listdir("/proc") if d.isdigit()
                    and "\nKthread:\t1" in _status_text(d)), None)
    if kthread is None:
        pytest.skip("this kernel marks no kernel thread (Kthread:)")
    proc = run_cli("verify", "--min-locked", "4K", str(kthread), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["locked_bytes"] is None
    assert "no memory of its own" in report["violations"][0]["message"]


def _status_text(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""
