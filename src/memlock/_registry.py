"""Per-page reference counts: make locks nest, all or nothing, thread-, fork- and interrupt-safe.

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

**Holds.** Every Lock owns one :class:`Hold`: the range and mode it counts, and its state.
A hold is counted exactly once and released exactly once, by :meth:`PageRegistry.release`
(``Lock.unlock``) or, when its Lock is collected unreleased, from the queue of dead holds.
Both are idempotent: releasing a hold twice, or one that was never counted, changes nothing.

**Interrupts.** A signal handler may raise between any two lines of Python (and a trace
function at any line). Three rules keep the state whole whatever line an exception lands on:

1. The mutex is only ever taken through ``_critical.under`` (or ``try_under``): one line,
   ``with mutex: return fn()``, leaves no point where an exception skips its release.
2. Each change of the map and of a hold's state is ONE statement (``_commit``): a
   multiple assignment of list slices and attributes, in which CPython runs no other Python
   code (no call, no backward jump, no function entry: the points where signal handlers
   and trace functions run).
3. The kernel never holds a lock the counts do not account for: an acquire commits its
   counts *before* mlock, a release unlocks *before* it commits. An exception in between
   leaves a counted hold whose pages may not be locked yet, or already unlocked: the range
   stays listed in ``_unsure`` (pushed in the commit that counts, popped in the statement
   after the kernel calls), and the next entry makes the kernel match the counts there
   before anything else, so a later Lock on those pages is really locked. The hold's
   owner (or the queue of dead holds) releases the hold itself later, idempotently.

A hold that dies unreleased is queued by C code that cannot be interrupted (the weakref
callback ``list.append`` here, ``tp_finalize`` of the C fast path's hold) and drained at
the next entry, by the Lock's finalizer, or after the next garbage collection.

A mutex serialises every change, kernel calls included, so two threads can never unlock
each other's pages in the gap between a count and its syscall. In a forked child (by
Python or by C: see ``_platform/_fork.py``) the map is emptied and the generation bumps,
so inherited Lock objects read as unlocked and unlocking them is a no-op.
"""

from __future__ import annotations

import gc
import os
import threading
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import pairwise

from ._critical import try_under, under
from ._platform import REGISTRY_SLOT, Backend, ForkWatch
from ._threads import run_parallel
from .errors import LockLimitError, LockPermissionError, MemlockError

TYPE_CHECKING = False  # typing costs ~12 ms at import; mypy reads the first branch
if TYPE_CHECKING:
    from typing import Protocol

    from ._critical import Mutex
else:
    Protocol = object


class HoldRecord(Protocol):
    """What the registry reads and writes of a hold (a :class:`Hold`, or the C fast path's)."""

    start: int
    end: int
    mode: int
    generation: int
    state: int


__all__ = [
    "HANDED_OUT",
    "HELD",
    "MODE_FULL",
    "MODE_ONFAULT",
    "NOT_HELD",
    "ONE_FULL",
    "RELEASED",
    "ZERO",
    "Hold",
    "HoldRecord",
    "PageRegistry",
]

#: Lock modes (the C fast path makes only MODE_FULL locks: MODE_FULL in _speedups.c).
MODE_FULL, MODE_ONFAULT = 0, 1
#: Counts (full, onfault) of a page nobody holds, and of one held by one full lock.
ZERO = (0, 0)
ONE_FULL = (1, 0)
#: What the kernel does with a page: the state the counts ask for.
NOT_LOCKED, LOCKED_ON_FAULT, LOCKED = 0, 1, 2
#: Hold states: made, not counted yet; counted; counted and returned to the caller (its
#: loss is a leak worth a ResourceWarning); released (or never to be counted).
NOT_HELD, HELD, HANDED_OUT, RELEASED = 0, 1, 2, 3

#: Runs at least this long are populated from several threads before they are locked.
PARALLEL_MIN_BYTES = 64 * 2**20
#: Size of each populate chunk handed to a thread (memory that is written: zeroed or copied).
PARALLEL_CHUNK_BYTES = 4 * 2**20


