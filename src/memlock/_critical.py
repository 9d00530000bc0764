"""Critical sections that no interrupt can leave locked: the only way memlock takes a mutex.

A signal handler that raises (Ctrl-C) runs between bytecodes: at function entry, loop
back-edges and after calls. ``mutex.acquire()`` followed by ``try:`` has such a point
between the two, and an exception there keeps the mutex forever. ``with mutex:`` has none,
but a *trace* function (which tests use to raise at every line) still finds lines the
``with`` statement does not cover: the ``try:`` of a nested try statement, the line event
CPython emits for the ``with`` line itself when the block ends (3.11 to 3.13), and, on
3.12, a second event on that line when an exception leaves the block. :func:`under`
therefore writes the critical section as one line, ``with mutex: ... = _guarded(fn, ...)``,
where ``_guarded`` turns what ``fn`` raises into a value: nothing but an interrupt ever
leaves the ``with`` statement as an exception, and the ``with`` gives the mutex back.

Mutexes are the C module's Mutex where it is built (``new_mutex``): it knows which thread
holds it, so a signal handler or a finalizer that calls memlock while memlock runs in the
same thread gets :data:`Reentered` (a RuntimeError) instead of waiting for itself, and
finalizers take it without a wait and without a gap (:func:`try_under`). Without the C
module (or with ``MEMLOCK_PURE_PYTHON=1``) it is ``threading.Lock``: the same ordering
guarantees hold, but such a re-entry waits forever, and a finalizer may wait if another
thread takes the mutex in the instant after it was seen free.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False  # typing costs ~12 ms at import; mypy reads the first branch
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Protocol, TypeVar

    T = TypeVar("T")

    class Mutex(Protocol):
        """threading.Lock, or the C fast path's Mutex."""

        def acquire(self, blocking: bool = ...) -> bool: ...
        def release(self) -> None: ...
        def locked(self) -> bool: ...
        def __enter__(self) -> bool: ...
        def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                     tb: TracebackType | None) -> None: ...

__all__ = ["C_LAYOUT", "PURE_PYTHON_REQUESTED", "Reentered", "new_mutex", "speedups",
           "try_under", "under"]

#: MEMLOCK_PURE_PYTHON is set: no C at all (no C Mutex, no fast path).
PURE_PYTHON_REQUESTED = os.environ.get("MEMLOCK_PURE_PYTHON", "") not in ("", "0")
#: The layout of memlock's Python objects that the C module reads (MEMLOCK_C_LAYOUT in
#: _speedups.c): bump both together whenever what the C code reads by name changes.
C_LAYOUT = 1
try:  # the optional C module (memlock/_speedups.c)
    if PURE_PYTHON_REQUESTED:
        raise ImportError("MEMLOCK_PURE_PYTHON")
    from . import _speedups as speedups
except ImportError:
    speedups = None  # type: ignore[assignment]
if speedups is not None and getattr(speedups, "LAYOUT", None) != C_LAYOUT:
    # A stale build (an old .so left beside new Python code): it would read the wrong
    # fields. Pure Python is always correct, only slower.
    import warnings

    warnings.warn(
        f"memlock: ignoring the C module {speedups.__file__}: it was built for another "
        f"version of memlock (layout {getattr(speedups, 'LAYOUT', 'unknown')}, this code "
        f"needs {C_LAYOUT}); running the pure-Python path. Rebuild it: reinstall memlock "
        "(`pip install -e .` in a checkout)", RuntimeWarning, stacklevel=2)
    speedups = None  # type: ignore[assignment]
_CMutex = None if speedups is None else speedups.Mutex
_try_call = None if speedups is None else speedups.try_call


class _NeverRaised(RuntimeError):
    """Stands for the C module's Reentered where it is not built (threading.Lock waits)."""


#: Raised instead of a wait by the thread that holds a mutex already (C module only).
Reentered: type[RuntimeError] = _NeverRaised if speedups is None else speedups.Reentered


def new_mutex() -> Mutex:
    """A mutex for memlock's state: the C module's Mutex where built, else threading.Lock."""
    return threading.Lock() if _CMutex is None else _CMutex()


def _guarded(fn: Callable[..., T], args: tuple[object, ...]
             ) -> tuple[BaseException | None, T | None]:
    try:
        return None, fn(*args)
    except BaseException as exc:  # carried out of the with statement as a value
        return exc, None


def under(mutex: Mutex, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` with ``mutex`` held; the mutex is given back whatever happens."""
    with mutex: exc, value = _guarded(fn, args)  # noqa: E701  (one line: see above)
    if exc is not None:
        try:
            raise exc
        finally:
            del exc  # no cycle through this frame
    return value  # type: ignore[return-value]


def try_under(mutex: Mutex, fn: Callable[..., object], *args: object) -> bool:
    """``fn(*args)`` with ``mutex`` held, if that needs no wait for another thread.

    For finalizers, which may run in the thread that holds the mutex (garbage collection
    can start inside any allocation) or in one that thread waits for. Returns whether
    ``fn`` ran. With the C module's Mutex, all of it happens in C: never a wait, in any
    thread.
    """
    if _try_call is not None and type(mutex) is _CMutex:
        return bool(_try_call(mutex, fn, *args))
    # threading.Lock: taken with ``with`` (acquire(False) then ``try:`` has a gap that an
    # exception can fall into). It waits only if another thread took the mutex since
    # locked() said it was free (populate workers never meet that: they run only while
    # the thread that made them holds the registry's mutex).
    if mutex.locked():
        return False
    under(mutex, fn, *args)
    return True
