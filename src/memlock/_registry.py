"""Per-page reference counts: make locks nest, all or nothing, thread- and fork-safe.

The kernels of every seed document keep one bit per page: one munlock undoes any number of
mlocks. The registry keeps, for every page this process locked through memlock, how many
live locks hold it, split into *full* locks (mlock) and *on-fault* locks (mlock2
MLOCK_ONFAULT). The kernel is asked only on transitions:

* full count 0 -> 1: mlock (also over on-fault pages, which it populates);
* on-fault count 0 -> 1 with no full lock: mlock2(MLOCK_ONFAULT);
* full count 1 -> 0: munlock, or back to on-fault if on-fault locks remain;
* on-fault count 1 -> 0 with no full lock: munlock.

Counts live in a breakpoint map: sorted page-aligned keys, each with the (full, onfault)
pair that holds from it up to the next key; zero beyond the last. Ranges are few, so the
map stays small whatever the sizes locked.

All or nothing: a lock that fails part way undoes the kernel calls it made (Linux leaves
the part before a hole locked; see DESIGN.md §3) and changes no count.

A mutex serialises every change, kernel calls included, so two threads can never unlock
each other's pages in the gap between a count and its syscall. In a forked child the map
is emptied (the kernel does not inherit locks) and the generation bumps, so inherited
Lock objects read as unlocked and unlocking them is a no-op.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import pairwise

from ._parallel import run_parallel
from ._platform import Backend
from .errors import MemlockError

TYPE_CHECKING = False  # typing costs ~12 ms at import; mypy reads the first branch
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Protocol
else:
    Protocol = object


class Mutex(Protocol):
    """What the registry needs of its mutex (threading.Lock has it)."""

    def acquire(self, blocking: bool = ...) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None: ...

__all__ = ["FULL", "ONE_FULL", "ONFAULT", "ZERO", "Mutex", "PageRegistry"]

FULL, ONFAULT = 0, 1
#: Counts (full, onfault) of a page nobody holds, and of one held by one full lock.
ZERO = (0, 0)
ONE_FULL = (1, 0)
_NONE, _ONF, _FULL = 0, 1, 2  # kernel states

#: Runs at least this long are populated from several threads before they are locked.
PARALLEL_MIN_BYTES = 64 * 2**20
#: Size of each populate chunk handed to a thread.
PARALLEL_CHUNK_BYTES = 4 * 2**20


def _kernel_state(value: tuple[int, int]) -> int:
    return _FULL if value[0] else (_ONF if value[1] else _NONE)


def _merge_runs(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Join adjacent (start, end, tag) runs that share a tag."""
    out: list[tuple[int, int, int]] = []
    for s, e, tag in runs:
        if out and out[-1][1] == s and out[-1][2] == tag:
            out[-1] = (out[-1][0], e, tag)
        else:
            out.append((s, e, tag))
    return out


