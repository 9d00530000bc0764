"""``memlock run``: run a Python program in this interpreter with the whole process locked."""

from __future__ import annotations

import argparse
import os
import sys
from types import TracebackType

import memlock

from .._cli_api import (
    THP_MODES,
    check_arena_max,
    check_thread_stack,
    describe_error,
    format_size,
    process_memory,
    quote_arg,
)
from ._arguments import add_program, invalid, module_found, program_target, size

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]

_DESCRIPTION = """\
Lock this Python process (memlock.lock_process: mlockall, glibc malloc tuning, optional
heap and stack prefault), then run a Python script or module in it, like `python
script.py` / `python -m module`.

Only Python programs: mlockall does not survive exec (the kernel drops the locks and
MCL_FUTURE when a process execs another program), so memlock run cannot wrap other
executables. Such programs must call mlockall themselves (or use a library like this one).
"""

_EPILOG = """\
examples:
  memlock run --prefault-heap 256M --report -- control_loop.py --rate 1000
  memlock run --onfault -m mypackage.server --port 8000
  memlock run --arena-max 1 --thread-stack 256K --thp disable -- threaded_loop.py

SIZE: bytes, or with a suffix K, M, G (binary): 4096, 512K, 64M, 1G.
Exit status: the program's; 1 if the process cannot be locked (the message says why and
how to fix it), 2 for a usage error or a missing script.
"""


def register(sub: Any) -> None:
    """Add ``run`` to ``sub``."""
    p = sub.add_parser(
        "run",
        help="run a Python program with the whole process locked in RAM",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="memlock run [-h] [--prefault-heap SIZE] [--prefault-stack SIZE] [--onfault] "
        "[--thp {disable,system}] [--arena-max N] [--thread-stack SIZE] [--report] [--] "
        "script.py [ARGS] | -m module [ARGS]",
    )
    p.add_argument("--prefault-heap", type=size, default=0, metavar="SIZE",
                   help="map, touch and keep SIZE bytes of malloc heap (glibc) before the "
                   "program starts")
    p.add_argument("--prefault-stack", type=size, default=0, metavar="SIZE",
                   help="map and lock SIZE bytes of C stack below the current stack pointer")
    p.add_argument("--onfault", action="store_true",
                   help="lock pages as they are first touched (MCL_ONFAULT) instead of "
                   "populating the whole address space now")
    p.add_argument("--thp", choices=THP_MODES,
                   help="disable: no transparent huge pages for this process and its "
                   "children (prctl PR_SET_THP_DISABLE: no 2 MiB fault or compaction stall); "
                   "system: the host's setting")
    p.add_argument("--arena-max", type=_arenas, metavar="N",
                   help="at most N glibc malloc arenas (M_ARENA_MAX): with 1, threads "
                   "allocate from the prefaulted heap instead of fresh 64 MiB arenas")
    p.add_argument("--thread-stack", type=_thread_stack, metavar="SIZE",
                   help="the stack size of threads started later (threading.stack_size): "
                   "under mlockall each thread's stack is locked whole, 8 MiB by default")
    p.add_argument("--report", action="store_true",
                   help="at exit, print to stderr the page faults the program took and the "
                   "locked memory (VmLck) against the address space (VmSize)")
    add_program(p, "run a module as a script, like python -m",
                "the Python script to run and its arguments")
    p.set_defaults(handler=_run)


def _arenas(text: str) -> int:
    """A number of malloc arenas, as ``lock_process(arena_max=)`` takes it."""
    try:
        return check_arena_max(int(text)) or 0
    except (ValueError, OverflowError):  # over size_t: as_size's OverflowError
        raise invalid(f"not a number of arenas: {quote_arg(text)} (a whole number from 1 "
                      "to 2147483647)") from None


def _thread_stack(text: str) -> int:
    """A thread stack size, as ``lock_process(thread_stack=)`` takes it."""
    try:
        return check_thread_stack(size(text)) or 0
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _script_problem(script: str) -> str | None:
    """Why ``script`` cannot be run as Python's ``python script`` would, or None.

    Checked before the process is locked, and without reading it: a FIFO would wait for
    a writer for ever.
    """
    import stat

    try:
        mode = os.stat(script).st_mode
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    if stat.S_ISDIR(mode):
        if not os.path.exists(os.path.join(script, "__main__.py")):
            return "a directory without __main__.py"
        return None
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def _lock_failure(exc: BaseException, args: argparse.Namespace) -> str:
    """One line: what lock_process raised, and what it was asked for if it said nothing."""
    text = describe_error(exc)
    if text == type(exc).__name__:  # a bare MemoryError
        asked = [f"{name} {format_size(n)}" for name, n in (
            ("--prefault-heap", args.prefault_heap), ("--prefault-stack", args.prefault_stack))
            if n]
        text = f"{type(exc).__name__}: out of memory" + (
            f" (asked for {', '.join(asked)})" if asked else "")
    return text


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _program_tb(tb: TracebackType | None) -> TracebackType | None:
    """The traceback without the frames of memlock run and runpy."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in (__name__, "runpy"):
        tb = tb.tb_next
    return tb


def _report(minor: int, major: int) -> None:
    print(f"memlock run: page faults while the program ran: {minor} minor, {major} major "
          "(whole process)", file=sys.stderr)
    f = process_memory()
    if "VmLck" in f and "VmSize" in f:
        pct = 100.0 * f["VmLck"] / f["VmSize"] if f["VmSize"] else 0.0
        print(f"memlock run: locked VmLck {format_size(f['VmLck'])} of VmSize "
              f"{format_size(f['VmSize'])} ({pct:.0f}%), resident VmRSS "
              f"{format_size(f.get('VmRSS'))}", file=sys.stderr)
    else:
        locked = memlock.status().locked_bytes
        print(f"memlock run: locked {format_size(locked) if locked is not None else 'unknown'}",
              file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    import contextlib
    import resource
    import runpy
    import traceback

    module, script, tail = program_target(args)
    if not module and script is None:  # nothing, or -m without a name
        print("memlock run: error: give a script or -m module (see memlock run --help)",
              file=sys.stderr)
        return 2
    if script is not None:
        problem = _script_problem(script)
        if problem is not None:
            print(f"memlock run: can't run {script!r}: {problem}", file=sys.stderr)
            return 2
    if module is not None and not module_found(module):
        print(f"memlock run: no module named {module!r}", file=sys.stderr)
        return 2
    try:
        memlock.lock_process(prefault_heap=args.prefault_heap,
                             prefault_stack=args.prefault_stack, onfault=args.onfault,
                             thp=args.thp, arena_max=args.arena_max,
                             thread_stack=args.thread_stack)
    except (OSError, ValueError, OverflowError, MemoryError) as exc:  # MemlockError: OSError
        print(f"memlock run: cannot lock the process: {_lock_failure(exc, args)}",
              file=sys.stderr)
        return 1

    start = resource.getrusage(resource.RUSAGE_SELF)
    status = 0
    try:
        if module is not None:
            sys.argv = [module, *tail]  # run_module puts the module's file in argv[0]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            assert script is not None
            sys.argv = [script, *tail]
            sys.path[0:1] = [os.path.dirname(os.path.abspath(script))]
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        status = _exit_code(exc)
    except KeyboardInterrupt:
        status = 130
    except BaseException as exc:  # the program's crash: print it as python would
        traceback.print_exception(type(exc), exc, _program_tb(exc.__traceback__))
        status = 1
    finally:
        if args.report:
            end = resource.getrusage(resource.RUSAGE_SELF)
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
            _report(end.ru_minflt - start.ru_minflt, end.ru_majflt - start.ru_majflt)
    return status
