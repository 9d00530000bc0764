"""Fixtures shared by the test modules."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator

import pytest

from memlock import _lock

from .kernel import machine_changes, machine_state

#: Seconds a change of global state may take to undo itself before it counts as left behind
#: (another test run on this machine may hold a mount or swap for a moment; a leak stays).
SETTLE_S = 1.0


def c_path_built() -> bool:
    """Whether the optional C fast path (memlock._speedups) was built."""
    try:
        import memlock._speedups  # noqa: F401
    except ImportError:
        return False
    return True


def require_c_path() -> None:
    """Skip the calling test unless lock()'s C fast path is in use in this process."""
    if _lock._speedups is None:
        pytest.skip("the C fast path is not built here, or MEMLOCK_PURE_PYTHON is set")


@pytest.fixture(params=["c", "python"])
def lock_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test through lock()'s C fast path, then through the pure-Python path.

    Children started by the test inherit the choice (MEMLOCK_PURE_PYTHON).
    """
    c = request.param == "c"
    if c:
        require_c_path()
    monkeypatch.setenv("MEMLOCK_PURE_PYTHON", "0" if c else "1")
    was = _lock._fast_lock is not None
    _lock._use_c(c)
    try:
        yield request.param
    finally:
        _lock._use_c(was)


@pytest.fixture(autouse=True)
def machine_left_as_found() -> Iterator[None]:
    """After each test: swap, memlock cgroups, mounts, rlimits and sysctls are as before.

    A test that leaves one changed errors in teardown; this process's rlimits are then put
    back, so the tests after it start from the same state.
    """
    before = machine_state()
    yield
    deadline = time.monotonic() + SETTLE_S
    while changes := machine_changes(before, machine_state()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not changes:
        return
    rlimits = before["rlimits"]
    assert isinstance(rlimits, dict)
    for name, limits in rlimits.items():
        try:
            resource.setrlimit(getattr(resource, name), limits)
        except (ValueError, OSError):
            pass
    raise AssertionError("the test left the machine changed:\n  " + "\n  ".join(changes))
