"""``memlock doctor --pid PID``: another process's limits, capability, cgroup and environment.

Live: real children (without CAP_IPC_LOCK under a low prlimit, with it, in a memory cgroup
v1), judged against their /proc files. The environment detection and the fix it names are
unit-tested against canned /proc/PID/cgroup texts in tests/data/.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlock import _hints
from memlock._records import Environment

from .kernel import child_env, python_cmd, run_cli, unprivileged_cmd

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")

DATA = Path(__file__).parent / "data"
V1 = Path("/sys/fs/cgroup/memory")
MiB = 1 << 20

WAIT = """
    import sys
    print("ready", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def _child(cmd: list[str]) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=child_env()) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            yield child
        finally:
            child.communicate("", timeout=60)


def _limits_of(pid: int) -> tuple[int, int]:
    """Soft and hard RLIMIT_MEMLOCK of ``pid`` from /proc/PID/limits (the test's reading)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max locked memory"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise LookupError("Max locked memory")


def _doctor(pid: int) -> tuple[int, dict[str, object]]:
    proc = run_cli("doctor", "--pid", str(pid), "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _check(report: dict[str, object], name: str) -> dict[str, object]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return next(c for c in checks if c["name"] == name)


def test_a_child_without_the_capability_under_a_low_limit() -> None:
    cmd = unprivileged_cmd(*python_cmd(WAIT), limit=64 * 1024)
    with _child([str(a) for a in cmd]) as child:
        assert _limits_of(child.pid) == (64 * 1024, 64 * 1024)
        status, report = _doctor(child.pid)
        assert status == 0  # it may lock 64 KiB
        assert report["pid"] == child.pid
        limits = report["limits"]
        assert limits == {"soft": 65536, "hard": 65536, "locked_bytes": 0,
                          "available_bytes": 65536, "privileged": False}
        mlockall = _check(report, "mlockall")
        assert mlockall["ok"] is False  # a Python's VmSize is far above 64 KiB
        fix = str(mlockall["fix"])
        assert fix.startswith(f"How to fix ({report['environment']}):")
        assert "hard limit (64.0 KiB)" in fix  # it cannot raise its hard limit itself
        text = run_cli("doctor", "--pid", str(child.pid))
        assert text.returncode == 0 and "[FAIL] mlockall" in text.stdout
        assert "no CAP_IPC_LOCK" in text.stdout


def test_a_child_that_cannot_lock_anything_fails() -> None:
    cmd = unprivileged_cmd(*python_cmd(WAIT), limit=0)
    with _child([str(a) for a in cmd]) as child:
        status, report = _doctor(child.pid)
        assert status == 1 and report["ok"] is False
        check = _check(report, "RLIMIT_MEMLOCK")
        assert check["ok"] is False and "How to fix" in str(check["fix"])


def test_a_privileged_child() -> None:
    with _child(python_cmd(WAIT)) as child:
        status, report = _doctor(child.pid)
        assert status == 0
        limits = report["limits"]
        assert isinstance(limits, dict) and limits["privileged"] is True
        soft, hard = _limits_of(child.pid)
        assert (limits["soft"], limits["hard"]) == (soft, hard)
        assert _check(report, "mlockall")["ok"] is True


@pytest.mark.skipif(not (V1 / "cgroup.procs").exists(), reason="needs the memory cgroup v1")
def test_a_child_in_a_memory_cgroup_whose_headroom_is_too_small() -> None:
    cgroup = V1 / f"memlock-test-{uuid.uuid4().hex[:8]}"
    cgroup.mkdir()
    try:
        (cgroup / "memory.limit_in_bytes").write_text(str(64 * MiB))
        code = f"""
            import mmap, os, sys
            with open({str(cgroup / "cgroup.procs")!r}, "w") as f:
                f.write(str(os.getpid()))
            reserved = mmap.mmap(-1, 256 << 20, flags=mmap.MAP_PRIVATE)  # never touched
            print("ready", flush=True)
            sys.stdin.read()
        """
        with _child(python_cmd(code)) as child:
            assert str(child.pid) in (cgroup / "cgroup.procs").read_text().split()
            status, report = _doctor(child.pid)
            check = _check(report, "memory cgroup")
            assert check["ok"] is False, check  # mlockall would fault in 256 MiB more
            assert str(cgroup) in str(check["detail"])
            assert "limit 64.0 MiB" in str(check["detail"])
            assert "OOM" in str(check["fix"])
            assert status == 0  # the rlimit allows locking: the cgroup is a warning
    finally:
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def test_no_such_process_and_usage() -> None:
    proc = run_cli("doctor", "--pid", str(2**31 - 1))
    assert proc.returncode == 1
    assert proc.stderr == f"memlock doctor: {2**31 - 1}: no process {2**31 - 1}\n"
    assert run_cli("doctor", "--pid", "0").returncode == 2


# -- the environment, from canned /proc/PID/cgroup texts ----------------------------------


def _where(name: str, environ: dict[str, str] | None = None,
           container_files: bool | None = False) -> Environment:
    return _hints.describe_environment((DATA / name).read_text(), environ, container_files)


def test_docker() -> None:
    env = _where("cgroup_docker.txt")
    assert (env.kind, env.runtime, env.container) == ("docker", "docker", "3f4e8a1b2c9d")
    hint = _hints.limit_hint(64 * MiB, place=env)
    assert "recreate container 3f4e8a1b2c9d with `--ulimit memlock=67108864:67108864`" in hint
    assert "--cap-add IPC_LOCK" in hint


def test_kubernetes_pod_under_containerd() -> None:
    env = _where("cgroup_k8s_containerd.txt")
    assert env.kind == "kubernetes" and env.runtime == "containerd"
    assert env.pod == "5e3c9f1a-7b2d-4c8e-9f0a-1b2c3d4e5f60"
    assert env.container == "8d7c6b5a4f3e"
    hint = _hints.limit_hint(None, place=env)
    assert "pod 5e3c9f1a-7b2d-4c8e-9f0a-1b2c3d4e5f60" in hint and '"IPC_LOCK"' in hint
    assert "no per-pod ulimit" in hint and "containerd.service" in hint


def test_systemd_system_unit() -> None:
    env = _where("cgroup_systemd_service.txt")
    assert (env.kind, env.unit) == ("systemd", "elasticsearch.service")
    hint = _hints.limit_hint(2 * 1024 * MiB, place=env)
    assert "`systemctl edit elasticsearch.service`" in hint and "`LimitMEMLOCK=2048M`" in hint
    assert "`systemctl restart elasticsearch.service`" in hint


def test_systemd_user_unit() -> None:
    env = _where("cgroup_systemd_user.txt")
    assert (env.kind, env.unit, env.user_uid) == ("systemd-user", "llama-server.service", 1000)
    hint = _hints.limit_hint(8 * 1024 * MiB, place=env)
    assert "`systemctl --user edit llama-server.service`" in hint
    assert "`systemctl edit user@1000.service`" in hint
    assert "`DefaultLimitMEMLOCK=8192M` in /etc/systemd/user.conf" in hint


def test_login_shell_and_this_process_detection() -> None:
    assert _where("cgroup_login_shell.txt").kind == "shell"
    # A service's own process is systemd only when systemd started it (INVOCATION_ID).
    text = (DATA / "cgroup_systemd_service.txt").read_text()
    assert _hints.detect_environment({}, text) == "shell"
    assert _hints.detect_environment({"INVOCATION_ID": "x"}, text) == "systemd"
    user = (DATA / "cgroup_systemd_user.txt").read_text()
    assert _hints.detect_environment({"INVOCATION_ID": "x"}, user) == "systemd-user"


def test_another_users_process_whose_root_it_may_not_read_is_not_called_a_shell() -> None:
    """uid 65534 may read a root process's status and cgroup, not its root or environ:
    nothing rules a container out, so the doctor says it cannot tell (not "shell")."""
    from .kernel import run_as_nobody

    with _child(python_cmd(WAIT)) as child:
        proc = run_as_nobody(
            "import sys\nfrom memlock.cli import main\n"
            "sys.exit(main(['doctor', '--pid', sys.argv[1], '--json']))", args=[str(child.pid)])
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert report["environment"] == "unknown", report
    fix = _check(report, "RLIMIT_MEMLOCK")["fix"] or ""
    assert isinstance(fix, str)
    # Root here has CAP_IPC_LOCK, so the check passes and gives no fix; the hint itself:
    hint = _hints.limit_hint(1 << 20, place=_where("cgroup_login_shell.txt", None, None))
    assert "where it runs is not known" in hint and "docker" in hint and "ulimit" in hint


def test_unknown_only_without_any_evidence() -> None:
    assert _where("cgroup_login_shell.txt", None, None).kind == "unknown"
    assert _where("cgroup_login_shell.txt", None, False).kind == "shell"
    assert _where("cgroup_login_shell.txt", {}, None).kind == "shell"
    assert _where("cgroup_docker.txt", None, None).kind == "docker"