def populate_jobs(plan: list[tuple[int, int, int]], workers: int, read_advice: int | None,
                  page: int) -> list[tuple[int, int, int]]:
    """The (start, end, advice) jobs that ``workers`` threads share to prefault ``plan``.

    Memory that is written (zeroed or copied) goes in PARALLEL_CHUNK_BYTES chunks, which
    the threads share evenly. Pages read in (``read_advice``: a file's) go in at most
    ``workers`` contiguous pieces, one sequential stream a thread: the kernel's readahead
    then reads ahead of each stream, while small chunks dealt to the threads in turn make
    every fault a synchronous read around it (a cold 2 GiB directory read 35% slower so).
    """
    jobs: list[tuple[int, int, int]] = []
    for start, end, advice in plan:
        step = PARALLEL_CHUNK_BYTES
        if advice == read_advice:
            piece = -(-(end - start) // max(1, workers))
            step = max(step, -(-piece // page) * page)
        jobs += [(s, min(s + step, end), advice) for s in range(start, end, step)]
    return jobs


class Hold(weakref.ref):  # type: ignore[type-arg]
    """What one Lock holds: ``[start, end)`` in ``mode``, counted in ``generation``.

    A weak reference to its Lock whose callback queues it for release: the weakref
    machinery calls it from C when the Lock is collected, so no interrupt can skip it.
    The registry keeps every hold it has not finished with reachable (``_live``), so the
    callback runs even when the Lock dies in a reference cycle. (The Lock, not its hold,
    keeps the buffer export: a hold must not keep its Lock's cycle reachable.)
    """

    __slots__ = ("end", "generation", "mode", "start", "state")

    start: int
    end: int
    mode: int
    generation: int
    state: int

    # By identity, alive or dead (a weakref hashes its referent, and a dead one that was
    # never hashed cannot be).
    __hash__ = object.__hash__
    __eq__ = object.__eq__


def _kernel_state(value: tuple[int, int]) -> int:
    return LOCKED if value[0] else (LOCKED_ON_FAULT if value[1] else NOT_LOCKED)


def _merge_runs(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Join adjacent (start, end, tag) runs that share a tag."""
    out: list[tuple[int, int, int]] = []
    for s, e, tag in runs:
        if out and out[-1][1] == s and out[-1][2] == tag:
            out[-1] = (out[-1][0], e, tag)
        else:
            out.append((s, e, tag))
    return out


def plan_change(keys: list[int], vals: list[tuple[int, int]], start: int, end: int,
                mode: int, delta: int) -> tuple[int, int, list[int], list[tuple[int, int]],
                                                list[tuple[int, int, int]]]:
    """The new breakpoint map after adding ``delta`` (+1 or -1) ``mode`` locks on [start, end).

    Pure: changes nothing. Returns ``(i, j, new_keys, new_vals, changes)``: replacing
    ``keys[i:j]`` and ``vals[i:j]`` by the new lists gives the new map (compacted), and
    ``changes`` lists the merged ``(start, end, kernel state)`` runs whose kernel state the
    change alters, with their new state.

    Raises:
        AssertionError: A count would go below zero (a bug, never input).
    """
    i = bisect_left(keys, start)
    j = bisect_right(keys, end)
    before = vals[i - 1] if i else ZERO  # the value just before start
    value = before
    k = i
    if k < j and keys[k] == start:
        value = vals[k]
        k += 1
    points = [start]
    olds = [value]
    while k < j and keys[k] < end:
        points.append(keys[k])
        value = vals[k]
        olds.append(value)
        k += 1
    after = vals[k] if k < j else value  # the value from end on (keys[k] == end)
    points.append(end)
    new_keys: list[int] = []
    new_vals: list[tuple[int, int]] = []
    runs = []
    prev = before
    for n, old in enumerate(olds):
        new = (old[0] + delta, old[1]) if mode == MODE_FULL else (old[0], old[1] + delta)
        if new[0] < 0 or new[1] < 0:
            raise AssertionError("memlock registry underflow")
        if new != prev:
            new_keys.append(points[n])
            new_vals.append(new)
            prev = new
        state = _kernel_state(new)
        if state != _kernel_state(old):
            runs.append((points[n], points[n + 1], state))
    if after != prev:
        new_keys.append(end)
        new_vals.append(after)
    return i, j, new_keys, new_vals, _merge_runs(runs)


class PageRegistry:
    """The process-wide page reference counts. Use ``memlock._lock.REGISTRY``."""

    def __init__(self, backend: Backend, mutex_type: Callable[[], Mutex] = threading.Lock,
                 fork_watch: ForkWatch | None = None) -> None:
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
        #: An unlock_all() that has not finished: finished at the next entry.
        self._unlock_all_due = False
        #: (start, end) ranges whose kernel state an interrupted operation may have left
        #: apart from the counts: made to match them at the next entry (see Interrupts).
        self._unsure: list[tuple[int, int]] = []
        #: Holds whose owner died before releasing them; appended to by C only (weakref
        #: callbacks, the C fast path's finalizer), drained with the mutex held. The list
        #: object is never replaced: ``queue`` is bound to it.
        self._pending: list[HoldRecord] = []
        self.queue = self._pending.append
        #: The pure-Python holds not released yet (see Hold): a dict used as a set.
        self._live: dict[object, None] = {}
        self._fork_watch = fork_watch or ForkWatch()
        self._fork_page = self._fork_watch.page
        self._fork_lock = threading.Lock()
        self.parallel_workers = max(1, min(os.cpu_count() or 1, 16))

    # -- holds ---------------------------------------------------------------------------

    def new_hold(self, owner: object, start: int, end: int, mode: int) -> Hold:
        """A hold of [start, end) in ``mode`` for ``owner`` (its Lock), not counted yet."""
        hold = Hold(owner, self.queue)
        hold.start = start
        hold.end = end
        hold.mode = mode
        hold.generation = -1
        hold.state = NOT_HELD
        self._live[hold] = None
        return hold

    # -- fork ----------------------------------------------------------------------------

    def current_generation(self) -> int:
        """The generation of this process's locks (catching up after a fork first)."""
        if self._fork_watch.forked(REGISTRY_SLOT):
            self._after_fork()
        return self.generation

    def _after_fork(self) -> None:
        """Forget the parent's counts: the kernel does not inherit locks (idempotent)."""
        under(self._fork_lock, self._forget_parent)

    def _forget_parent(self) -> None:
        if not self._fork_watch.forked(REGISTRY_SLOT):
            return
        # The parent's mutex may have been held by a thread that does not exist here. The
        # C one is renewed in place (other mutexes refer to it: see _secrets/_pool.py).
        reinit = getattr(self._mutex, "reinit", None)
        if reinit is not None:
            reinit()
        else:
            self._mutex = self._mutex_type()
        self._keys.clear()
        self._vals.clear()
        self._pending.clear()  # the parent's holds: releasing them would be a no-op
        self._live.clear()
        self._lock_all_flags = 0  # MCL_FUTURE is not inherited either
        self._lock_all_snapshot = None
        self._unlock_all_due = False
        self._unsure.clear()
        self.generation += 1
        self._fork_watch.caught_up(REGISTRY_SLOT)  # last: an interrupt before it redoes all

    # -- the map -------------------------------------------------------------------------

    def counts(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """(start, end, full, onfault) segments over [start, end), for tests and status."""
        if self._fork_watch.forked(REGISTRY_SLOT):
            self._after_fork()
        return under(self._mutex, self._counts, start, end)

    def _counts(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        self._catch_up()
        return self._segments(start, end)

    def _segments(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        keys, vals = self._keys, self._vals
        points = [start, *(k for k in keys if start < k < end), end]
        out = []
        for a, b in pairwise(points):
            idx = bisect_right(keys, a) - 1
            full, onf = vals[idx] if idx >= 0 else ZERO
            out.append((a, b, full, onf))
        return out

    def holds_pending(self) -> int:
        """Holds of collected Locks not released yet (for tests)."""
        return len(self._pending)

    def _held_ranges(self) -> list[tuple[int, int, int]]:
        runs = [
            (self._keys[k], self._keys[k + 1], _kernel_state(self._vals[k]))
            for k in range(len(self._keys) - 1)
            if self._vals[k] != ZERO
        ]
        return _merge_runs(runs)

    @staticmethod
    def _commit_counted(keys: list[int], vals: list[tuple[int, int]], i: int, j: int,
                        new_keys: list[int], new_vals: list[tuple[int, int]],
                        hold: HoldRecord, unsure: list[tuple[int, int]], k: int) -> None:
        """Replace ``keys[i:j]``/``vals[i:j]``, mark ``hold`` counted and its range unsure
        (the kernel does not lock it yet): one statement."""
        span = ((hold.start, hold.end),)
        keys[i:j], vals[i:j], hold.state, unsure[k:] = new_keys, new_vals, HELD, span

    @staticmethod
    def _commit_released(keys: list[int], vals: list[tuple[int, int]], i: int, j: int,
                         new_keys: list[int], new_vals: list[tuple[int, int]],
                         hold: HoldRecord, unsure: list[tuple[int, int]], k: int) -> None:
        """Replace ``keys[i:j]``/``vals[i:j]``, mark ``hold`` released and its range sure
        again (the kernel's unlock is done): one statement."""
        keys[i:j], vals[i:j], hold.state, unsure[k:] = new_keys, new_vals, RELEASED, ()

    # -- kernel calls ----------------------------------------------------------------

    def _apply(self, start: int, end: int, state: int) -> None:
        """Make the kernel's state of [start, end) equal ``state``."""
        backend = self._backend
        if state == NOT_LOCKED:
            backend.munlock(start, end - start)
        elif state == LOCKED_ON_FAULT:
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
        jobs = populate_jobs(plan, self.parallel_workers, backend.populate_read_advice,
                             backend.page_size)
        populate = backend.populate
        run_parallel(jobs, lambda job: populate(*job), self.parallel_workers)

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
        """Set [start, end) to ``state``, best effort, subdividing around holes.

        A failed mlock may leave a range partly locked, and over a hole munlock fails: on
        Linux after unlocking up to the hole, on the BSDs without changing anything. Where
        the OS lists its mappings, each mapped part is set once; elsewhere halving on
        failure reaches every mapped page in O(holes x log(pages)) calls.
        """
        try:
            self._apply(start, end, state)
        except MemlockError:
            mapped = self._backend.mapped_ranges()
            if mapped is not None:  # one call per mapped part (Linux: /proc/self/maps)
                for lo, hi in mapped:
                    if lo < end and hi > start:
                        try:
                            self._apply(max(lo, start), min(hi, end), state)
                        except MemlockError:
                            pass  # e.g. PROT_NONE: nothing of it can be locked
                return
            page = self._backend.page_size
            if end - start <= page:
                return
            mid = start + (end - start) // page // 2 * page
            self._restore(start, mid, state)
            self._restore(mid, end, state)

    def _lower(self, changes: list[tuple[int, int, int]]) -> None:
        """Apply the kernel side of a release: what no lock_all() keeps goes down."""
        for s, e, state in changes:
            for ps, pe in self._not_kept(s, e):
                self._restore(ps, pe, state)

    # -- entry ---------------------------------------------------------------------------

    def _catch_up(self) -> None:
        """With the mutex held: finish an interrupted unlock_all, make the kernel match the
        counts where an interrupted operation left it unsure, release dead holds."""
        if self._unlock_all_due:
            self._finish_unlock_all()
        if self._unsure:
            self._repair()
        if self._pending:
            self._drain()

    def _repair(self) -> None:
        """Make the kernel's state match the counts over the unsure ranges (mutex held).

        Idempotent: a range leaves the list only once it is done. A range the kernel
        refuses to lock again (over RLIMIT_MEMLOCK now, or no privilege) stays listed, and
        a later acquire of any of its pages raises that refusal (:meth:`_refused_repair`)
        rather than count on a lock that is not there.
        """
        for span in list(self._unsure):
            try:
                self._match_kernel(*span)
            except (LockLimitError, LockPermissionError):
                continue  # stays unsure; retried at each entry
            if span in self._unsure:
                self._unsure.remove(span)

    def _match_kernel(self, start: int, end: int) -> None:
        """Set the kernel's state of [start, end) to what the counts ask for.

        Raises:
            LockLimitError, LockPermissionError: Pages counted locked cannot be locked
                now. Other refusals (holes, PROT_NONE) are tolerated, as in _restore.
        """
        for s, e, full, onf in self._segments(start, end):
            state = _kernel_state((full, onf))
            if state == NOT_LOCKED:
                self._lower([(s, e, NOT_LOCKED)])
                continue
            try:
                self._apply(s, e, state)
            except (LockLimitError, LockPermissionError):
                raise
            except MemlockError:
                self._restore(s, e, state)

    def _refused_repair(self, start: int, end: int) -> None:
        """Raise the refusal of an unsure range that overlaps [start, end) (mutex held)."""
        for s, e in list(self._unsure):
            if s < end and e > start:
                self._match_kernel(s, e)  # raises the kernel's refusal again, or succeeds
                if (s, e) in self._unsure:
                    self._unsure.remove((s, e))

    # -- locking -----------------------------------------------------------------------

    def acquire(self, hold: HoldRecord) -> None:
        """Count ``hold`` and lock its pages; on success its state is HANDED_OUT.

        Raises:
            MemlockError: The kernel refused; nothing changed (kernel and counts), the
                hold is RELEASED.
        """
        page = self._fork_page  # forked() inlined: this is the hot path
        if page is None or not page[REGISTRY_SLOT]:
            self.current_generation()
        with self._mutex: failed = self._acquire(hold)  # noqa: E701  (see _critical.under)
        if failed is not None:
            try:
                raise failed
            finally:
                del failed  # no cycle through this frame

    def _acquire(self, hold: HoldRecord) -> BaseException | None:
        """acquire() with the mutex held; returns what it raised (see _critical.under)."""
        try:
            self._acquire_held(hold)
        except BaseException as exc:
            return exc
        return None

    def _acquire_held(self, hold: HoldRecord) -> None:
        start, end, mode = hold.start, hold.end, hold.mode
        if self._pending or self._unlock_all_due or self._unsure:
            self._catch_up()
            if self._unsure:  # what could not be repaired must not be counted on
                self._refused_repair(start, end)
        hold.generation = self.generation
        keys, vals, unsure = self._keys, self._vals, self._unsure
        if start == end:
            hold.state = HANDED_OUT
            return
        k = len(unsure)
        span = ((start, end),)
        i = bisect_left(keys, start)
        if (mode == MODE_FULL and end - start < PARALLEL_MIN_BYTES
                and (i == len(keys) or keys[i] >= end) and (i == 0 or vals[i - 1] == ZERO)):
            # Fast path: one full lock of a range nobody holds.
            if i < len(keys) and keys[i] == end:
                if vals[i] == ONE_FULL:  # the next range has the same counts: merge
                    keys[i], hold.state, unsure[k:] = start, HELD, span
                else:
                    one_key, one_val = (start,), (ONE_FULL,)
                    keys[i:i], vals[i:i], hold.state, unsure[k:] = one_key, one_val, HELD, span
            else:
                two_keys, two_vals = (start, end), (ONE_FULL, ZERO)
                keys[i:i], vals[i:i], hold.state, unsure[k:] = two_keys, two_vals, HELD, span
            err = self._libc_mlock(start, end - start)
            if err:
                exc = self._lock_failed(hold, "mlock", err, end - start)
                del unsure[k:]
                raise exc
            hold.state, unsure[k:] = HANDED_OUT, ()
            return
        i, j, new_keys, new_vals, changes = plan_change(keys, vals, start, end, mode, 1)
        self._commit_counted(keys, vals, i, j, new_keys, new_vals, hold, unsure, k)
        for s, e, state in changes:
            try:
                self._apply(s, e, state)
            except MemlockError as exc:
                requested = sum(ce - cs for cs, ce, _ in changes)
                failure = self._lock_failed(hold, "mlock" if state == LOCKED else "mlock2",
                                            exc.errno or 0, requested)
                del unsure[k:]
                raise failure from None
        hold.state, unsure[k:] = HANDED_OUT, ()

    def _lock_failed(self, hold: HoldRecord, op: str, err: int,
                     requested: int) -> MemlockError:
        """Release a hold whose lock failed; returns the exception to raise (mutex held)."""
        self._release_hold(hold, failed=True)
        return self._error(op, err, requested, hold.start, hold.end)

    def _fresh_lock_failed(self, start: int, end: int, err: int) -> MemlockError:
        """Undo a failed mlock of uncounted pages [start, end); the exception to raise.

        Mutex held. Called by the C fast path (memlock/_speedups.c), which counts nothing
        before its mlock succeeds and has already unlocked what the mlock left locked on
        Linux; this undoes what other systems may leave (around holes).
        """
        self._restore(start, end, NOT_LOCKED)
        return self._error("mlock", err, end - start, start, end)

    def _error(self, op: str, err: int, requested: int, start: int, end: int) -> MemlockError:
        """The exception for a failed lock of [start, end), after it was undone."""
        exc = self._backend.lock_error(op, err, requested)
        if type(exc) is MemlockError:
            why = self._backend.explain_range(start, end)
            if why:
                exc.strerror = f"{op}: {os.strerror(err)}: {why}"
        return exc

    def release(self, hold: HoldRecord) -> None:
        """Release ``hold`` (idempotent; a no-op for a hold that predates a fork)."""
        page = self._fork_page
        if page is None or not page[REGISTRY_SLOT]:
            self.current_generation()
        with self._mutex: failed = self._release(hold)  # noqa: E701  (see _critical.under)
        if failed is not None:
            try:
                raise failed
            finally:
                del failed  # no cycle through this frame

    def _release(self, hold: HoldRecord) -> BaseException | None:
        """release() with the mutex held; returns what it raised (see _critical.under)."""
        try:
            if self._pending or self._unlock_all_due or self._unsure:
                self._catch_up()
            self._release_hold(hold)
        except BaseException as exc:
            return exc
        return None

    def _release_hold(self, hold: HoldRecord, failed: bool = False) -> None:
        """Uncount ``hold`` and unlock what nothing else holds (mutex held). Idempotent.

        ``failed``: its lock failed part way, so its pages may be locked in part, around
        holes: every run is restored with :meth:`_restore`.
        """
        state = hold.state
        if ((state != HELD and state != HANDED_OUT) or hold.generation != self.generation
                or hold.start == hold.end):
            hold.state = RELEASED
            self._live.pop(hold, None)
            return
        start, end = hold.start, hold.end
        keys, vals, unsure = self._keys, self._vals, self._unsure
        k = len(unsure)
        i = bisect_left(keys, start)
        if (
            not failed and hold.mode == MODE_FULL and i + 1 < len(keys)
            and keys[i] == start and keys[i + 1] == end and vals[i] == ONE_FULL
            and (i == 0 or vals[i - 1] == ZERO)
            and not self._lock_all_flags
        ):
            # Fast path: the only lock on an isolated range. Pinned pages: cannot fail.
            j = i + 2 if vals[i + 1] == ZERO else i + 1
            unsure[k:] = ((start, end),)  # the kernel is about to differ from the counts
            self._libc_munlock(start, end - start)
            keys[i:j], vals[i:j], hold.state, unsure[k:] = (), (), RELEASED, ()  # one commit
        else:
            i, j, new_keys, new_vals, changes = plan_change(keys, vals, start, end,
                                                            hold.mode, -1)
            unsure[k:] = ((start, end),)
            self._lower(changes)
            self._commit_released(keys, vals, i, j, new_keys, new_vals, hold, unsure, k)
        self._live.pop(hold, None)

    def release_soon(self, hold: HoldRecord) -> bool:
        """:meth:`release` for finalizers: never waits for another thread's critical section.

        A finalizer may run in the thread that holds the mutex (garbage collection can
        start inside any allocation), or in one that thread waits for. Returns False if the
        hold could not be released now: its owner's death queues it then (Hold's callback).
        """
        if self._fork_watch.forked(REGISTRY_SLOT) and not try_under(  # never wait here,
                self._fork_lock, self._forget_parent):  # not even for that
            return False
        return try_under(self._mutex, self._release_or_raise, hold)

    def _release_or_raise(self, hold: HoldRecord) -> None:
        failed = self._release(hold)
        if failed is not None:
            raise failed

    def drain_soon(self) -> None:
        """Release queued dead holds now if the mutex is free (the gc callback)."""
        if self._fork_watch.forked(REGISTRY_SLOT):  # a C fork's child: the parent's
            return  # ranges are not ours to touch; the next entry catches up
        if self._pending or self._unlock_all_due or self._unsure:
            try_under(self._mutex, self._catch_up)

    def _drain(self) -> None:
        """Release the queued holds of collected Locks (mutex held). Idempotent.

        A hold leaves the queue only after its release is committed; a finalizer may
        append while this runs (garbage collection inside it), so the queue is re-read.
        """
        pending = self._pending
        while pending:
            hold = pending[-1]
            self._release_hold(hold)
            pending.remove(hold)

    # -- whole process -------------------------------------------------------------------

    def lock_all(self, flags: int) -> None:
        """mlockall; while it holds, releasing a Lock leaves what it keeps locked.

        If this raises (a refusal, or an interrupt), :meth:`unlock_all` restores the state
        from before the call.
        """
        backend = self._backend
        if not backend.supports_lock_all:
            backend.mlockall(flags)  # raises the backend's explanation; nothing changes
        if self._fork_watch.forked(REGISTRY_SLOT):
            self._after_fork()
        under(self._mutex, self._lock_all, flags)

    def _lock_all(self, flags: int) -> None:
        self._catch_up()
        snapshot = self._backend.mapped_ranges()
        # Recorded first: releases made while mlockall() may be in force keep its pages.
        self._lock_all_flags, self._lock_all_snapshot = flags, snapshot
        try:
            self._backend.mlockall(flags)
        except BaseException:  # a refusal or an interrupt: as if never called
            self._unlock_all_due = True
            self._finish_unlock_all()
            raise

    def unlock_all(self) -> None:
        """munlockall, then re-lock what live Locks still hold."""
        if self._fork_watch.forked(REGISTRY_SLOT):
            self._after_fork()
        under(self._mutex, self._unlock_all)

    def _unlock_all(self) -> None:
        self._unlock_all_due = True  # finished by the next entry if interrupted
        self._catch_up()

    def _finish_unlock_all(self) -> None:
        """munlockall and re-lock the held ranges (mutex held). Idempotent."""
        self._backend.munlockall()
        for s, e, state in self._held_ranges():
            self._restore(s, e, state)
        self._lock_all_flags, self._lock_all_snapshot, self._unlock_all_due = 0, None, False


def drain_after_collection(registry: PageRegistry) -> Callable[[str, dict[str, int]], None]:
    """A ``gc.callbacks`` entry that releases queued holds after each collection."""
    ref = weakref.ref(registry)

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            reg = ref()
            if reg is not None and (reg._pending or reg._unlock_all_due or reg._unsure):
                reg.drain_soon()

    return callback


def watch_collections(registry: PageRegistry) -> None:
    """Drain ``registry``'s dead holds after every garbage collection."""
    gc.callbacks.append(drain_after_collection(registry))
