"""Hints that can be followed: ``ulimit -l N`` only where the hard limit allows N.

A process cannot raise its soft RLIMIT_MEMLOCK above its hard limit, nor the hard limit
without CAP_SYS_RESOURCE: bash then says "Operation not permitted". The children here lack
CAP_IPC_LOCK and CAP_SYS_RESOURCE; each hint is followed for real in the same conditions.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from memlock import _hints

from .kernel import python_cmd, run_child, run_cmd

KiB, MiB = 1024, 2**20

# Locks 1 MiB and prints the hint of the failure (as an interactive shell would see it).
LOCK_AND_REPORT = """
    import json, memlock, memlock._hints
    from tests.kernel import anon
    memlock._hints.detect_environment = lambda *a, **k: "shell"
    try:
        memlock.lock(anon(256))
        print(json.dumps(None))
    except memlock.MemlockError as e:
        print(json.dumps([type(e).__name__, e.hint]))
"""
# Locks 1 MiB and prints VmLck: the kernel's word that the lock took.
LOCK = """
    import memlock
    from tests.kernel import anon, vmlck
    held = memlock.lock(anon(256))
    print(vmlck())
"""


def _hint(soft: int, hard: int) -> tuple[str, str]:
    proc = run_child(LOCK_AND_REPORT, unprivileged=True, drop=["sys_resource"], limit=(soft, hard))
    assert proc.returncode == 0, proc.stderr
    kind, hint = json.loads(proc.stdout)
    return kind, hint


@pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux")
@pytest.mark.parametrize(
    ("soft", "hard", "kind"),
    [(64 * KiB, 8 * MiB, "LockLimitError"), (0, 8 * MiB, "LockPermissionError")],
    ids=["soft_below_hard", "zero_soft"],
)
def test_ulimit_hint_works_when_the_hard_limit_allows_it(soft: int, hard: int,
                                                         kind: str) -> None:
    got, hint = _hint(soft, hard)
    assert got == kind
    m = re.search(r"`ulimit -l (\d+)`", hint)
    assert m, hint
    assert "hard limit (" not in hint, hint
    kib = int(m[1])
    assert kib >= 1024
    # follow the hint in the same conditions: the shell raises the limit, the lock takes
    proc = run_cmd(["bash", "-c", f'ulimit -l {kib} && exec "$0" "$@"', *python_cmd(LOCK)],
                   unprivileged=True, drop=["sys_resource"], limit=(soft, hard))
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == MiB


@pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux")
@pytest.mark.parametrize(
    ("soft", "hard", "kind"),
    [(64 * KiB, 64 * KiB, "LockLimitError"), (0, 0, "LockPermissionError")],
    ids=["soft_equals_hard", "zero_hard"],
)
def test_hint_says_the_hard_limit_is_too_low_and_how_to_raise_it(soft: int, hard: int,
                                                                 kind: str) -> None:
    got, hint = _hint(soft, hard)
    assert got == kind
    assert not re.search(r"`ulimit -l \d+`", hint), hint  # it would fail: not suggested
    assert f"the hard limit ({_hints.format_size(hard)}) is below the 1.0 MiB needed" in hint
    assert "Operation not permitted" in hint
    m = re.search(r"`USER hard memlock (\d+)`", hint)
    assert m, hint
    kib = int(m[1])
    assert "and a new login" in hint or "start a new login" in hint
    assert f"`LimitMEMLOCK={-(-kib // 1024)}M`" in hint, hint
    assert f"`docker run --ulimit memlock={kib * 1024}:{kib * 1024}`" in hint, hint
    assert "CAP_IPC_LOCK" in hint
    # the shell would refuse what the old hint said
    proc = run_cmd(["bash", "-c", f"ulimit -l {kib}"], unprivileged=True, drop=["sys_resource"],
                   limit=(soft, hard))
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr, proc.stderr


@pytest.mark.parametrize("env", [_hints.SHELL, _hints.SYSTEMD, _hints.DOCKER,
                                 _hints.KUBERNETES])
def test_low_hard_limit_keeps_each_environments_fix(env: str) -> None:
    hint = _hints.limit_hint(3 * MiB, env, low_hard_limit=MiB)
    assert hint.startswith(f"How to fix ({env}): the hard limit (1.0 MiB) is below the "
                           "3.0 MiB needed")
    own = {
        _hints.SHELL: "`USER hard memlock 3072`",
        _hints.SYSTEMD: "`LimitMEMLOCK=3M`",
        _hints.DOCKER: f"`--ulimit memlock={3 * MiB}:{3 * MiB}`",
        _hints.KUBERNETES: '["IPC_LOCK"]',
    }[env]
    assert own in hint.splitlines()[0], hint
    assert not re.search(r"`ulimit -l \d+`", hint), hint
    plain = _hints.limit_hint(3 * MiB, env)
    assert "hard limit (" not in plain and "`ulimit -l 3072`" in plain
