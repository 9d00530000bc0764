"""lock_process() and page_faults(): a whole Python process ready for real-time work.

The recipe of the PREEMPT_RT guidance: lock every page (mlockall), keep the allocator
from returning memory to the kernel (glibc: ``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD=-1``),
and prefault the heap and the stack so the hot loop finds every page it needs mapped.
:func:`page_faults` proves it: the faults a block of code took, from the kernel's own
accounting (getrusage).
"""

from __future__ import annotations

import errno
import gc
import resource
import threading
from dataclasses import dataclass
from types import TracebackType

from . import _hints
from ._pages import PAGE_SIZE, as_size
from ._platform import BACKEND, parse_maps
from ._process import lock_all
from .errors import LockLimitError, UnsupportedOperation

__all__ = ["PageFaults", "check_arena_max", "check_thread_stack", "lock_process", "page_faults"]

_STACK_GUARD_GAP = 256 * PAGE_SIZE  # Linux default stack_guard_gap (256 pages)

#: getrusage(2)'s target for page faults, and whether it counts only the calling thread.
_RUSAGE_WHO, _PER_THREAD = BACKEND.faults_rusage()


class PageFaults:
    """The page faults taken inside a ``with memlock.page_faults() as pf:`` block.

    ``minor`` (page mapped without I/O: first touch, copy-on-write, page cache hit) and
    ``major`` (page read from disk or swap) are filled when the block exits and stay
    readable after it; inside the block they are 0. Counts come from getrusage(2):
    of the calling thread where the OS can tell (Linux, ``per_thread`` True), else of
    the whole process. Enter and exit it in the same thread.

    Attributes:
        minor: Minor faults taken in the block.
        major: Major faults taken in the block.
        per_thread: The counts are of this thread only (else of the whole process).
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = ("_start", "major", "minor", "per_thread")

    def __init__(self) -> None:
        self.minor = 0
        self.major = 0
        self.per_thread = _PER_THREAD
        self._start: tuple[int, int] | None = None

    @staticmethod
    def _now() -> tuple[int, int]:
        r = resource.getrusage(_RUSAGE_WHO)
        return r.ru_minflt, r.ru_majflt

    def __enter__(self) -> PageFaults:
        self.minor = self.major = 0
        self._start = self._now()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = self._now()
        if self._start is None:
            raise RuntimeError("PageFaults exited without being entered")
        self.minor = end[0] - self._start[0]
        self.major = end[1] - self._start[1]
        self._start = None

    def __repr__(self) -> str:
        return f"PageFaults(minor={self.minor}, major={self.major})"


def page_faults() -> PageFaults:
    """Count the page faults a block of code takes.

    Example::

        with memlock.page_faults() as pf:
            hot_loop()
        assert pf.minor == 0 and pf.major == 0

    Availability: Unix; per thread on Linux (RUSAGE_THREAD), per process elsewhere.
    """
    return PageFaults()


# -- the allocator --------------------------------------------------------------------------


def _heap_error(nbytes: int, why: str | None, facts: str) -> MemoryError:
    """The MemoryError of a prefault_heap that cannot be allocated: how much, and why."""
    reason = why or "the allocator or the kernel refused it"
    return MemoryError(
        f"lock_process: cannot prefault the heap: allocating {_hints.format_size(nbytes)} "
        f"({nbytes} bytes) in one block failed: {reason} ({facts}); lower prefault_heap "
        "(`--prefault-heap`)"
    )


def _prefault_heap(nbytes: int) -> None:
    """Grow malloc's heap by ``nbytes``, touch every page, and free it back to the arena.

    CPython hands blocks this big to malloc; bytearray(n) zero-fills, touching each page.
    With M_MMAP_MAX=0 the block comes from brk, and with no trimming it stays mapped (and
    locked) in the arena's top chunk after ``del``, ready for the next allocation.

    Raises:
        MemoryError: The block cannot be allocated; the message says why, where knowable.
    """
    if nbytes:
        try:
            block = bytearray(nbytes)
        except MemoryError:
            raise _heap_error(nbytes, *BACKEND.allocation_refusal(nbytes)) from None
        del block


# -- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    path: str
    prev_end: int  # end of the mapping below it (0 if none)


def parse_syscall_sp(text: str) -> int | None:
    """The user stack pointer from a /proc/PID/syscall text (``nr args... sp pc``)."""
    parts = text.split()
    if len(parts) < 3 or not parts[-2].startswith("0x"):
        return None  # "running", or empty
    return int(parts[-2], 16)


def find_mapping(maps_text: str, address: int) -> _Mapping | None:
    """The mapping of a /proc/PID/maps text that contains ``address``."""
    prev_end = 0
    for start, end, _, path in parse_maps(maps_text):
        if start <= address < end:
            return _Mapping(start, end, path, prev_end)
        prev_end = end
    return None


@dataclass(frozen=True)
class _StackPlan:
    low: int  # lowest byte to prefault (page aligned)
    top: int  # end of the range to populate (page aligned, above the stack pointer)
    mapping: _Mapping

    @property
    def grow(self) -> int:
        """Bytes the stack mapping must grow down by to reach ``low``."""
        return max(0, self.mapping.start - self.low)


def _stack_plan(nbytes: int) -> _StackPlan:
    """Where ``nbytes`` below this thread's stack pointer lie; ValueError if they cannot.

    Availability: Linux.
    """
    syscall_text, maps = BACKEND.thread_stack_texts()
    sp = parse_syscall_sp(syscall_text)
    mapping = None if sp is None else find_mapping(maps, sp)
    if sp is None or mapping is None:
        raise UnsupportedOperation("prefault_stack: cannot find this thread's stack pointer")
    low = (sp - nbytes) - (sp - nbytes) % PAGE_SIZE
    top = sp - sp % PAGE_SIZE + PAGE_SIZE
    fmt = _hints.format_size
    if mapping.path == "[stack]":  # the main thread's stack grows down, up to RLIMIT_STACK
        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
        used = mapping.end - sp
        if soft != resource.RLIM_INFINITY and mapping.end - low > soft:
            room = max(0, soft - used - PAGE_SIZE)
            raise ValueError(
                f"prefault_stack={nbytes} does not fit in the stack: RLIMIT_STACK is "
                f"{fmt(soft)} (`ulimit -s`) and {fmt(used)} is in use; at most "
                f"{room} bytes can be prefaulted"
            )
        if low - mapping.prev_end < _STACK_GUARD_GAP:
            raise ValueError(
                f"prefault_stack={nbytes} would bring the stack within the guard gap of "
                "the mapping below it"
            )
    elif low < mapping.start:  # a thread's stack: a fixed mapping
        room = sp - mapping.start - PAGE_SIZE
        raise ValueError(
            f"prefault_stack={nbytes} is larger than what is left of this thread's stack "
            f"({max(0, room)} bytes); start the thread with a bigger "
            "threading.stack_size()"
        )
    return _StackPlan(low, top, mapping)


def _prefault_stack(nbytes: int) -> None:
    """Map and populate the ``nbytes`` below the stack pointer (after mlockall: locked)."""
    if not nbytes:
        return
    plan = _stack_plan(nbytes)
    if plan.grow:
        # The kernel kills a process whose stack cannot grow (SIGSEGV): check what it checks.
        lim = BACKEND.limits()
        vm_lck = lim.locked_bytes or 0
        if lim.soft is not None and not lim.privileged and vm_lck + plan.grow > lim.soft:
            raise BACKEND.limit_error("lock_process(prefault_stack)", errno.ENOMEM, plan.grow)
        as_soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        vm_size = BACKEND.vm_usage()[0] or 0
        if as_soft != resource.RLIM_INFINITY and vm_size + plan.grow > as_soft:
            raise ValueError(f"prefault_stack={nbytes} would exceed RLIMIT_AS")
        BACKEND.grow_stack_to(plan.low)  # a read below the mapping grows it; writes nothing
    # Populating writes no data: safe over live frames. Under mlockall the pages stay.
    BACKEND.prefault_locked(plan.low, plan.top - plan.low)


# -- the whole process ------------------------------------------------------------------------


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


#: The values lock_process(thp=...) accepts besides None (leave the setting as it is).
THP_MODES = ("disable", "system")
_INT_MAX = 2**31 - 1  # mallopt takes a C int
_THREAD_STACK_MIN = 32 * 1024  # threading.stack_size()'s floor (CPython's THREAD_STACK_MIN)


def _check_thp(thp: object) -> str | None:
    if thp is None:
        return None
    if not isinstance(thp, str):
        raise TypeError(f"thp must be None or a str, not {type(thp).__name__}")
    if thp not in THP_MODES:
        raise ValueError(f"thp must be None, 'disable' or 'system', not {thp!r}")
    return thp


def check_arena_max(arena_max: object) -> int | None:
    if arena_max is None:
        return None
    n = as_size(arena_max, "arena_max")
    if not 1 <= n <= _INT_MAX:
        raise ValueError(f"arena_max must be None or from 1 to {_INT_MAX}, got {n}")
    return n


def check_thread_stack(thread_stack: object) -> int | None:
    if thread_stack is None:
        return None
    n = as_size(thread_stack, "thread_stack")
    if 0 < n < _THREAD_STACK_MIN:
        raise ValueError(
            f"thread_stack must be 0 (the default) or at least {_THREAD_STACK_MIN} bytes, "
            f"got {n}"
        )
    return n


def _vm_size_error(
    vm_size: int, extra: int, soft: int, locked: int | None
) -> LockLimitError:
    fmt = _hints.format_size
    needed = vm_size + extra
    extra_text = f" + {fmt(extra)} to prefault" if extra else ""
    msg = (
        f"lock_process: VmSize {fmt(vm_size)} ({vm_size} bytes){extra_text} exceeds "
        f"RLIMIT_MEMLOCK {fmt(soft)} ({soft} bytes): mlockall(MCL_CURRENT) is charged for "
        "VmSize, every mapping of the process, not just its resident memory (VmRSS); with "
        "MCL_FUTURE later allocations count too, so leave headroom"
    )
    return LockLimitError(
        errno.ENOMEM,
        msg,
        hint=BACKEND.limit_hint(-(-(needed * 3 // 2) // 2**20) * 2**20),  # 50% headroom
        requested=needed,
        limit=soft,
        locked=locked,
    )


def lock_process(
    *,
    future: bool = True,
    onfault: bool = False,
    prefault_heap: int = 0,
    prefault_stack: int = 0,
    tune_malloc: bool = True,
    gc_freeze: bool = False,
    thp: str | None = None,
    arena_max: int | None = None,
    thread_stack: int | None = None,
) -> None:
    """Lock the whole process in RAM for real-time work.

    In order, after every argument and limit is checked: sets ``threading.stack_size``
    to ``thread_stack``; turns transparent huge pages off (``thp``); with glibc and
    ``tune_malloc``, sets ``M_MMAP_MAX=0`` and ``M_TRIM_THRESHOLD=-1`` (big blocks come
    from the heap and freed memory is never returned to the kernel), then
    ``M_ARENA_MAX`` (``arena_max``); grows the heap by ``prefault_heap`` bytes, touches
    it and frees it into malloc's arena; locks every page (mlockall through
    :func:`memlock.lock_all`, so :func:`memlock.unlock_all` undoes it); maps and
    populates ``prefault_stack`` bytes below the stack pointer; and last, with
    ``gc_freeze``, collects garbage and freezes every object left (``gc.freeze()``).

    Each step is a process-wide setting: an error or interrupt half-way leaves the steps
    before it done and the later ones not, and calling again with the same arguments
    completes the set-up. Only the locking is undone by :func:`memlock.unlock_all`
    (``gc.unfreeze()``, ``thp="system"`` and ``threading.stack_size(0)`` undo theirs).

    Args:
        future: Also lock memory mapped later (MCL_FUTURE). Allocations past
            RLIMIT_MEMLOCK then fail (MemoryError) when unprivileged.
        onfault: Lock pages as they are touched instead of populating everything now
            (MCL_ONFAULT); the prefaulted heap and stack are populated regardless.
        prefault_heap: Bytes of heap to map, touch and keep in the allocator. Only glibc
            with ``tune_malloc`` keeps them after they are freed; allocations of the
            main thread's arena (the main thread) are served from them.
        prefault_stack: Bytes below the calling thread's stack pointer to map and populate
            (its C stack; deep C recursion, e.g. json or re on nested input, uses it).
        tune_malloc: Tune glibc's malloc as above (ignored with other C libraries).
        gc_freeze: Call ``gc.collect()`` then ``gc.freeze()``: every object alive now
            (modules, classes, the state built while warming up) moves to the
            collector's permanent generation, so no later collection walks it. Call
            lock_process after warm-up. Frozen objects are never collected, even when
            they become garbage (``gc.unfreeze()`` returns them).
        thp: ``"disable"``: no transparent huge pages in this process (prctl
            PR_SET_THP_DISABLE): no compaction stall while faulting in, no khugepaged
            collapse of locked memory. ``"system"``: clear that (it is inherited from
            the parent), the system policy applies. None: leave it as it is.
        arena_max: At most this many glibc malloc arenas (mallopt M_ARENA_MAX); 1 makes
            threads allocate from the main arena, the heap ``prefault_heap`` filled, instead
            of arenas of their own (each a 64 MiB mapping, locked as it is made under
            ``future``). Takes effect for threads that have not allocated yet: call before
            starting threads. None: leave it; ignored with other C libraries.
        thread_stack: Stack size in bytes of threads started afterwards
            (``threading.stack_size``; 0 = the C library's default, at least 32 KiB
            otherwise). With ``future``, a thread's whole stack is locked when it
            starts (8 MiB by default on Linux): see :func:`memlock.explain_thread_errors`.
            None: leave it.

    Raises:
        TypeError, ValueError: Bad arguments, or ``prefault_stack`` larger than the stack
            can grow (RLIMIT_STACK, ``ulimit -s``) or than a thread's stack.
        LockLimitError: Unprivileged and VmSize (all mappings: what mlockall(MCL_CURRENT)
            is charged, not resident memory) plus the prefault exceeds RLIMIT_MEMLOCK;
            checked before anything changes. The message names both numbers, ``hint``
            the fix.
        LockPermissionError: RLIMIT_MEMLOCK is 0 and the process lacks the privilege;
            checked before anything changes.
        UnsupportedOperation: No mlockall (macOS) or no MCL_ONFAULT; ``prefault_stack``
            or ``thp`` outside Linux.
        MemoryError: ``prefault_heap`` cannot be allocated. The message says how much and
            why (RLIMIT_AS, RLIMIT_DATA, overcommit policy, RAM + swap); when those numbers
            already forbid it, raised before anything changes.

    Availability: Linux (verified), FreeBSD, illumos; not macOS. ``prefault_stack``,
    ``thp``: Linux only. Malloc tuning, ``arena_max``: glibc only.
    """
    future = _check_bool("future", future)
    onfault = _check_bool("onfault", onfault)
    tune_malloc = _check_bool("tune_malloc", tune_malloc)
    heap = as_size(prefault_heap, "prefault_heap")
    stack = as_size(prefault_stack, "prefault_stack")
    gc_freeze = _check_bool("gc_freeze", gc_freeze)
    thp = _check_thp(thp)
    arena_max = check_arena_max(arena_max)
    thread_stack = check_thread_stack(thread_stack)

    c = BACKEND.constants
    if not BACKEND.supports_lock_all:
        BACKEND.mlockall(c.get("MCL_CURRENT", 1))  # raises the backend's explanation
    if onfault and "MCL_ONFAULT" not in c:
        raise UnsupportedOperation(f"MCL_ONFAULT is not available on {BACKEND.name}")
    if stack and not BACKEND.supports_prefault_stack:
        raise UnsupportedOperation(f"prefault_stack is not available on {BACKEND.name}")
    if thp is not None and not BACKEND.supports_thp_disable:
        raise UnsupportedOperation(f"thp={thp!r} is not available on {BACKEND.name}")
    if heap:
        refusal, facts = BACKEND.allocation_refusal(heap)
        if refusal is not None:
            raise _heap_error(heap, refusal, facts)
    vm_size = BACKEND.vm_usage()[0]
    if BACKEND.locking_forbidden():  # mlockall would be charged all of it
        needed = None if vm_size is None else vm_size + heap + stack
        raise BACKEND.zero_limit_error("lock_process", errno.EPERM, needed)
    if stack:
        _stack_plan(stack)  # ValueError before any change
    if vm_size is not None:  # where the OS tells what mlockall(MCL_CURRENT) is charged
        lim = BACKEND.limits()
        if lim.soft is not None and not lim.privileged:
            extra = heap + stack
            if vm_size + extra > lim.soft:
                raise _vm_size_error(vm_size, extra, lim.soft, lim.locked_bytes)

    if thread_stack is not None:
        threading.stack_size(thread_stack)
    if thp is not None:  # before the heap grows: no huge page in it
        BACKEND.set_thp_disabled(thp == "disable")
    if tune_malloc:
        BACKEND.tune_malloc()  # glibc only
    if arena_max is not None:
        BACKEND.set_malloc_arena_max(arena_max)  # glibc only
    _prefault_heap(heap)  # before mlockall, so MCL_CURRENT covers it even without future
    lock_all(current=True, future=future, onfault=onfault)
    _prefault_stack(stack)
    if gc_freeze:  # last: whatever the steps above made is frozen too
        gc.collect()
        gc.freeze()
