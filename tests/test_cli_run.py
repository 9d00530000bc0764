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
