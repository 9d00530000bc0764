"""lock(): nesting, all-or-nothing locks on any Python buffer."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from ._buffer import fast_address, pin
from ._context import ReleasedOnExit
from ._critical import Reentered, new_mutex, speedups
from ._pages import PAGE_SIZE, SIZE_MAX, as_size, page_span
from ._platform import BACKEND, FORK_WATCH, REGISTRY_SLOT
from ._registry import (
    HANDED_OUT,
    HELD,
    MODE_FULL,
    MODE_ONFAULT,
    NOT_HELD,
    ONE_FULL,
    PARALLEL_MIN_BYTES,
    RELEASED,
    ZERO,
    HoldRecord,
    PageRegistry,
    watch_collections,
)
from .errors import MemlockError, UnsupportedOperation

__all__ = ["REGISTRY", "Lock", "fast_path_active", "lock"]

#: The optional C module (None: not built, or MEMLOCK_PURE_PYTHON set).
_speedups = speedups

#: The one registry of this process. With the C module, its mutex is the C one.
REGISTRY = PageRegistry(BACKEND, new_mutex, FORK_WATCH)
watch_collections(REGISTRY)

_release: Callable[[HoldRecord], None] = REGISTRY.release
#: The C fast path's lock(obj, offset, length) -> Lock | None, when in use (see _use_c).
_fast_lock: Callable[[object, object, object], Lock | None] | None = None
_new = object.__new__


class Lock(ReleasedOnExit):
    """A held lock on the pages of a buffer. Returned by :func:`lock`; a context manager.

    While held, the object's memory cannot move or be freed (its buffer export is held: a
    bytearray cannot resize, an mmap cannot close). Locks nest: pages shared with other
    Locks stay locked until the last one is released.

    Attributes:
        address: Page-aligned address of the first locked page.
        nbytes: Bytes of the whole pages covered.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    # The C fast path makes Locks without calling Python code and sets the same slots
    # (new_lock in _speedups.c): keep the two in step.
    __slots__ = ("__weakref__", "_hold", "_mode", "_pinned", "address", "nbytes")

    _hold: HoldRecord | None
    _pinned: memoryview | None
    _mode: int
    address: int
    nbytes: int

    def __init__(self) -> None:
        raise TypeError("Locks are made by memlock.lock()")

    @property
    def locked(self) -> bool:
        """True until unlocked; False in a forked child (locks are not inherited)."""
        hold = self._hold
        if hold is None:
            return False
        return hold.state in (HANDED_OUT, HELD) and (
            hold.generation == REGISTRY.current_generation())

    @property
    def onfault(self) -> bool:
        """Pages lock as they are first touched (MLOCK_ONFAULT)."""
        return self._mode == MODE_ONFAULT

    def unlock(self) -> None:
        """Release this lock (idempotent). Pages other Locks hold stay locked."""
        hold = self._hold
        if hold is not None:
            try:
                _release(hold)
            except Reentered:  # called by a signal handler or finalizer that interrupted
                REGISTRY.queue(hold)  # memlock in this thread: released at its next call
            self._hold = None  # the hold is done: no callback when this Lock dies...
            del hold  # ...not even while this frame is cleared (``self`` goes first)
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            pinned.release()  # the buffer export goes

    def _release_on_exit(self) -> None:
        self.unlock()

    def __del__(self) -> None:
        try:
            hold = self._hold
        except AttributeError:  # never filled in
            return
        if hold is None:
            return
        try:  # the warning may raise (-W error, a signal): release anyway
            if hold.state == HANDED_OUT and hold.generation == REGISTRY.generation:
                warnings.warn(
                    f"unreleased {self!r}; use unlock() or a with block",
                    ResourceWarning,
                    stacklevel=2,
                    source=self,
                )
        finally:
            self._release_soon()

    def _release_soon(self) -> None:
        """Release now if that needs no wait for another thread (for finalizers).

        A finalizer may run anywhere, even in the thread that holds the registry's mutex.
        If the release cannot happen now, this Lock's death queues its hold (see
        memlock._registry: Holds).
        """
        hold = self._hold
        if hold is not None and REGISTRY.release_soon(hold):
            self._hold = None

    def __repr__(self) -> str:
        state = "locked" if self.locked else "unlocked"
        kind = " onfault" if self._mode == MODE_ONFAULT else ""
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
        TypeError: ``obj`` is not a buffer, offset/length are not integers, or
            ``onfault`` is not a bool.
        ValueError: offset/length fall outside the object.
        LockPermissionError: This process may not lock memory at all.
        LockLimitError: Over RLIMIT_MEMLOCK (numbers and the fix in the message).
        UnsupportedOperation: ``onfault`` on an OS without it.
        MemlockError: Any other refusal. On every failure nothing stays locked.
    """
    if onfault is False:
        if _fast_lock is not None:
            held = _fast_lock(obj, offset, length)
            if held is not None:
                return held
        mode = MODE_FULL
    elif onfault is True:
        if not BACKEND.supports_onfault:
            raise UnsupportedOperation(f"lock on fault is not available on {BACKEND.name}")
        mode = MODE_ONFAULT
    else:
        raise TypeError(f"onfault must be a bool, not {type(onfault).__name__}")
    off = offset if type(offset) is int and 0 <= offset <= SIZE_MAX else as_size(offset, "offset")
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
    except BaseException:
        pinned.release()
        raise
    start, end = page_span(base + off, n)
    # The Lock and its hold exist before anything is counted: whatever happens from here,
    # something owns what the registry counts (see _registry: Interrupts).
    held = _new(Lock)
    held._pinned = pinned
    held._mode = mode
    held.address = start
    held.nbytes = end - start
    hold = held._hold = REGISTRY.new_hold(held, start, end, mode)
    try:
        REGISTRY.acquire(hold)
    except MemlockError:  # released: let the export go now, not with the traceback
        held._pinned = None
        pinned.release()
        raise
    return held


def fast_path_active() -> bool:
    """Whether ``lock()``/``unlock()`` run through the C module now."""
    return _fast_lock is not None


def _c_reads_what_is_here() -> bool:
    """The C module's handshake: every name it reads exists, and its constants are ours.

    _critical.py already refused a module built for another layout; this catches a layout
    changed without its number bumped (tests/test_c_handshake.py checks the names too).
    """
    assert _speedups is not None
    missing = [name for name in _speedups.REGISTRY_ATTRIBUTES if not hasattr(REGISTRY, name)]
    if (not missing and tuple(Lock.__slots__) == _speedups.LOCK_SLOTS
            and _speedups.MODE_FULL == MODE_FULL
            and _speedups.HOLD_STATES == (NOT_HELD, HELD, HANDED_OUT, RELEASED)):
        return True
    warnings.warn("memlock: the C fast path does not match this registry "
                  f"(missing {missing or 'nothing'}; slots or constants differ otherwise): "
                  "using the pure-Python path", RuntimeWarning, stacklevel=2)
    return False


def _use_c(enable: bool) -> bool:
    """Route lock()/unlock() through the C fast path (memlock._speedups) or not.

    The C path handles only the common case (one full lock on pages nobody holds, and its
    release) and hands everything else to the Python registry; both share its data and
    mutex. Returns whether the C path is now in use: False if it was not built, or if
    MEMLOCK_PURE_PYTHON was set when memlock was imported.
    """
    global _fast_lock, _release
    fast = None
    if enable and _speedups is not None and _c_reads_what_is_here():
        fork_byte = FORK_WATCH.address + REGISTRY_SLOT if FORK_WATCH.address else 0
        fast = _speedups.FastPath(REGISTRY, Lock, ZERO, ONE_FULL, PAGE_SIZE, PARALLEL_MIN_BYTES,
                                  fork_byte)
    _fast_lock = fast.lock if fast is not None else None
    _release = fast.release if fast is not None else REGISTRY.release
    return fast is not None


_use_c(True)
