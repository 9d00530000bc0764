"""lock(): nesting, all-or-nothing locks on any Python buffer."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable

from ._buffer import fast_address, pin
from ._context import ReleasedOnExit
from ._pages import PAGE_SIZE, SIZE_MAX, as_size
from ._platform import BACKEND
from ._registry import FULL, ONE_FULL, ONFAULT, PARALLEL_MIN_BYTES, ZERO, PageRegistry
from .errors import UnsupportedOperation

__all__ = ["REGISTRY", "Lock", "lock"]

#: MEMLOCK_PURE_PYTHON is set: no C at all (no _speedups.Mutex, no fast path).
PURE_PYTHON_REQUESTED = os.environ.get("MEMLOCK_PURE_PYTHON", "") not in ("", "0")
try:  # the optional C fast path (see _use_c)
    if PURE_PYTHON_REQUESTED:
        raise ImportError("MEMLOCK_PURE_PYTHON")
    from . import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]

#: The one registry of this process. With the C fast path, its mutex is the C one.
REGISTRY = PageRegistry(BACKEND, threading.Lock if _speedups is None else _speedups.Mutex)
os.register_at_fork(after_in_child=REGISTRY._after_fork_in_child)

_acquire = REGISTRY.acquire
_release: Callable[[int, int, int, int], bool] = REGISTRY.release
#: The C fast path's lock(obj, offset, length) -> Lock | None, when in use (see _use_c).
_fast_lock: Callable[[object, object, object], Lock | None] | None = None


class Lock(ReleasedOnExit):
    """A held lock on the pages of a buffer. Returned by :func:`lock`; a context manager.

    While held, the object's memory cannot move or be freed (its buffer export is held: a
    bytearray cannot resize, an mmap cannot close). Locks nest: pages shared with other
    Locks stay locked until the last one is released.

    Attributes:
        address: Page-aligned address of the first locked page.
        nbytes: Bytes of the whole pages covered.
    """

    __slots__ = ("_generation", "_mode", "_pinned", "address", "nbytes")

    def __init__(self, pinned: memoryview, start: int, end: int, mode: int, gen: int) -> None:
        # The C fast path makes Locks without calling this and sets the same five slots
        # (new_lock in _speedups.c): keep the two in step.
        self._pinned: memoryview | None = pinned
        self._mode = mode
        self._generation = gen
        self.address = start
        self.nbytes = end - start

    @property
    def locked(self) -> bool:
        """True until unlocked; False in a forked child (locks are not inherited)."""
        return self._pinned is not None and self._generation == REGISTRY.generation

    @property
    def onfault(self) -> bool:
        """Pages lock as they are first touched (MLOCK_ONFAULT)."""
        return self._mode == ONFAULT

    def unlock(self) -> None:
        """Release this lock (idempotent). Pages other Locks hold stay locked."""
        pinned, self._pinned = self._pinned, None
        if pinned is None:
            return
        try:
            start = self.address
            _release(start, start + self.nbytes, self._mode, self._generation)
        finally:
            pinned.release()

    def _release_on_exit(self) -> None:
        self.unlock()

    def _release_from_finalizer(self, then: Callable[[], None] | None = None) -> None:
        """unlock() for finalizers: never waits on the registry's mutex.

        A finalizer may run in the thread that holds the mutex (garbage collection can
        start inside any allocation), so the release is queued if the mutex is busy.
        ``then`` runs after the buffer export is released (e.g. closing its mmap).
        """
        pinned, self._pinned = self._pinned, None
        if pinned is None:
            if then is not None:
                then()
            return

        def cleanup() -> None:
            pinned.release()
            if then is not None:
                then()

        start = self.address
        REGISTRY.release_soon(start, start + self.nbytes, self._mode, self._generation, cleanup)

    def __del__(self) -> None:
        try:
            pinned = self._pinned
        except AttributeError:  # __init__ never ran
            return
        if pinned is not None:
            try:  # the warning may raise (-W error, a signal): release anyway
                if self._generation == REGISTRY.generation:
                    warnings.warn(
                        f"unreleased {self!r}; use unlock() or a with block",
                        ResourceWarning,
                        stacklevel=2,
                        source=self,
                    )
            finally:
                self._release_from_finalizer()

    def __repr__(self) -> str:
        state = "locked" if self.locked else "unlocked"
        kind = " onfault" if self._mode == ONFAULT else ""
        return f"<memlock.Lock {state}{kind} address=0x{self.address:x} nbytes={self.nbytes}>"


def lock(obj: object, offset: int = 0, length: int | None = None, *,
         onfault: bool = False) -> Lock:
    """Lock the pages holding ``obj[offset:offset+length]`` (bytes) in RAM.

    Args:
        obj: Any buffer-protocol object: bytes, bytearray, memoryview (slices too), mmap
            (read-only too), array.array, numpy array, ctypes array.
        offset: First byte of the object to lock.
        length: Bytes to lock; None means to the end of the object.
        onfault: Lock pages as they are first touched instead of faulting them all in now
            (Linux MLOCK_ONFAULT; the whole range still counts against the limit).

    Returns:
        A :class:`Lock` holding the pages and the object's buffer export.

    Raises:
        TypeError: ``obj`` is not a buffer, or offset/length are not integers.
        ValueError: offset/length fall outside the object.
        LockPermissionError: This process may not lock memory at all.
        LockLimitError: Over RLIMIT_MEMLOCK (numbers and the fix in the message).
        UnsupportedOperation: ``onfault`` on an OS without it.
        MemlockError: Any other refusal. On every failure nothing stays locked.
    """
    if _fast_lock is not None and not onfault:
        held = _fast_lock(obj, offset, length)
        if held is not None:
            return held
    off = offset if type(offset) is int and 0 <= offset <= SIZE_MAX else as_size(offset, "offset")
    if onfault and not BACKEND.supports_onfault:
        raise UnsupportedOperation(f"lock on fault is not available on {BACKEND.name}")
    try:
        pinned = memoryview(obj)  # type: ignore[arg-type]
        total = pinned.nbytes
        base = fast_address(pinned)  # writable, contiguous, non-empty: the common case
    except (TypeError, ValueError, BufferError):
        pinned, base, total = pin(obj)
    try:
        n = total - off if length is None else as_size(length, "length")
        if off > total or n > total - off:
            raise ValueError(f"offset {off} + length {n} is beyond the object's {total} bytes")
        address = base + off
        start = address - address % PAGE_SIZE
        if n:
            end = address + n
            end += -end % PAGE_SIZE
        else:
            end = start
        mode = ONFAULT if onfault else FULL
        gen = _acquire(start, end, mode)
    except BaseException:
        pinned.release()
        raise
    return Lock(pinned, start, end, mode, gen)


def _use_c(enable: bool) -> bool:
    """Route lock()/unlock() through the C fast path (memlock._speedups) or not.

    The C path handles only the common case (one full lock on pages nobody holds, and its
    release) and hands everything else to the Python registry; both share its data and
    mutex. Returns whether the C path is now in use: False if it was not built, or if
    MEMLOCK_PURE_PYTHON was set when memlock was imported.
    """
    global _fast_lock, _release
    fast = None
    if enable and _speedups is not None:
        fast = _speedups.FastPath(REGISTRY, Lock, ZERO, ONE_FULL, PAGE_SIZE, PARALLEL_MIN_BYTES)
    _fast_lock = fast.lock if fast is not None else None
    _release = fast.release if fast is not None else REGISTRY.release
    return fast is not None


_use_c(True)
