"""A garbage collection can start inside any of memlock's critical sections (at any
allocation) and run finalizers there: of Locks, LockedFiles and SecureBuffers, which call
back into memlock. They must never wait for a mutex their own thread holds."""

from __future__ import annotations

import subprocess

import pytest

from .kernel import run_child

CHILD = """
import gc, warnings
import memlock
from memlock._secrets import _pool as _securemem
from memlock._lock import REGISTRY
from tests.kernel import PAGE, anon, vmlck

warnings.simplefilter("ignore", ResourceWarning)  # the dropped buffers warn, as they should
buf = anon(8)
outer = memlock.lock(buf, 0, PAGE)  # the lock below takes the Python registry's path
base = vmlck()
for k in range(1, 300):  # move the collection point through the critical section
    gc.collect()
    sb = memlock.SecureBuffer(40, isolated=True, backend="anonymous")
    with sb.view() as v:  # the view's exporter refers back: a cycle for the collector
        v[:5] = b"hello"
    pooled = memlock.SecureBuffer(32, backend="anonymous")
    with pooled.view() as v:
        v[:5] = b"hello"
    del sb, pooled, v
    gc.set_threshold(k)
    try:
        memlock.lock(buf, 0, 4 * PAGE, onfault=True).unlock()
        memlock.SecureBuffer(24, backend="anonymous").close()
    finally:
        gc.set_threshold(700, 10, 10)
    gc.collect()
outer.unlock()
_securemem.trim()
gc.collect()
memlock.lock(buf, 0, PAGE).unlock()  # drains what finalizers queued
_securemem.trim()
print("done", vmlck() - base + PAGE, REGISTRY.holds_pending(), len(_securemem.state.pending))
"""


def test_finalizers_run_by_a_collection_inside_memlock_never_wait(lock_path: str) -> None:
    try:
        proc = run_child(CHILD, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("a finalizer run inside memlock waited for its own thread")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["done", "0", "0", "0"], proc.stdout
