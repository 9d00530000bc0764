"""What the command line (``memlock.cli``) needs that is not public API: one documented door.

The CLI imports ``memlock``, ``memlock.lowlevel``, ``memlock.errors``, its own modules and
this module, nothing else of the package (``tests/test_boundaries.py`` keeps it so). Each
name here is a re-export or a one-line adapter; the logic stays in its own module:

Files (:mod:`memlock._files`), for the holder and ``resident``/``touch``/``evict``, which
work on descriptors their tree walk already opened:
    :func:`open_regular`, :func:`lock_fd`, :func:`touch_fd`, :func:`evict_fd`,
    :func:`cached_pages_or_bound`, :func:`cached_pages_counter` (the whole-file counter of
    the ``resident`` hot loop, None where the OS has none), :func:`cached_pages` (its
    errno), :func:`page_range`.
Writing a file whole or not at all: :func:`write_atomically` (:mod:`memlock._atomic`).
Records: :class:`FrozenRecord` (the base of the walk's small immutable records).
The tree walk (:mod:`memlock._walk`, the same walk as the file API's): :class:`WalkOptions`,
    :func:`walk`, :func:`scan`, :func:`scan_rows`, :class:`FileEntry`, :class:`Planned`,
    :func:`plan`; :func:`default_workers` (:mod:`memlock._fanout`, ``resident -j``).
Many files (:mod:`memlock._trees`, the file API's tree functions): :func:`measure_tree`
    (the per-file rows of ``resident``/``touch``/``evict``), :func:`preflight` (the limits
    checked before locking), :func:`lock_planned`, :func:`touch_planned`,
    :func:`within_budget`, :func:`descriptor_room` (RLIMIT_NOFILE raised for the
    mappings to hold); profiles (:mod:`memlock._profile`): :func:`capture_profile` (a
    profile and its rows), :func:`restore_rows` (``touch --profile``'s rows).
Units and messages (:mod:`memlock._units`): :func:`format_size`, :func:`parse_size`,
    :func:`plural`, :func:`quote_arg`, :func:`describe_error`, :class:`SizeTooLargeError`.
Hints (:mod:`memlock._hints` and the backend): :func:`detect_environment`,
    :func:`permission_hint`, :func:`limit_hint`.
Other processes: :func:`verify_process` (:mod:`memlock._verify`, ``memlock verify``),
    :func:`process_context` and :func:`process_limit_hint` (the backend, ``memlock doctor
    --pid``).
The host (the backend; Linux only, UnsupportedOperation elsewhere): :func:`host_processes`
    (every process with locked memory, one pass over /proc: :class:`HostProcess` records),
    :func:`host_unaccounted_bytes` (unevictable memory no process accounts for).
Facts of this process and machine (the backend): :data:`PAGE_SIZE`,
    :func:`process_memory`, :func:`map_count`, :func:`cgroup_memory_headroom`,
    :func:`doctor_probes`, :func:`die_with_parent`, :func:`open_descriptors`,
    :func:`pseudo_file_systems`, :func:`fast_path_active`,
    :data:`PURE_PYTHON_REQUESTED`.

The file primitives and :data:`PURE_PYTHON_REQUESTED` load their modules (the page
registry, the C module) on first use, as ``memlock``'s own names do: ``memlock limits`` and
``memlock resident`` never pay for them. Import them inside the function that needs them.
"""

from __future__ import annotations

from ._atomic import write_atomically
from ._hints import detect_environment
from ._pages import PAGE_SIZE, page_range
from ._platform import BACKEND
from ._records import FrozenRecord, HostProcess
from ._units import SizeTooLargeError, describe_error, format_size, parse_size, plural, quote_arg
from ._verify import verify_process

TYPE_CHECKING = False  # typing costs ~12 ms at import; mypy reads the block below
if TYPE_CHECKING:
    from ._critical import PURE_PYTHON_REQUESTED
    from ._fanout import default_workers
    from ._files import cached_pages_or_bound, evict_fd, lock_fd, open_regular, touch_fd
    from ._profile import capture_profile, restore_rows
    from ._realtime import THP_MODES, check_arena_max, check_thread_stack
    from ._trees import (
        descriptor_room,
        lock_planned,
        measure_tree,
        preflight,
        touch_planned,
        within_budget,
    )
    from ._walk import FileEntry, Planned, WalkOptions, plan, scan, scan_rows, walk

