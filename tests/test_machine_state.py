"""The after-each check of tests/conftest.py fails a test that leaves the machine changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from .kernel import CGROUP_DIRS, REPO, have, run_cmd

#: A test file for a pytest run of its own: one test leaves nothing, one leaves an rlimit
#: lowered, a cgroup, a mount and a swap device behind (each reported on its own line).
LEAKY = """
import resource, subprocess

def test_leaves_nothing():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

def test_leaves_everything():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    {cgroup_line}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "memlock-leak", {mnt!r}],
                   check=True)
    subprocess.run(["swapon", {swapfile!r}], check=True)

def test_after_the_leak_starts_clean():
    pass
"""


def test_a_test_that_leaves_things_behind_fails_in_teardown(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not (have("mount") and have("mkswap") and have("swapon")):
        pytest.skip("needs root, mount, mkswap and swapon")
    if Path("/proc/swaps").read_text().count("\n") > 1:
        pytest.skip("swap is already on: the test would disturb it")
    work = Path(f"/var/tmp/memlock-leak-{uuid.uuid4().hex[:8]}")  # swapon refuses tmpfs
    mnt = work / "mnt"
    swapfile = work / "swap"
    cgroups = [d / f"memlock-test-leak-{uuid.uuid4().hex[:8]}" for d in CGROUP_DIRS
               if (d / "cgroup.procs").exists()]
    mnt.mkdir(parents=True)
    try:
        swapfile.write_bytes(bytes(1 << 20))  # no holes: swapon refuses a sparse file
        swapfile.chmod(0o600)
        subprocess.run(["mkswap", str(swapfile)], check=True, capture_output=True)
        cgroup_line = f"import os; os.mkdir({str(cgroups[0])!r})" if cgroups else "pass"
        test_file = tmp_path / "test_leaky.py"
        test_file.write_text(textwrap.dedent(LEAKY).format(
            cgroup_line=cgroup_line, mnt=str(mnt), swapfile=str(swapfile)))
        proc = run_cmd([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p",
                        "no:cacheprovider", "-q", "-rA", "--tb=short", str(test_file)],
                       cwd=REPO, timeout=120)
    finally:
        subprocess.run(["swapoff", str(swapfile)], capture_output=True, check=False)
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
        for cg in cgroups:
            if cg.exists():
                cg.rmdir()
        shutil.rmtree(work)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    summary = {(line.split()[0], line.rsplit("::", 1)[1].split()[0])
               for line in out.splitlines() if line.startswith(("PASSED", "ERROR", "FAILED"))}
    assert summary == {
        ("PASSED", "test_leaves_nothing"),
        ("PASSED", "test_leaves_everything"),  # the test itself passes, its teardown errs
        ("ERROR", "test_leaves_everything"),
        ("PASSED", "test_after_the_leak_starts_clean"),  # the rlimit was put back
    }, out
    changes = out[out.index("the test left the machine changed"):]
    assert "rlimits: RLIMIT_NOFILE" in changes, out
    assert "mounts: left behind " in changes and f" {mnt} " in changes, out
    assert f"swap devices: left behind {swapfile}" in changes, out
    if cgroups:
        assert f"memlock cgroups: left behind {cgroups[0]}" in changes, out
