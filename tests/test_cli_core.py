"""`memlock doctor|status|limits` as a user runs them."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from .kernel import child_env, locking_child, run_child, run_cli


def test_doctor_privileged_exits_zero_and_lists_features() -> None:
    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stderr
    for word in ("mlock", "MCL_ONFAULT", "memfd_secret", "MADV_POPULATE_READ", "vm.max_map_count"):
        assert word in proc.stdout
    report = json.loads(run_cli("doctor", "--json").stdout)
    assert report["ok"] is True and report["limits"]["privileged"] is True
    assert {c["name"] for c in report["checks"]} >= {"mlock", "mlockall", "memfd_secret"}


def test_doctor_says_whether_the_c_fast_path_runs() -> None:
    from .conftest import c_path_built

    def fast_path(env: dict[str, str]) -> dict[str, object]:
        report = json.loads(run_cli("doctor", "--json", env=env).stdout)
        found: dict[str, object] = next(c for c in report["checks"] if c["name"] == "C fast path")
        return found

    on = fast_path({"MEMLOCK_PURE_PYTHON": "0"})
    assert on["ok"] is (True if c_path_built() else None)
    off = fast_path({"MEMLOCK_PURE_PYTHON": "1"})
    assert off["ok"] is None and "MEMLOCK_PURE_PYTHON" in str(off["detail"])


def test_doctor_with_nothing_lockable_fails_with_the_fix() -> None:
    proc = run_cli("doctor", unprivileged=True, limit=0)
    assert proc.returncode == 1
    assert "no memory can be locked" in proc.stdout
    assert "IPC_LOCK" in proc.stdout  # the fix is printed
    report = json.loads(run_cli("doctor", "--json", unprivileged=True, limit=0).stdout)
    assert report["ok"] is False
    failing = {c["name"]: c for c in report["checks"] if c["ok"] is False}
    assert "mlock" in failing and failing["RLIMIT_MEMLOCK"]["fix"]


def test_doctor_unprivileged_flags_mlockall_against_vmsize() -> None:
    report = json.loads(run_cli("doctor", "--json", unprivileged=True, limit=8388608).stdout)
    assert report["ok"] is True
    mlockall = next(c for c in report["checks"] if c["name"] == "mlockall")
    assert mlockall["ok"] is False and "VmSize" in mlockall["detail"] and mlockall["fix"]


def test_limits_json_mirrors_the_api() -> None:
    data = json.loads(run_cli("limits", "--json", unprivileged=True,
                          limit=(4194304, 8388608)).stdout)
    assert data == {"soft": 4194304, "hard": 8388608, "locked_bytes": 0,
                    "available_bytes": 4194304, "privileged": False}
    text = run_cli("limits").stdout
    assert "soft limit" in text and "MiB" in text


def test_status_of_a_locking_process() -> None:
    with locking_child(1 << 20) as pid:
        proc = json.loads(run_cli("status", str(pid), "--json").stdout)
        assert proc["pid"] == pid and proc["locked_bytes"] == 1 << 20
        assert {"start", "end", "path", "size", "locked_bytes", "onfault"} <= set(
            proc["regions"][0])
        assert "mlocked_bytes" in proc["system"]
        both = json.loads(run_cli("status", str(pid), str(os.getpid()), "--json").stdout)
        assert [p["pid"] for p in both["processes"]] == [pid, os.getpid()]
        human = run_cli("status", str(pid)).stdout
        assert f"pid {pid}: 1.0 MiB locked" in human
    gone = run_cli("status", str(pid))
    assert gone.returncode == 1 and "no process" in gone.stderr


def _memfd_secret_check(limit: int) -> dict[str, object]:
    report = json.loads(run_cli("doctor", "--json", unprivileged=True, limit=limit).stdout)
    found: dict[str, object] = next(c for c in report["checks"] if c["name"] == "memfd_secret")
    return found


def test_doctor_memfd_secret_is_judged_by_making_a_secret() -> None:
    # Under RLIMIT_MEMLOCK 0 without CAP_IPC_LOCK, memfd_secret(2) itself succeeds but no
    # secret can be mapped: the check must fail with the error SecureBuffer raised.
    probe = ("import memlock\ntry:\n    memlock.SecureBuffer(32, backend='memfd_secret').close()\n"
             "    print('made')\nexcept OSError as e:\n    print('refused', e.strerror)\n")
    for limit, works in ((0, False), (8 << 20, True)):
        made = run_child(probe, unprivileged=True, limit=limit).stdout
        assert made.startswith("made" if works else "refused"), made  # the kernel's answer
        check = _memfd_secret_check(limit)
        assert check["ok"] is works, check
        if not works:
            assert "RLIMIT_MEMLOCK" in str(check["detail"]) and check["fix"], check


def test_doctor_fix_lines_are_indented_with_their_check() -> None:
    proc = run_cli("doctor", unprivileged=True, limit=0)
    lines = proc.stdout.splitlines()
    assert any(line.startswith("       Elsewhere:") for line in lines), proc.stdout
    for line in lines[1:-1]:  # between the title and the verdict: checks and their fixes
        assert line.startswith(("[", "       ")), line


def test_an_unexpected_error_is_one_line_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The last resort only: every known failure has its own message (test_cli_hostile).
    import memlock
    from memlock.cli import main

    def broken() -> None:
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(memlock, "limits", broken)
    assert main(["limits"]) == 1
    err = capsys.readouterr().err
    assert err == "memlock: internal error: RuntimeError: something unforeseen\n"


def test_each_subcommand_loads_only_its_own_module() -> None:
    """COMMANDS names every subcommand's module; a run of one builds only that module's."""
    from memlock.cli import COMMANDS, build_parser

    def choices(parser: argparse.ArgumentParser) -> set[str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert choices(build_parser()) == set(COMMANDS)
    for command, module in COMMANDS.items():
        assert choices(build_parser(command)) == {c for c, m in COMMANDS.items() if m == module}
    code = ("import sys; from memlock.cli import main; main(['limits']); "
            "print(sorted(m for m in sys.modules if m.startswith('memlock.cli.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=child_env(), check=True).stdout.splitlines()[-1]
    assert loaded == "['memlock.cli._arguments', 'memlock.cli._inspect', " \
        "'memlock.cli._quickparse']", loaded  # and not ._parser (argparse): see quickparse


def test_import_memlock_and_status_do_not_load_ctypes() -> None:
    """ctypes and the C library's binding cost 3-5 ms of every start: ``import memlock``
    and a ``memlock status`` run leave them unloaded; the first lock binds them."""
    code = ("import io, sys, contextlib; import memlock; before = 'ctypes' in sys.modules\n"
            "from memlock.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['status'])\n"
            "after = 'ctypes' in sys.modules\n"
            "with memlock.lock(bytearray(8192)): pass\n"
            "print(before, after, 'ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), check=True).stdout.split()
    assert out == ["False", "False", "True"], out
