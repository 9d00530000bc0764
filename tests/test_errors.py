"""memlock's exception types (errors.py) and how a backend's errno becomes one of them.

The errors of each feature under a limit are tested with the feature (test_limits.py,
test_errors_zero_limit.py, test_errors_max_map_count.py, test_platforms.py).
"""

from __future__ import annotations

import errno

import memlock


def test_error_hierarchy() -> None:
    assert issubclass(memlock.MemlockError, OSError)
    assert issubclass(memlock.LockLimitError, memlock.MemlockError)
    assert issubclass(memlock.LockPermissionError, memlock.MemlockError)
    assert issubclass(memlock.LockPermissionError, PermissionError)
    assert issubclass(memlock.UnsupportedOperation, memlock.MemlockError)
    assert not issubclass(memlock.LockLimitError, BlockingIOError)
    e = memlock.LockLimitError(errno.EAGAIN, "x", requested=1, limit=2, locked=3, hint="h")
    assert type(e) is memlock.LockLimitError and e.errno == errno.EAGAIN
    assert (e.requested, e.limit, e.locked, e.hint) == (1, 2, 3, "h") and "h" in str(e)
    assert memlock.UnsupportedOperation("no").errno == errno.ENOSYS


def test_eagain_from_the_kernel_is_a_limit_error_not_blocking_io() -> None:
    from memlock._platform import BACKEND

    exc = BACKEND.lock_error("mlock", errno.EAGAIN, 4096)
    assert type(exc) is memlock.LockLimitError and exc.hint
