"""An exception at any line of memlock leaves no mutex held and no page counted or locked
without an owner: proven by injecting KeyboardInterrupt at every memlock event in turn
(tests/interrupts.py) and reading the kernel's accounting after each run.

Each scenario (tests/interrupt_scenarios.py) runs in a fresh child, through the C fast
path and through pure Python (the ``lock_path`` fixture sets MEMLOCK_PURE_PYTHON).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .kernel import REPO, run_child


def _memfd_secret_works() -> bool:
    from memlock._secrets import _pool as _securemem

    return _securemem.probe_memfd_secret()



def scenario(call: str, timeout: float = 300) -> int:
    """Run ``tests.interrupt_scenarios.<call>`` in a child; how many events it had."""
    code = f"from tests import interrupt_scenarios as s\ns.{call}\n"
    proc = run_child(code, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = proc.stdout.split()
    assert last[-2:-1] == ["events"], proc.stdout
    return int(last[-1])


@pytest.mark.parametrize("onfault", [False, True])
def test_lock_and_unlock_interrupted_anywhere(lock_path: str, onfault: bool) -> None:
    n = scenario(f"lock_unlock({onfault})")
    assert n > (3 if lock_path == "c" and not onfault else 20), n


@pytest.mark.parametrize("inner_onfault", [False, True])
def test_nested_lock_interrupted_anywhere_keeps_the_outer_lock(
        lock_path: str, inner_onfault: bool) -> None:
    assert scenario(f"nested({inner_onfault})") > 20


def test_full_lock_over_an_onfault_one_interrupted_anywhere(lock_path: str) -> None:
    assert scenario("full_over_onfault()") > 40


def test_a_lock_released_by_its_finalizer_interrupted_there(lock_path: str) -> None:
    assert scenario("dropped()") > 2


def test_queued_releases_interrupted_while_draining(lock_path: str) -> None:
    assert scenario("draining()") > 3


def test_parallel_populate_path_interrupted_anywhere() -> None:
    # Python registry code on either path (the C fast path takes no overlapping range).
    assert scenario("populate_path()") > 30


def test_64_mib_lock_interrupted_at_sampled_events(lock_path: str) -> None:
    assert scenario("big()") > 20


def test_lock_file_interrupted_anywhere(lock_path: str) -> None:
    assert scenario("lock_file()") > 20


def test_lock_all_interrupted_anywhere_is_undone_by_unlock_all(lock_path: str) -> None:
    assert scenario("lock_all()") > 10


BACKENDS = ["anonymous"]
if _memfd_secret_works():
    BACKENDS.append("memfd_secret")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("isolated", [False, True], ids=["pooled", "isolated"])
def test_secure_buffer_create_view_close_interrupted_anywhere(
        lock_path: str, backend: str, isolated: bool) -> None:
    assert scenario(f"secrets({backend!r}, {isolated})") > 30


def test_the_injector_finds_a_planted_bug(tmp_path: Path) -> None:
    """The harness is not blind: a copy of memlock whose commit takes two statements (the
    bug class this file is about: an interrupt can land between them) is caught."""
    copy = tmp_path / "memlock-mutant" / "memlock"
    shutil.copytree(REPO / "src" / "memlock", copy)
    source = (copy / "_registry.py").read_text()
    one = "        keys[i:j], vals[i:j], hold.state, unsure[k:] = new_keys, new_vals, HELD, span\n"
    assert one in source
    (copy / "_registry.py").write_text(source.replace(one, (
        "        keys[i:j] = new_keys\n        vals[i:j] = new_vals\n"
        "        hold.state, unsure[k:] = HELD, span\n")))
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\n"
            "from tests import interrupt_scenarios as s\ns.planted_bug()\n")
    proc = run_child(code, args=[str(copy.parent)])
    assert proc.stdout.startswith("caught:"), proc.stdout + proc.stderr[-2000:]
