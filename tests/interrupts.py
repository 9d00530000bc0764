"""Deterministic interrupt injection: KeyboardInterrupt at the N-th event inside memlock.

CPython runs signal handlers between bytecodes (at function entry, loop back-edges, after
calls), so an exception can surface at almost any line. A trace function reaches every
one of those points, and more: :class:`Injector` raises at the N-th ``call`` or ``line``
event of a frame whose code lives in the memlock package. :func:`every_interrupt` runs
an operation with N = 1, 2, ... until it completes without reaching N, and after each
run has the caller undo what it got and checks the invariants through the kernel.

Only the thread that runs the operation is traced (as only the main thread runs signal
handlers); C code (the fast path) has no events and cannot be interrupted.
"""

from __future__ import annotations

import gc
import linecache
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import memlock

PACKAGE = str(Path(memlock.__file__).resolve().parent)


class Injected(KeyboardInterrupt):
    """The injected interrupt (a KeyboardInterrupt, as Ctrl-C gives)."""


class Injector:
    """A trace function that raises :class:`Injected` at the ``n``-th memlock event."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.where = ""

    @property
    def fired(self) -> bool:
        return self.seen >= self.n

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event not in ("call", "line"):
            return self
        if not frame.f_code.co_filename.startswith(PACKAGE):
            return None  # no line events outside memlock; calls into it still come here
        self.seen += 1
        if self.seen == self.n:
            self.where = f"{frame.f_code.co_filename}:{frame.f_lineno} ({event})"
            raise Injected(self.where)
        return self


class Unraisable:
    """Notes the exceptions raised where Python cannot propagate them (finalizers).

    Only their descriptions are kept: the exception objects would keep their frames, and
    so the objects those frames refer to, alive.
    """

    def __init__(self) -> None:
        self.unexpected: list[str] = []

    def __call__(self, info: Any) -> None:
        if not isinstance(info.exc_value, Injected):
            self.unexpected.append(f"{info.exc_value!r} in {info.object!r}")


def run_injected(n: int, op: Callable[[], None]) -> Injector:
    """Run ``op`` with an injection at memlock event ``n``.

    The interrupt is caught and dropped, traceback and all (a caller that handled Ctrl-C
    keeps no frame of the operation alive); any other exception propagates.
    """
    inj = Injector(n)
    hook = Unraisable()
    old_hook = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings():
            # An interrupted operation may drop a Lock it made: its finalizer warns.
            warnings.simplefilter("ignore", ResourceWarning)
            sys.settrace(inj)
            try:
                op()
            except Injected:
                pass
            finally:
                sys.settrace(None)
    finally:
        sys.unraisablehook = old_hook
    assert not hook.unexpected, f"unraisable {hook.unexpected} at event {n}"
    return inj


def every_interrupt(op: Callable[[], None], undo: Callable[[int], None],
                    check: Callable[[int, str], None], *, limit: int = 5000,
                    step: int = 1) -> int:
    """Interrupt ``op`` at each of its memlock events in turn; returns how many there were.

    After the run interrupted at event ``n``, ``undo(n)`` releases or drops what ``op``
    got (untraced) and ``check(n, where)`` asserts the invariants. Ends with the first run
    that completes without reaching its injection point. ``step`` > 1 samples every
    ``step``-th event instead (for operations too slow to repeat thousands of times).
    """
    for n in range(1, limit * step, step):
        inj = run_injected(n, op)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            undo(n)
            gc.collect()
        check(n, inj.where)
        if not inj.fired:
            return inj.seen
    raise AssertionError(f"the operation still had events after {limit} injections")


def responsive(fn: Callable[[], None], timeout: float = 10.0) -> None:
    """Run ``fn`` in another thread: it must finish in ``timeout`` s (no mutex left held)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "another thread's memlock call hangs: a mutex was left held"
    if errors:
        raise errors[0]


class interrupt_at:  # a context manager: ``with interrupt_at(...):``
    """Raise :class:`Injected` once, at the line event of memlock function ``func`` whose
    source line contains ``text`` (its ``nth`` occurrence); for regression tests of one
    known point."""

    def __init__(self, func: str, text: str, nth: int = 1) -> None:
        self.func, self.text, self.nth = func, text, nth
        self.fired = False

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if not code.co_filename.startswith(PACKAGE):
            return None
        if (event == "line" and not self.fired and code.co_name == self.func
                and self.text in linecache.getline(code.co_filename, frame.f_lineno)):
            self.nth -= 1
            if self.nth == 0:
                self.fired = True
                raise Injected(f"{code.co_filename}:{frame.f_lineno}")
        return self._trace

    def __enter__(self) -> interrupt_at:
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)
