"""Real signal storms (SIGALRM every 20-100 µs, a handler that raises) over lock/unlock
and SecureBuffer loops, through the C fast path and through pure Python: afterwards no
mutex is held, nothing is counted or locked without an owner, every secret is wiped and
no pool slot is lost (tests/storm.py). Each storm runs in a child; a hang fails the test
at its timeout instead of hanging the suite."""

from __future__ import annotations

import json
import subprocess

import pytest

from .kernel import run_child


@pytest.mark.parametrize("kind", ["locks", "secrets", "both"])
def test_signal_storm_leaves_every_promise_kept(lock_path: str, kind: str) -> None:
    try:
        proc = run_child(f"from tests.storm import main\nmain(2.0, {kind!r})\n", timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the storm's child hung (a mutex left held?)")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["interrupted"] > 1000, out  # the storm was real
    assert set(out["unraisable"]) <= {"Storm"}, out  # finalizers interrupted, nothing else


HANDLER_CLOSES = """
import ctypes, json, signal, sys, time
import memlock
from memlock._lock import REGISTRY
from tests.kernel import PAGE, address_of, anon, page_states, vmlck

buf, mine = anon(8), anon(2)
lk = memlock.lock(mine)
sb = memlock.SecureBuffer(32, backend="anonymous")
with sb.view() as v:
    v[:] = b"k" * 32
    where = address_of(v)
base = vmlck() - 2 * PAGE
done = []
inside = []

def handler(signum, frame):  # "wipe and clean up on a signal", landing anywhere
    inside.append(REGISTRY._mutex.locked())
    sb.close()
    lk.unlock()
    done.append(True)

signal.signal(signal.SIGALRM, handler)
for attempt in range(400):  # until the handler runs while memlock holds a mutex
    signal.setitimer(signal.ITIMER_REAL, 30e-6 + attempt * 1e-6)
    t = time.monotonic()
    while not done and time.monotonic() - t < 0.05:
        memlock.lock(buf, 0, 4 * PAGE, onfault=True).unlock()
        memlock.SecureBuffer(32, backend="anonymous").close()
    if inside and inside[-1]:
        break
    # not inside a critical section this time: make new ones and try again
    done.clear()
    lk = memlock.lock(mine)
    sb = memlock.SecureBuffer(32, backend="anonymous")
    with sb.view() as v:
        v[:] = b"k" * 32
        where = address_of(v)
signal.setitimer(signal.ITIMER_REAL, 0)
wiped = ctypes.string_at(where, 32) == bytes(32)  # at once, inside the handler
state = [sb.closed, lk.locked]
memlock.lock(buf, 0, PAGE).unlock()  # the next call releases what was deferred
print(json.dumps({"inside_critical": bool(inside and inside[-1]), "wiped": wiped,
                  "state": state, "pages": page_states([address_of(mine)]),
                  "vmlck_back": vmlck() == base}))
"""


def test_a_handler_that_closes_and_unlocks_inside_memlock_does_not_deadlock(
        lock_path: str) -> None:
    """A signal handler that wipes a secret and unlocks (cleanup on SIGTERM, say) may land
    while memlock holds a mutex in the same thread. With the C module's Mutex, close() wipes
    at once and unlock() is deferred to memlock's next call; pure Python would wait for
    itself (documented: see memlock/_critical.py)."""
    if lock_path == "python":
        pytest.skip("pure Python cannot tell a mutex its own thread holds (documented)")
    try:
        proc = run_child(HANDLER_CLOSES, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("a handler that calls memlock deadlocked")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out == {"inside_critical": True, "wiped": True, "state": [True, False],
                   "pages": ["none"], "vmlck_back": True}, out
