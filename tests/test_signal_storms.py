"""Real signal storms (SIGALRM every 20-100 µs, a handler that raises) over lock/unlock
and SecureBuffer loops, through the C fast path and through pure Python: afterwards no
mutex is held, nothing is counted or locked without an owner, every secret is wiped and
no pool slot is lost (tests/storm.py). Each storm runs in a child; a hang fails the test
at its timeout instead of hanging the suite."""

from __future__ import annotations

import json
import subprocess

import pytest

from .kernel import REPO, run_child


@pytest.mark.parametrize("kind", ["locks", "secrets", "both"])
def test_signal_storm_leaves_every_promise_kept(lock_path: str, kind: str) -> None:
    try:
        proc = run_child(f"from tests.storm import main\nmain(2.0, {kind!r})\n", cwd=REPO,
                         timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the storm's child hung (a mutex left held?)")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["interrupted"] > 1000, out  # the storm was real
    assert set(out["unraisable"]) <= {"Storm"}, out  # finalizers interrupted, nothing else
