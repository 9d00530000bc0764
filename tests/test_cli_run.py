"""``memlock run``: the program runs in a locked process (its own /proc/self says so)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from .kernel import run_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")

MiB = 2**20
SPECIAL = ("[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]")  # kernel mappings, never locked

# The program under test reports what the kernel says about its own process.
PROGRAM = textwrap.dedent(r"""
    import json, sys
    from tests.kernel import mappings, status_bytes
    status = {field: status_bytes(field) for field in ("VmLck", "VmSize")}
    unlocked = [m["path"] for m in mappings() if "lo" not in m["flags"]]
    print(json.dumps({"argv": sys.argv, "name": __name__, "status": status,
                      "unlocked": unlocked}))
    if "--fail" in sys.argv:
        raise RuntimeError("the program failed")
    sys.exit(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 0)
""")


def check_locked(report: dict) -> None:
    status = report["status"]
    assert [p for p in report["unlocked"] if p not in SPECIAL] == []
    assert status["VmSize"] - 64 * 1024 <= status["VmLck"] <= status["VmSize"]


@pytest.fixture
def prog_dir(tmp_path: Path) -> Path:
    (tmp_path / "prog.py").write_text(PROGRAM)
    pkg = tmp_path / "rtpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(PROGRAM)
    return tmp_path


def test_run_script_runs_locked(prog_dir: Path) -> None:
    proc = run_cli("run", "prog.py", "a", "--report", "7", cwd=prog_dir)
    assert proc.returncode == 7, proc.stderr  # the program's exit status
    report = json.loads(proc.stdout)
    assert report["argv"] == ["prog.py", "a", "--report", "7"]  # its args, not ours
    assert report["name"] == "__main__"
    check_locked(report)
    assert "page faults" not in proc.stderr  # --report was the program's argument


def test_run_module_runs_locked_with_report(prog_dir: Path) -> None:
    proc = run_cli("run", "--report", "--prefault-heap", "64M", "-m", "rtpkg.main", "x",
                       cwd=prog_dir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["argv"] == [str(prog_dir / "rtpkg" / "main.py"), "x"]
    assert report["name"] == "__main__"
    check_locked(report)
    assert report["status"]["VmSize"] > 64 * MiB  # the prefaulted heap is there
    assert "page faults while the program ran:" in proc.stderr
    assert "VmLck" in proc.stderr and "VmSize" in proc.stderr


def test_run_double_dash_and_program_failure(prog_dir: Path) -> None:
    proc = run_cli("run", "--onfault", "--", "prog.py", "--fail", cwd=prog_dir)
    assert proc.returncode == 1
    assert "RuntimeError: the program failed" in proc.stderr
    assert "runpy" not in proc.stderr  # the traceback is the program's
    assert json.loads(proc.stdout.splitlines()[0])["argv"] == ["prog.py", "--fail"]


def test_run_unprivileged_explains_vmsize(prog_dir: Path) -> None:
    proc = run_cli("run", "prog.py", cwd=prog_dir, unprivileged=True)
    assert proc.returncode == 1
    assert proc.stdout == ""  # the program did not run unlocked
    assert "VmSize" in proc.stderr and "RLIMIT_MEMLOCK" in proc.stderr
    assert "How to fix" in proc.stderr


def test_run_usage_errors(prog_dir: Path) -> None:
    assert run_cli("run", cwd=prog_dir).returncode == 2
    assert run_cli("run", "missing.py", cwd=prog_dir).returncode == 2
    assert run_cli("run", "-m", "no_such_module_xyz", cwd=prog_dir).returncode == 2
    bad = run_cli("run", "--prefault-heap", "12Q", "prog.py", cwd=prog_dir)
    assert bad.returncode == 2 and "not a size" in bad.stderr


def test_run_help_says_it_cannot_wrap_executables(prog_dir: Path) -> None:
    proc = run_cli("run", "--help", cwd=prog_dir)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "mlockall does not survive exec" in text
    assert "cannot wrap other executables" in text
    assert "-m module" in text


# A thread that allocates, measured by the kernel: what mlockall charged for its stack
# (VmLck) and what glibc mapped for it (VmSize: a new arena reserves 64 MiB).
THREADED = textwrap.dedent(r"""
    import json, threading
    from tests.kernel import status_bytes
    thp = next(line.split()[1] for line in open("/proc/self/status")
               if line.startswith("THP_enabled:"))
    before = {f: status_bytes(f) for f in ("VmLck", "VmSize")}
    allocated, release = threading.Event(), threading.Event()
    def work():
        blocks = [bytearray(200_000) for _ in range(4)]  # malloc: the thread's arena
        allocated.set()
        release.wait()
    thread = threading.Thread(target=work)
    thread.start()
    allocated.wait()
    grown = {f: status_bytes(f) - before[f] for f in ("VmLck", "VmSize")}
    release.set()
    thread.join()
    print(json.dumps({"thp": thp, "stack_size": threading.stack_size(), "grown": grown}))
""")


def test_run_takes_the_thread_and_huge_page_settings(tmp_path: Path) -> None:
    """--thp, --arena-max and --thread-stack reach lock_process before the program runs."""
    (tmp_path / "threaded.py").write_text(THREADED)
    plain = run_cli("run", "threaded.py", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    tuned = run_cli("run", "--thp", "disable", "--arena-max", "1", "--thread-stack", "256K",
                    "threaded.py", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    before, after = json.loads(plain.stdout), json.loads(tuned.stdout)
    assert (before["thp"], after["thp"]) == ("1", "0")  # PR_SET_THP_DISABLE, as the kernel says
    assert (before["stack_size"], after["stack_size"]) == (0, 256 * 1024)
    # The default 8 MiB stack is locked whole; 256 KiB (and a guard page) instead.
    assert before["grown"]["VmLck"] >= 8 * MiB
    assert after["grown"]["VmLck"] < 2 * MiB
    # Without --arena-max the thread's malloc maps an arena (64 MiB of address space).
    assert before["grown"]["VmSize"] >= 64 * MiB
    assert after["grown"]["VmSize"] < 8 * MiB


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--arena-max", "0", "not a number of arenas"), ("--arena-max", "x", "not a number"),
    ("--arena-max", "9" * 30, "not a number of arenas"),
    ("--thp", "never", "invalid choice"), ("--thread-stack", "1K", "at least 32768"),
    ("--thread-stack", "12Q", "not a size"),
])
def test_run_refuses_bad_thread_settings_before_anything(
        prog_dir: Path, flag: str, value: str, says: str) -> None:
    proc = run_cli("run", flag, value, "prog.py", cwd=prog_dir)
    assert proc.returncode == 2 and proc.stdout == ""
    assert says in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