#: Names that load their module (and what it loads) on first use.
_LAZY = {"cached_pages_or_bound": "_files", "evict_fd": "_files", "lock_fd": "_files",
         "open_regular": "_files", "touch_fd": "_files", "PURE_PYTHON_REQUESTED": "_critical",
         "FileEntry": "_walk", "Planned": "_walk", "WalkOptions": "_walk", "plan": "_walk",
         "scan": "_walk", "scan_rows": "_walk", "walk": "_walk", "default_workers": "_fanout",
         "descriptor_room": "_trees", "lock_planned": "_trees", "measure_tree": "_trees",
         "preflight": "_trees",
         "within_budget": "_trees", "touch_planned": "_trees",
         "capture_profile": "_profile", "restore_rows": "_profile", "THP_MODES": "_realtime",
         "check_arena_max": "_realtime", "check_thread_stack": "_realtime"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__package__}.{module}", fromlist=[name]), name)  # no importlib
    globals()[name] = value
    return value

__all__ = [
    "PAGE_SIZE", "PURE_PYTHON_REQUESTED", "THP_MODES", "FileEntry", "FrozenRecord",
    "HostProcess", "Planned",
    "SizeTooLargeError", "WalkOptions", "cached_pages", "cached_pages_counter",
    "cached_pages_or_bound", "capture_profile", "cgroup_memory_headroom", "check_arena_max",
    "check_thread_stack", "default_workers",
    "describe_error", "descriptor_room", "detect_environment", "die_with_parent",
    "doctor_probes", "evict_fd",
    "fast_path_active", "format_size", "host_processes", "host_unaccounted_bytes", "limit_hint",
    "lock_fd", "lock_planned", "map_count", "measure_tree", "open_descriptors", "open_regular",
    "page_range", "parse_size", "permission_hint", "plan", "plural", "preflight",
    "process_context", "process_limit_hint", "process_memory", "pseudo_file_systems",
    "quote_arg", "restore_rows", "scan", "scan_rows", "touch_fd", "touch_planned",
    "verify_process", "walk", "within_budget", "write_atomically",
]

#: ``cached_pages(fd, offset, length)``: ``(pages, 0)`` or ``(-1, errno)`` (ENOSYS: no call).
cached_pages = BACKEND.cached_pages
#: ``cached_pages_counter()``: ``count(fd)`` of whole files, or None where the OS has none.
cached_pages_counter = BACKEND.cached_pages_counter
#: ``permission_hint()``: how to get the privilege to lock memory here.
permission_hint = BACKEND.permission_hint
#: ``limit_hint(needed_total)``: how to raise the limit to ``needed_total`` bytes here.
limit_hint = BACKEND.limit_hint
#: ``map_count()``: (mappings of this process, the most allowed), or None.
map_count = BACKEND.map_count
#: ``cgroup_memory_headroom()``: (limit, usage, cgroup) of the tightest memory cgroup, or None.
cgroup_memory_headroom = BACKEND.cgroup_memory_headroom
#: ``doctor_probes()``: [(feature, works, what)] for this kernel.
doctor_probes = BACKEND.doctor_probes
#: ``open_descriptors()``: descriptors this process has open now, or None.
open_descriptors = BACKEND.open_descriptors
#: ``pseudo_file_systems()``: ``st_dev`` -> type of each pseudo file system (procfs ...).
pseudo_file_systems = BACKEND.pseudo_file_systems
#: ``host_processes(*, include_unlocked=False, regions=True, pids=None)``: list[HostProcess].
host_processes = BACKEND.host_processes
#: ``host_unaccounted_bytes(processes, system)``: unevictable bytes no process accounts for.
host_unaccounted_bytes = BACKEND.host_unaccounted_bytes
#: ``die_with_parent()``: the kernel kills this process when its parent dies (where it can).
die_with_parent = BACKEND.die_with_parent


#: ``process_context(pid)``: another process's limits, privilege, memory cgroup, environment.
process_context = BACKEND.process_context
#: ``process_limit_hint(needed_total, context)``: the fix for that process, where it runs.
process_limit_hint = BACKEND.process_limit_hint

#: ``process_memory()``: this process's memory figures by the OS's names (Linux: VmSize,
#: VmLck, VmRSS of /proc/self/status), in bytes; empty where the OS has none.
process_memory = BACKEND.process_memory


def fast_path_active() -> bool:
    """Whether ``lock()``/``unlock()`` run through the C module."""
    from ._lock import fast_path_active as active

    return active()
