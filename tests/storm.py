"""A real signal storm over memlock: SIGALRM every 20-100 µs, whose handler raises.

Run in a child (tests/test_signal_storms.py), one path per run (MEMLOCK_PURE_PYTHON):
``python -c "from tests.storm import main; main(SECONDS, KIND)"``. The handler raises only
while the loop is inside memlock's operations (``armed``), so the loop's own bookkeeping
is not what gets interrupted. Afterwards the invariants are checked through the kernel and
one JSON line is printed.
"""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import sys
import time
from typing import Any

import memlock
from memlock._lock import REGISTRY
from memlock._secrets import _pool as _securemem

from .interrupt_scenarios import _check_pools
from .interrupts import responsive
from .kernel import PAGE, address_of, anon, page_states, vmlck


class Storm(Exception):
    """Raised by the SIGALRM handler."""


armed = [False]
stopping = [False]
delivered = [0]


def _handler(signum: int, frame: Any) -> None:
    if stopping[0]:
        return
    signal.setitimer(signal.ITIMER_REAL, random.uniform(20e-6, 100e-6))
    if armed[0]:
        delivered[0] += 1
        raise Storm


def _lock_ops(buf: Any, held: list[Any]) -> Any:
    def fresh() -> None:
        memlock.lock(buf, 2 * PAGE, 2 * PAGE).unlock()

    def nested() -> None:
        with memlock.lock(buf, 0, 4 * PAGE, onfault=True), memlock.lock(buf, PAGE, PAGE):
            pass

    def dropped() -> None:
        held.append(memlock.lock(buf, 5 * PAGE, PAGE))
        held.clear()  # its finalizer releases it

    return [fresh, fresh, nested, dropped]


def _secret_ops(kept: list[Any]) -> Any:
    def pooled() -> None:
        sb = memlock.SecureBuffer(32)
        with sb.view() as v:
            v[:] = os.urandom(32)
        sb.close()

    def dropped() -> None:
        kept.append(memlock.SecureBuffer(24))
        kept.clear()  # its finalizer wipes it

    def isolated() -> None:
        with memlock.SecureBuffer(40, isolated=True) as sb, sb.view() as v:
            v[0] = 1

    return [pooled, pooled, dropped, isolated]


def main(seconds: float, kind: str) -> None:
    random.seed(1)
    buf, other = anon(8), anon(1)
    # Load and warm everything before the baseline; a kept buffer keeps its pool chunk
    # (growing a pool takes several system calls: a storm this dense would interrupt
    # every attempt).
    memlock.SecureBuffer(40, isolated=True).close()
    responsive(lambda: memlock.lock(other).unlock())
    _securemem.trim()
    warm = memlock.SecureBuffer(32)
    base_vmlck = vmlck()
    base_live = len(REGISTRY._live)
    held: list[Any] = []
    kept: list[Any] = []
    ops = (_lock_ops(buf, held) if kind in ("locks", "both") else []) + (
        _secret_ops(kept) if kind in ("secrets", "both") else [])
    hooked: list[Any] = []
    sys.unraisablehook = hooked.append  # C: a storm cannot interrupt it
    done = interrupted = refused = 0
    signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, 50e-6)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op = ops[done % len(ops)]
        try:
            armed[0] = True
            op()
            armed[0] = False
            done += 1
        except Storm:
            armed[0] = False
            interrupted += 1
            done += 1
        except BufferError:
            # An interrupted ``with sb.view() as v`` leaves v alive in the traceback's
            # frames for a moment: close() refuses to wipe memory a view can see (the
            # buffer stays open; its finalizer wipes it once the view is gone).
            armed[0] = False
            refused += 1
            done += 1
        except memlock.MemlockError as exc:  # never expected: report it
            armed[0] = False
            raise AssertionError(f"{op.__name__}: {exc!r}") from None
    armed[0] = False
    stopping[0] = True  # a handler run pending now must not start the timer again
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    sys.unraisablehook = sys.__unraisablehook__
    unraisable = sorted({type(info.exc_value).__name__ for info in hooked})
    hooked.clear()  # (their tracebacks keep frames, and so buffers and locks, alive)
    held.clear()
    kept.clear()
    gc.collect()
    # (a) no mutex left held: other threads get through
    assert not REGISTRY._mutex.locked() and not _securemem.state.mutex.locked()
    responsive(lambda: memlock.lock(other).unlock())
    responsive(lambda: memlock.SecureBuffer(32).close())
    # (b) nothing counted or locked that no Lock owns
    assert REGISTRY.holds_pending() == 0 and len(REGISTRY._live) == base_live
    assert not _securemem.state.pending
    addr = address_of(buf)
    assert [c[2:] for c in REGISTRY.counts(addr, addr + len(buf))] == [(0, 0)]
    assert page_states([addr + i * PAGE for i in range(8)]) == ["none"] * 8
    # (c), (d) every pooled slot free and wiped, or retired; none held twice or lost
    _check_pools(_securemem, "after the storm")
    assert vmlck() == base_vmlck, (vmlck(), base_vmlck)
    warm.close()
    memlock.lock(buf).unlock()
    assert vmlck() == base_vmlck
    print(json.dumps({"ops": done, "interrupted": interrupted, "refused": refused,
                      "signals": delivered[0],
                      "unraisable": unraisable}))
