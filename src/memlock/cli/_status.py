"""``memlock status``: who holds locked memory on this host, and one process in detail.

With no PID, a table of every process whose VmLck is above 0 (``--all``: every process),
the most locked first, then the host's totals; with PIDs, each process with its locked
mappings. Both come from one scan of /proc (``host_processes`` of ``memlock._cli_api``).
The table and the totals are also what ``memlock top`` shows (:mod:`._top`).
"""

from __future__ import annotations

import sys

from .._cli_api import HostProcess, format_size, host_processes, host_unaccounted_bytes, plural
from ._arguments import PRINTABLE, process_id, user_name

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

__all__ = ["HostView", "add_filters", "register", "scan_host", "table_lines",
           "totals_line", "write_view"]

#: The table's columns: heading, right-aligned.
COLUMNS = (("PID", True), ("USER", False), ("LOCKED", True), ("SOFT", True), ("HARD", True),
           ("IPC_LOCK", False), ("CGROUP", False), ("COMMAND", False))


def register(sub: Any) -> None:
    """Add ``status`` to ``sub``."""
    p = sub.add_parser(
        "status", help="who holds locked memory on this host (or what PIDs have locked)",
        description="With no PID: every process whose VmLck is above 0, the most locked "
        "first (PID, user, command, locked bytes, soft and hard RLIMIT_MEMLOCK, whether it "
        "holds CAP_IPC_LOCK, its cgroup: container, pod or systemd unit), then the host's "
        "totals: Mlocked, Unevictable, and the unevictable memory no process accounts for "
        "(ramfs, SHM_LOCK'd shared memory...). With PIDs: each one's locked mappings "
        "(marked unavailable where this user may not read its smaps; VmLck is always "
        "shown), then the host's totals. --json: {\"processes\": [...], \"system\": {...}} "
        "(one PID: its keys and \"system\"); each process has pid, user, command, "
        "locked_bytes, limit_soft, limit_hard (null: unlimited), privileged, cgroup and "
        "regions (null: not readable).",
    )
    p.add_argument("pids", nargs="*", type=process_id, metavar="PID",
                   help="these processes (default: every process with locked memory)")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)


def add_filters(p: argparse.ArgumentParser) -> None:
    """``--all``, ``--user``, ``--cgroup``: which of the host's processes to list."""
    p.add_argument("--all", action="store_true",
                   help="also the processes with nothing locked")
    p.add_argument("--user", action="append", metavar="USER", type=user_name,
                   help="only processes of USER (a name or a uid; repeat for several)")
    p.add_argument("--cgroup", action="append", metavar="TEXT",
                   help="only processes whose cgroup column contains TEXT (docker:, "
                   "k8s:pod, foo.service, a path; repeat for several)")


class HostView:
    """One scan of the host: the processes listed (filtered) and the host's totals."""

    def __init__(self, processes: list[HostProcess], system: dict[str, Any]) -> None:
        self.processes = processes
        self.system = system


def scan_host(include_unlocked: bool = False, users: Sequence[str] | None = None,
              cgroups: Sequence[str] | None = None, regions: bool = False) -> HostView:
    """Scan /proc once: the processes to list and the host's totals.

    ``regions``: read each locked process's mappings (its whole smaps: the kernel takes
    about 3 ms for a Python process). The unaccounted figure is computed over every
    process with locked memory, before the filters apply.
    """
    import memlock

    processes = host_processes(include_unlocked=include_unlocked, regions=regions)
    system = memlock.system_status()
    totals = system.to_dict()
    totals["unaccounted_bytes"] = host_unaccounted_bytes(processes, system)
    if users:
        names = set(users)  # as the scan names them (see _arguments.user_name)
        processes = [p for p in processes if p.user in names]
    if cgroups:
        processes = [p for p in processes if any(c in p.cgroup for c in cgroups)]
    return HostView(processes, totals)


def totals_line(system: dict[str, Any]) -> str:
    """The host's totals in one line."""
    unaccounted = system.get("unaccounted_bytes")
    return (f"host: Mlocked {_size(system['mlocked_bytes'])}, Unevictable "
            f"{_size(system['unevictable_bytes'])}, unaccounted by any process "
            f"{_size(unaccounted)}")


def _size(n: int | None) -> str:
    return "?" if n is None else format_size(n)


#: Control characters (a newline in a command line...) print as ``?``, as ps does.


def _cells(p: HostProcess) -> list[str]:
    return [str(p.pid), p.user.translate(PRINTABLE), format_size(p.locked_bytes),
            format_size(p.limit_soft), format_size(p.limit_hard),
            "yes" if p.privileged else "no", (p.cgroup or "-").translate(PRINTABLE),
            p.command.translate(PRINTABLE)]


