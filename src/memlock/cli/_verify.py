"""``memlock verify PID``: prove that a process has the protections asked, for probes."""

from __future__ import annotations

import argparse
import sys

import memlock

from .._cli_api import format_size, plural, verify_process
from ._arguments import process_id, size

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]

_DESCRIPTION = """\
Check, from the kernel's own accounting (/proc/PID/smaps and status), that a process has
what is asked; exit 0 if it does, 1 with the list of violations if not. Fit for a
Kubernetes exec probe or a systemd ExecStartPost=. --locked is the default when nothing
else is asked.
"""

_EPILOG = """\
what each check reads:
  --locked        every mapping has VmFlags lo (lf, locked on fault, counts), except those
                  the kernel never locks: VM_IO/VM_PFNMAP/VM_DONTEXPAND/VM_MIXEDMAP
                  ([vvar], [vdso], device memory), hugetlbfs, [vsyscall], VM_DROPPABLE
  --min-locked    VmLck (world-readable: this check alone works on any process)
  --path GLOB     the mappings of files matching GLOB are locked, and there is one
  --no-dump       no locked mapping would be in a core dump: each has VmFlags dd
                  (MADV_DONTDUMP) or is of a kind /proc/PID/coredump_filter leaves out
                  (by default: read-only and shared file mappings)
  --no-swap       every locked mapping has Swap: 0 kB

Reading another user's mappings needs its uid or CAP_SYS_PTRACE (root).

examples:
  memlock verify 1234                                   # mlockall'd: everything locked
  memlock verify --path '/models/*.gguf' --min-locked 4G "$(pidof llama-server)"
  memlock verify --no-dump --no-swap --json 1234

Exit status: 0 the process has what is asked; 1 it does not (the violations are listed),
or it cannot be inspected (one line on stderr says why); 2 a usage error.
"""


def register(sub: Any) -> None:
    """Add ``verify`` to ``sub``."""
    p = sub.add_parser(
        "verify", help="prove a process's memory is locked (exit 0), or list what is not (1)",
        description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pid", type=process_id, metavar="PID", help="the process to check")
    p.add_argument("--locked", action="store_true",
                   help="every mapping is locked (the default when nothing else is asked)")
    p.add_argument("--min-locked", type=size, metavar="SIZE",
                   help="at least SIZE bytes locked (VmLck); SIZE as 4096, 512K, 4M, 2G")
    p.add_argument("--path", action="append", default=[], metavar="GLOB",
                   help="the mappings of files matching GLOB are locked (repeatable)")
    p.add_argument("--no-dump", action="store_true",
                   help="no locked mapping would be written to a core dump")
    p.add_argument("--no-swap", action="store_true",
                   help="no locked mapping has pages in swap")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """Print the verdict; 0 when the process has everything asked."""
    try:
        verdict = verify_process(args.pid, locked=args.locked, min_locked=args.min_locked,
                                 paths=args.path, no_dump=args.no_dump, no_swap=args.no_swap)
    except (OSError, memlock.UnsupportedOperation) as exc:
        print(f"memlock verify: {args.pid}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.json:
        import json

        json.dump(verdict.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if verdict.ok else 1
    locked = format_size(verdict.locked_bytes) if verdict.locked_bytes is not None else "?"
    counted = "" if verdict.mappings is None else f"{plural(verdict.mappings, 'mapping')}, "
    head = (f"memlock verify {verdict.pid}: {'ok' if verdict.ok else 'FAILED'} "
            f"({', '.join(verdict.checks)}): {counted}{locked} locked (VmLck)")
    if verdict.excepted:
        names = ", ".join(sorted({m.path for m in verdict.excepted}))
        head += f"; {len(verdict.excepted)} the kernel never locks ({names})"
    print(head)
    if verdict.violations:
        print(f"{plural(len(verdict.violations), 'violation')}:")
    for v in verdict.violations:
        m = v.mapping
        where = "" if m is None else (
            f"{m.start:#014x}-{m.end:#014x} {format_size(m.size):>10} {m.perms} {m.path}: ")
        print(f"  {v.check}: {where}{v.message}")
    return 0 if verdict.ok else 1