class PageRegistry:
    """The process-wide page reference counts. Use the module's ``REGISTRY``."""

    def __init__(self, backend: Backend, mutex_type: Callable[[], Mutex] = threading.Lock) -> None:
        self._backend = backend
        #: Makes the mutex (again in a forked child): threading.Lock, or the C fast path's
        #: Mutex, which that path takes without a Python call.
        self._mutex_type = mutex_type
        # The libc calls themselves (0 or errno) for the fast paths: one frame less each,
        # and cheaper arguments; only ever called with the mutex held.
        self._libc_mlock, self._libc_munlock = backend.libc.serial_lock_calls()
        self._mutex = mutex_type()
        self._keys: list[int] = []
        self._vals: list[tuple[int, int]] = []
        self.generation = 0
        #: MCL_* flags of the lock_all() in force (0: none), and the mappings that existed
        #: when it was called (None where the OS cannot list them).
        self._lock_all_flags = 0
        self._lock_all_snapshot: list[tuple[int, int]] | None = None
        #: Releases queued by finalizers, which must never wait on the mutex (the thread
        #: running a finalizer may be the one holding it): (start, end, mode, gen, cleanup).
        self._pending: list[tuple[int, int, int, int, Callable[[], None]]] = []
        self.parallel_workers = max(1, min(os.cpu_count() or 1, 16))

    # -- breakpoint map --------------------------------------------------------------

    def _split(self, x: int) -> int:
        keys = self._keys
        i = bisect_left(keys, x)
        if i < len(keys) and keys[i] == x:
            return i
        keys.insert(i, x)
        self._vals.insert(i, self._vals[i - 1] if i else ZERO)
        return i

    def _compact(self, lo: int, hi: int) -> None:
        """Drop keys in [lo, hi] that repeat the value before them."""
        keys, vals = self._keys, self._vals
        for k in range(min(hi, len(keys) - 1), max(lo, 0) - 1, -1):
            if vals[k] == (vals[k - 1] if k else ZERO):
                del keys[k], vals[k]

    def counts(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """(start, end, full, onfault) segments over [start, end), for tests and status."""
        with self._mutex:
            keys, vals = self._keys, self._vals
            points = [start, *(k for k in keys if start < k < end), end]
            out = []
            for a, b in pairwise(points):
                idx = bisect_right(keys, a) - 1
                full, onf = vals[idx] if idx >= 0 else ZERO
                out.append((a, b, full, onf))
            return out

    def held_ranges(self) -> list[tuple[int, int, int]]:
        """(start, end, kernel state) of every range memlock holds locked."""
        with self._mutex:
            return self._held_ranges()

    def _held_ranges(self) -> list[tuple[int, int, int]]:
        runs = [
            (self._keys[k], self._keys[k + 1], _kernel_state(self._vals[k]))
            for k in range(len(self._keys) - 1)
            if self._vals[k] != ZERO
        ]
        return _merge_runs(runs)

    # -- kernel calls ----------------------------------------------------------------

    def _apply(self, start: int, end: int, state: int) -> None:
        """Make the kernel's state of [start, end) equal ``state``."""
        backend = self._backend
        if state == _NONE:
            backend.munlock(start, end - start)
        elif state == _ONF:
            backend.mlock_onfault(start, end - start)
        else:
            if end - start >= PARALLEL_MIN_BYTES and self.parallel_workers > 1:
                self._parallel_populate(start, end)
            backend.mlock(start, end - start)

    def _parallel_populate(self, start: int, end: int) -> None:
        """Fault [start, end) in from several threads, so the mlock after it finds it present.

        Zeroing or reading pages is the cost of locking fresh memory, and one mlock call
        does it on one CPU. Populating chunks from threads (each releases the GIL in
        madvise) spreads it; the single mlock that follows then only marks pages locked.
        Best effort: any error is left for that mlock to report, and nothing here changes
        what is locked. Skipped when the lock would fail on the limit anyway.
        """
        backend = self._backend
        if not backend.privileged():
            soft, _ = backend.rlimit()
            if soft is not None and (backend.locked_bytes() or 0) + (end - start) > soft:
                return
        plan = backend.populate_plan(start, end)
        if not plan:
            return
        chunk = PARALLEL_CHUNK_BYTES
        jobs = [(s, min(s + chunk, e), advice) for s, e, advice in plan for s in range(s, e, chunk)]
        populate = backend.populate
        run_parallel(jobs, lambda job: populate(*job), self.parallel_workers)

    # -- locking -----------------------------------------------------------------------

    def acquire(self, start: int, end: int, mode: int) -> int:
        """Add one ``mode`` lock on the pages [start, end); returns the generation.

        Raises:
            MemlockError: The kernel refused; nothing changed (kernel and counts).
        """
        with self._mutex:
            if self._pending:
                self._drain()
            if start == end:
                return self.generation
            keys, vals = self._keys, self._vals
            i = bisect_left(keys, start)
            if (i == len(keys) or keys[i] >= end) and (i == 0 or vals[i - 1] == ZERO):
                # Fast path: the whole range lies in a region nobody holds.
                value = (1, 0) if mode == FULL else (0, 1)
                if mode == FULL and end - start < PARALLEL_MIN_BYTES:
                    try:
                        err = self._libc_mlock(start, end - start)
                    except BaseException:  # e.g. KeyboardInterrupt as the call returned
                        self._undo([(start, end, _NONE)])
                        raise
                    if err:
                        raise self._fresh_lock_failed(start, end, err)
                else:
                    try:
                        self._apply(start, end, _FULL if mode == FULL else _ONF)
                    except MemlockError as exc:
                        self._undo([(start, end, _NONE)])
                        raise self._failure("mlock" if mode == FULL else "mlock2",
                                            exc.errno or 0, start, end, end - start) from None
                if i < len(keys) and keys[i] == end:
                    keys.insert(i, start)
                    vals.insert(i, value)
                    if vals[i + 1] == value:
                        del keys[i + 1], vals[i + 1]
                else:
                    keys[i:i] = (start, end)
                    vals[i:i] = (value, ZERO)
                return self.generation
            i = self._split(start)
            j = self._split(end)
            keys, vals = self._keys, self._vals
            runs = []
            for k in range(i, j):
                full, onf = vals[k]
                if full == 0 and (mode == FULL or onf == 0):
                    runs.append((keys[k], keys[k + 1], _ONF if onf else _NONE))
            done: list[tuple[int, int, int]] = []
            target = _FULL if mode == FULL else _ONF
            try:
                for s, e, before in _merge_runs(runs):
                    done.append((s, e, before))
                    self._apply(s, e, target)
            except MemlockError as exc:
                self._undo(done)
                self._compact(i - 1, j + 1)
                requested = sum(e - s for s, e, _ in runs)
                raise self._failure("mlock" if target == _FULL else "mlock2",
                                    exc.errno or 0, start, end, requested) from None
            except BaseException:
                self._undo(done)
                self._compact(i - 1, j + 1)
                raise
            for k in range(i, j):
                full, onf = vals[k]
                vals[k] = (full + 1, onf) if mode == FULL else (full, onf + 1)
            self._compact(i - 1, j + 1)
            return self.generation

    def _fresh_lock_failed(self, start: int, end: int, err: int) -> MemlockError:
        """Undo a failed mlock of fresh pages [start, end); returns the exception to raise.

        Mutex held. Also called by the C fast path (memlock/_speedups.c).
        """
        self._undo([(start, end, _NONE)])
        return self._failure("mlock", err, start, end, end - start)

    def _failure(self, op: str, err: int, start: int, end: int,
                 requested: int) -> MemlockError:
        """The exception for a failed lock of [start, end), after it was undone."""
        exc = self._backend.lock_error(op, err, requested)
        if type(exc) is MemlockError:
            why = self._backend.explain_range(start, end)
            if why:
                exc.strerror = f"{op}: {os.strerror(err)}: {why}"
        return exc

    def _undo(self, done: list[tuple[int, int, int]]) -> None:
        """Put ranges back in their former kernel state, best effort."""
        for s, e, before in done:
            for ps, pe in self._not_kept(s, e):
                self._restore(ps, pe, before)

    def _not_kept(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) that no lock_all() in force keeps locked.

        MCL_CURRENT|MCL_FUTURE keep everything; MCL_CURRENT alone the mappings that existed
        at lock_all() time; MCL_FUTURE alone those made since. Where the OS cannot list its
        mappings, a partial lock_all keeps nothing: memlock never leaks a lock.
        """
        flags = self._lock_all_flags
        if not flags:
            return [(start, end)]
        consts = self._backend.constants
        current = flags & consts.get("MCL_CURRENT", 1)
        future = flags & consts.get("MCL_FUTURE", 2)
        if current and future:
            return []
        snapshot = self._lock_all_snapshot
        if snapshot is None:
            return [(start, end)]
        inside = [(max(lo, start), min(hi, end)) for lo, hi in snapshot
                  if lo < end and hi > start]
        if future:  # mappings made since lock_all() are kept: unlock the old ones
            return inside
        out, pos = [], start  # MCL_CURRENT: the old mappings are kept: unlock the rest
        for lo, hi in inside:
            if lo > pos:
                out.append((pos, lo))
            pos = max(pos, hi)
        if pos < end:
            out.append((pos, end))
        return out

    def _restore(self, start: int, end: int, state: int) -> None:
        """Set [start, end) to ``state``, subdividing around holes.

        A failed mlock may leave a range partly locked, and over a hole munlock fails: on
        Linux after unlocking up to the hole, on the BSDs without changing anything. Halving
        on failure reaches every mapped page in O(holes x log(pages)) calls.
        """
        try:
            if state == _NONE:
                self._backend.munlock(start, end - start)
            else:
                self._apply(start, end, state)
        except MemlockError:
            page = self._backend.page_size
            if end - start <= page:
                return
            mid = start + (end - start) // page // 2 * page
            self._restore(start, mid, state)
            self._restore(mid, end, state)

    def release(self, start: int, end: int, mode: int, generation: int) -> bool:
        """Drop one ``mode`` lock on [start, end). False if it predates a fork (no-op)."""
        with self._mutex:
            if self._pending:
                self._drain()
            return self._release_held(start, end, mode, generation)

    def release_soon(self, start: int, end: int, mode: int, generation: int,
                     cleanup: Callable[[], None]) -> None:
        """:meth:`release` for finalizers: never blocks, then runs ``cleanup``.

        Done now if the mutex is free, else by whichever call takes the mutex next.
        """
        self._pending.append((start, end, mode, generation, cleanup))
        if self._mutex.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._mutex.release()

    def _drain(self) -> None:
        """Apply the queued finalizer releases (mutex held)."""
        while self._pending:
            start, end, mode, generation, cleanup = self._pending.pop()
            try:
                self._release_held(start, end, mode, generation)
            finally:
                cleanup()

    def _release_held(self, start: int, end: int, mode: int, generation: int) -> bool:
        if generation != self.generation:
            return False
        if start == end:
            return True
        keys, vals = self._keys, self._vals
        i = bisect_left(keys, start)
        value = (1, 0) if mode == FULL else (0, 1)
        if (
            i + 1 < len(keys) and keys[i] == start and keys[i + 1] == end
            and vals[i] == value and (i == 0 or vals[i - 1] == ZERO)
        ):
            # Fast path: the only lock on an isolated range.
            if vals[i + 1] == ZERO:
                del keys[i : i + 2], vals[i : i + 2]
            else:
                del keys[i], vals[i]
            if not self._lock_all_flags:
                try:
                    self._libc_munlock(start, end - start)  # pinned pages: cannot fail
                except BaseException:  # interrupted around the call: make sure
                    self._libc_munlock(start, end - start)
                    raise
                return True
            changes = [(start, end, _NONE)]
        else:
            i = self._split(start)
            j = self._split(end)
            changes = []
            for k in range(i, j):
                old = vals[k]
                new = (old[0] - 1, old[1]) if mode == FULL else (old[0], old[1] - 1)
                if min(new) < 0:
                    raise AssertionError("memlock registry underflow")  # a bug, not input
                vals[k] = new
                before, after = _kernel_state(old), _kernel_state(new)
                if before != after:
                    changes.append((keys[k], keys[k + 1], after))
            self._compact(i - 1, j + 1)
        for s, e, state in _merge_runs(changes):
            for ps, pe in self._not_kept(s, e):
                try:
                    self._apply(ps, pe, state)
                except MemlockError:
                    pass  # the pages are pinned, so this cannot happen; never leak counts
        return True

    # -- whole process -------------------------------------------------------------------

    def lock_all(self, flags: int) -> None:
        """mlockall; while it holds, releasing a Lock leaves what it keeps locked."""
        with self._mutex:
            if self._pending:
                self._drain()
            snapshot = self._backend.mapped_ranges()
            self._backend.mlockall(flags)
            self._lock_all_flags = flags
            self._lock_all_snapshot = snapshot

    def unlock_all(self) -> None:
        """munlockall, then re-lock what live Locks still hold."""
        with self._mutex:
            if self._pending:
                self._drain()
            self._backend.munlockall()
            self._lock_all_flags = 0
            self._lock_all_snapshot = None
            for s, e, state in self._held_ranges():
                self._apply(s, e, state)

    def run_locked(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` with the registry mutex held (used by features that remap pages)."""
        with self._mutex:
            fn()

    def _after_fork_in_child(self) -> None:
        self._mutex = self._mutex_type()
        self._keys = []
        self._vals = []
        self.generation += 1
        self._lock_all_flags = 0  # MCL_FUTURE is not inherited either
        self._lock_all_snapshot = None
        # Queued releases stay: in the child they are no-ops (old generation) that still
        # release their buffer exports.
