"""``memlock top``: the ``memlock status`` table, live, full screen (curses).

Every ``-d SECONDS`` it scans /proc again and redraws: the host's totals, then each
process with locked memory, the most locked first, with its change since the previous
refresh. ``q`` quits. When stdout is not a terminal it prints one snapshot (the table and
the totals, as ``memlock status``) and exits 0.
"""

from __future__ import annotations

import sys
import time

from .._cli_api import HostProcess, format_size
from ._arguments import seconds
from ._status import HostView, add_filters, scan_host, table_lines, totals_line, write_view

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    import argparse
    import curses
    from typing import Any

__all__ = ["changes", "register"]


def register(sub: Any) -> None:
    """Add ``top`` to ``sub``."""
    p = sub.add_parser(
        "top", help="who holds locked memory, live (q quits)",
        description="A full-screen view of `memlock status` that refreshes every -d "
        "SECONDS: the host's totals (Mlocked, Unevictable, unaccounted by any process), then "
        "every process with locked memory, the most first, with its change since the "
        "previous refresh (CHANGE: +/- bytes, `new` for a newcomer). q quits. When stdout "
        "is not a terminal: one snapshot, as `memlock status`.",
    )
    p.add_argument("-d", "--delay", type=seconds, default=2.0, metavar="SECONDS",
                   help="seconds between refreshes (default 2)")
    add_filters(p)
    p.set_defaults(handler=cmd_top)


def changes(now: list[HostProcess], before: dict[int, int] | None) -> list[str]:
    """The CHANGE cell of each process of ``now``: its locked bytes less the last ones.

    ``before`` maps pid to locked bytes at the previous refresh (None on the first).
    """
    out = []
    for p in now:
        if before is None:
            out.append("")
        elif p.pid not in before:
            out.append("new")
        else:
            delta = p.locked_bytes - before[p.pid]
            out.append("" if delta == 0 else ("+" if delta > 0 else "-") + format_size(abs(delta)))
    return out


def cmd_top(args: argparse.Namespace) -> int:
    """The live view; one snapshot where stdout is not a terminal."""
    if not sys.stdout.isatty():
        write_view(_scan(args), args)
        return 0
    import curses
    import locale

    locale.setlocale(locale.LC_ALL, "")  # curses draws UTF-8 command lines
    try:
        curses.wrapper(_live, args)
    except curses.error as exc:
        sys.stderr.write(f"memlock top: cannot draw on this terminal: {exc}\n")
        return 1
    return 0


def _scan(args: argparse.Namespace) -> HostView:
    return scan_host(args.all, args.user, args.cgroup)


def _live(screen: curses.window, args: argparse.Namespace) -> None:
    import curses

    try:
        curses.curs_set(0)
    except curses.error:
        pass  # a terminal without an invisible cursor
    before: dict[int, int] | None = None
    while True:
        view = _scan(args)
        cells = changes(view.processes, before)
        before = {p.pid: p.locked_bytes for p in view.processes}
        deadline = time.monotonic() + args.delay
        while True:  # redraw on a resize; rescan when the delay is over
            _draw(screen, args.delay, view, cells)
            screen.timeout(max(1, int((deadline - time.monotonic()) * 1000)))
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key == -1 or time.monotonic() >= deadline:
                break


def _draw(screen: curses.window, delay: float, view: HostView, cells: list[str]) -> None:
    import curses

    height, width = screen.getmaxyx()
    head = [f"memlock top - every {delay:g} s, q quits - {time.strftime('%H:%M:%S')}",
            totals_line(view.system),
            f"{len(view.processes)} processes, "
            f"{format_size(sum(p.locked_bytes for p in view.processes))} locked (VmLck)", ""]
    if view.processes:
        table = table_lines(view.processes, width - 1, ("CHANGE", cells))
    else:
        table = ["no process has memory locked"]
    screen.erase()
    for row, line in enumerate([*head, *table][:height]):
        attr = curses.A_REVERSE if row == len(head) and view.processes else curses.A_NORMAL
        try:
            screen.addnstr(row, 0, line, max(0, width - 1), attr)
        except curses.error:
            pass  # the last cell of the screen, or a terminal shrinking meanwhile
    screen.refresh()
