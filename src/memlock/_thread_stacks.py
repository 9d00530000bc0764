"""explain_thread_errors(): why a thread cannot start once future mappings are locked.

Under mlockall(MCL_FUTURE) every new mapping is locked as it is made, a thread's stack
too: pthread_create maps the whole stack plus a guard page (8 MiB by default on Linux:
glibc takes RLIMIT_STACK at process start), the kernel charges all of it to
RLIMIT_MEMLOCK at once and populates it. When it does not fit, pthread_create fails with
EAGAIN and Python says only ``can't start new thread``. The cure is a smaller stack for
threads (``threading.stack_size``) or a higher limit; this module says so, with the
numbers, where the user asks for it.
"""

from __future__ import annotations

import errno
import threading

from . import _hints
from ._pages import PAGE_SIZE
from ._platform import BACKEND

__all__ = ["explain_thread_errors", "stack_size_setting", "thread_stack_bytes",
           "thread_start_refusal"]

#: A stack size that suits most Python threads that do not recurse deeply (the example the
#: explanation proposes).
SUGGESTED_STACK = 256 * 1024


def stack_size_setting() -> int:
    """``threading.stack_size()``'s value, left as it is (0: the C library's default).

    Called without an argument, ``threading.stack_size()`` also *sets* the size to 0: it
    is put back at once (a thread another thread starts in between gets the default).
    """
    size = threading.stack_size()
    if size:
        threading.stack_size(size)
    return size


def thread_stack_bytes() -> int | None:
    """The stack size of the next thread ``threading`` starts.

    ``threading.stack_size``'s where set, else the C library's default; None where
    neither is known.
    """
    return stack_size_setting() or BACKEND.default_thread_stack()


def thread_start_refusal() -> str | None:
    """Why starting a thread fails now, when the memory-lock limit is the reason.

    The kernel is asked directly: it must refuse a mapping of the next thread's stack
    size with EAGAIN, which (for an inaccessible anonymous mapping) only locking future
    mappings past RLIMIT_MEMLOCK does. None when that is not what happens.
    """
    stack = thread_stack_bytes()
    lim = BACKEND.limits()
    if stack is None or lim.privileged or lim.soft is None:
        return None
    cost = stack + PAGE_SIZE  # the guard page is mapped (and charged) with it
    if BACKEND.new_mapping_refused(cost) != errno.EAGAIN:
        return None
    fmt = _hints.format_size
    locked = lim.locked_bytes or 0
    room = max(0, lim.soft - locked)
    source = "threading.stack_size()" if stack_size_setting() else "the default"
    fix = BACKEND.limit_hint(locked + cost).splitlines()[0]
    return (
        f"the new thread's stack, {fmt(stack)} ({stack} bytes, {source}) plus a guard "
        f"page, is locked as it is mapped (memory locking of future mappings, mlockall "
        f"MCL_FUTURE, is in force) and counted against RLIMIT_MEMLOCK {fmt(lim.soft)} "
        f"({lim.soft} bytes), of which {fmt(room)} is left (VmLck {fmt(locked)}): room for "
        f"{room // cost} threads of this stack size, {room // (SUGGESTED_STACK + PAGE_SIZE)} "
        f"of {fmt(SUGGESTED_STACK)}. Give threads a smaller stack before starting them, "
        f"e.g. threading.stack_size({SUGGESTED_STACK}) or "
        f"memlock.lock_process(thread_stack={SUGGESTED_STACK}), or raise the limit. {fix}"
    )


#: threading's message when pthread_create fails (the only failure explained).
_REFUSED = "can't start new thread"

_state = threading.Lock()
_wrapped = threading.Thread.start  # what _explained_start calls: the start it replaced
_enabled = False
#: _explained_start is in Thread.start's chain (maybe under another library's wrapper).
_installed = False


def _explained_start(self: threading.Thread) -> None:
    """Start the thread; explain a refusal by the memory-lock limit (see below)."""
    try:
        _wrapped(self)
    except RuntimeError as exc:
        # Only the C library's refusal (not "threads can only be started once"...).
        refused = str(exc) == _REFUSED
        why = thread_start_refusal() if _enabled and refused else None
        if why is None:
            raise
        raise RuntimeError(f"{exc}: {why}") from None


def explain_thread_errors(enable: bool = True) -> None:
    """Make ``threading.Thread.start`` say why when the memory-lock limit refuses a thread.

    Once memory mapped in future is locked (:func:`memlock.lock_all` or
    :func:`memlock.lock_process` with ``future=True``), each new thread's whole stack is
    locked as it is mapped (8 MiB by default on Linux) and the kernel refuses it past
    RLIMIT_MEMLOCK: Python raises a bare ``RuntimeError: can't start new thread``. With
    this enabled, that error names the stack size, the limit, what is left, how many
    threads fit, and the fix (``threading.stack_size``, or a higher limit). It stays a
    RuntimeError; failures with another cause are not touched.

    It replaces ``threading.Thread.start`` for the whole process (every thread pool
    included), which is why it is opt-in; ``enable=False`` puts the original back (where
    nothing else replaced it since).

    Args:
        enable: Install (True) or remove (False) the explanation. Idempotent.

    Raises:
        TypeError: ``enable`` is not a bool.

    Availability: Linux (verified), where the kernel's refusal can be recognised;
    elsewhere the explanation is given when the OS refuses such a mapping with EAGAIN.
    """
    global _enabled, _installed, _wrapped
    if not isinstance(enable, bool):
        raise TypeError(f"enable must be a bool, not {type(enable).__name__}")
    with _state:
        # Wrapped by another library since, ours stays in the chain: wrapping that
        # wrapper again would make a loop (it calls ours, which would call it).
        if enable and not _installed:
            _wrapped = threading.Thread.start
            threading.Thread.start = _explained_start  # type: ignore[method-assign]
            _installed = True
        elif not enable and threading.Thread.start is _explained_start:
            threading.Thread.start = _wrapped  # type: ignore[method-assign]
            _installed = False
        _enabled = enable
