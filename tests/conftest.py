"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memlock import _lock


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