def table_lines(processes: Sequence[HostProcess], width: int | None = None,
                extra: tuple[str, Sequence[str]] | None = None) -> list[str]:
    """The table: a heading, then a line per process.

    Args:
        processes: The rows.
        width: Cut each line to this many characters (a terminal); None: whole lines.
        extra: (heading, one cell per process): a column put after LOCKED.
    """
    columns = list(COLUMNS)
    rows = [_cells(p) for p in processes]
    if extra is not None:
        columns.insert(3, (extra[0], True))
        for row, cell in zip(rows, extra[1], strict=True):
            row.insert(3, cell)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, (h, _) in enumerate(columns)]
    lines = []
    for cells in [[h for h, _ in columns], *rows]:
        line = " ".join(
            cell if i == len(columns) - 1 else
            (cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
            for i, (cell, (_, right)) in enumerate(zip(cells, columns, strict=True)))
        lines.append(line if width is None else line[:width])
    return lines


def _columns() -> int | None:
    """The terminal's width when stdout is one, else None (whole lines)."""
    import os

    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() \
            else None
    except (AttributeError, ValueError, OSError):
        return None


def _print_json(data: Any) -> None:
    import json

    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _print_host_json(view: HostView) -> None:
    """``{"processes": [...], "system": {...}}``, a process a line.

    json's C encoder writes only compact JSON; with ``indent`` the pure-Python one takes
    10 ms for 1,000 processes, as long as the whole scan.
    """
    import json

    rows = ",\n".join("  " + json.dumps(p.to_dict()) for p in view.processes)
    sys.stdout.write(f'{{"processes": [\n{rows}\n], "system": {json.dumps(view.system)}}}\n'
                     if rows else f'{{"processes": [], "system": {json.dumps(view.system)}}}\n')


def cmd_status(args: argparse.Namespace) -> int:
    """The host's table, or the PIDs given; 1 when a PID cannot be reported."""
    if args.pids:
        if args.all or args.user or args.cgroup:
            sys.stderr.write("memlock status: error: --all, --user and --cgroup choose among "
                             "the host's processes: give them without PIDs (see memlock "
                             "status --help)\n")
            return 2
        return _status_of(list(dict.fromkeys(args.pids)), args.json)  # each PID once
    view = scan_host(args.all, args.user, args.cgroup, regions=args.json)
    if args.json:
        _print_host_json(view)
        return 0
    write_view(view, args)
    return 0


def write_view(view: HostView, args: argparse.Namespace) -> None:
    """The table (or why it is empty) and the totals, as plain text.

    For ``status``, and ``top`` when stdout is not a terminal; lines are cut to the
    terminal's width.
    """
    lines = table_lines(view.processes, _columns()) if view.processes else [
        "no process matches" if args.all or args.user or args.cgroup
        else "no process has memory locked"]
    sys.stdout.write("\n".join([*lines, totals_line(view.system)]) + "\n")


def _status_of(pids: Sequence[int], as_json: bool) -> int:
    """Each of ``pids`` with its locked mappings, then the host's totals."""
    found: list[HostProcess] = []
    failed = 0
    for pid in pids:
        try:
            found += host_processes(pids=[pid])
        except OSError as exc:  # no such process, hidden, unsupported here
            failed += 1
            sys.stderr.write(f"memlock status: {exc.strerror or exc}\n")
    system = scan_host().system
    if as_json:
        if len(pids) == 1 and found:
            _print_json({**found[0].to_dict(), "system": system})
        else:
            _print_json({"processes": [p.to_dict() for p in found], "system": system})
        return 1 if failed else 0
    write = sys.stdout.write
    for p in found:
        regions = ("; regions unavailable (this user may not read its smaps; VmLck is "
                   "world-readable)" if p.regions is None
                   else " in " + plural(len(p.regions), "region"))
        write(f"pid {p.pid}: {format_size(p.locked_bytes)} locked{regions}\n"
              f"  user {p.user.translate(PRINTABLE)}, RLIMIT_MEMLOCK soft "
              f"{format_size(p.limit_soft)} hard {format_size(p.limit_hard)}, "
              f"CAP_IPC_LOCK {'yes' if p.privileged else 'no'}"
              f", cgroup {(p.cgroup or '-').translate(PRINTABLE)}\n"
              f"  command {p.command.translate(PRINTABLE)}\n")
        if p.regions is None:
            continue
        for r in p.regions:
            resident = format_size(r.locked_bytes) if r.locked_bytes is not None else "?"
            flag = " onfault" if r.onfault else ""
            write(f"  {r.start:#014x}-{r.end:#014x} {format_size(r.size):>10} "
                  f"{resident:>10} resident{flag}  {r.path}\n")
    write(totals_line(system) + "\n")
    return 1 if failed else 0
