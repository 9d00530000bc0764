"""``memlock exporter``: the host's locked memory for Prometheus (needs ``memlock[exporter]``).

``--listen HOST:PORT`` serves ``/metrics`` over HTTP (the Prometheus text format, or
OpenMetrics when the scraper's ``Accept`` asks for it); ``--textfile DIR`` writes
``DIR/memlock.prom`` for node_exporter's textfile collector, once (for cron or a systemd
timer, as textfile collectors are usually run) or every ``--interval`` seconds. Every
scrape (or write) is a fresh scan of ``/proc`` by the host scan API: no cache, no thread
of our own.

Label values are bounded: ``command`` is the command line without the program's directory
(:func:`command_label`), cut to :data:`COMMAND_CHARS` characters, and a
holder's files beyond the :data:`HOLDER_PATHS` largest are summed under the path
:data:`OTHER_PATHS`, so a holder of a tree of 10,000 files adds at most 101 series.

A holder (a process started by ``memlock lock``) is recognised by its command line:
``memlock lock ...``, ``python /path/to/memlock lock ...`` or ``python -m memlock lock
...`` (:func:`is_holder`). Its files' locked bytes come from its smaps (``Locked:`` of each
file mapping), so they need what reading another process's smaps needs (the same user and
a dumpable target, or CAP_SYS_PTRACE); without it the holder has no
``memlock_holder_locked_bytes`` series, the rest is unaffected (``/proc/PID/status`` and
``/proc/PID/limits`` are world-readable).

``prometheus_client`` is imported only here and only when the command runs: the library
itself stays stdlib-only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import memlock
from memlock.errors import UnsupportedOperation

from .._cli_api import describe_error, host_processes, quote_arg, write_atomically
from ._arguments import seconds

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from prometheus_client.metrics_core import Metric

    from .._cli_api import HostProcess

__all__ = ["COMMAND_CHARS", "HOLDER_PATHS", "OTHER_PATHS", "TEXTFILE_NAME", "MemlockCollector",
           "command_label", "is_holder", "register"]

#: The longest ``command`` label value (longer command lines are cut, ending in "...").
COMMAND_CHARS = 80
#: The most files of one holder exported one by one (the largest); the rest are summed.
HOLDER_PATHS = 100
#: The ``path`` label of a holder's files beyond the :data:`HOLDER_PATHS` largest.
OTHER_PATHS = "(other files)"
#: The file written in ``--textfile DIR`` (node_exporter reads ``*.prom`` only).
TEXTFILE_NAME = "memlock.prom"
#: How to get prometheus_client.
INSTALL = "pip install 'memlock[exporter]'"


def register(sub: Any) -> None:
    """Add ``exporter`` to ``sub``."""
    p = sub.add_parser(
        "exporter", help="the host's locked memory for Prometheus (HTTP or textfile)",
        description="Export every process's locked memory, limits and capability, the host's "
        "Mlocked and Unevictable, and what each `memlock lock` holder holds per file, as "
        "Prometheus metrics: served over HTTP (--listen) or written for node_exporter's "
        f"textfile collector (--textfile). Needs prometheus_client: {INSTALL}.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", type=listen_address, metavar="HOST:PORT",
                       help="serve /metrics here ([::1]:9842 for IPv6; port 0: any free one)")
    where.add_argument("--textfile", metavar="DIR",
                       help=f"write DIR/{TEXTFILE_NAME} (atomic rename); once, unless --interval")
    p.add_argument("--interval", type=seconds, metavar="SECONDS",
                   help="with --textfile: write again every SECONDS until SIGTERM")
    p.add_argument("--all", action="store_true",
                   help="also processes with nothing locked (one series set per process)")
    p.set_defaults(handler=cmd_exporter)


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPV6]:PORT``; an empty host is every IPv4 address) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535 \
            or any(c in host for c in "[]/ ") or not host.isascii():
        raise argparse.ArgumentTypeError(
            f"not HOST:PORT: {quote_arg(text)} (such as 127.0.0.1:9842, [::1]:9842, :9842)")
    return host or "0.0.0.0", int(port)


# -- what is exported ----------------------------------------------------------------------


def is_holder(command: str) -> bool:
    """Whether the command line ``command`` (words joined by spaces) runs ``memlock lock``.

    ``memlock lock``, ``/usr/local/bin/memlock lock``, or a Python (``python``, ``python3.11``
    ...) with its options, then the ``memlock`` console script or ``-m memlock``, then
    ``lock``.
    """
    words = command.split()
    first = words[0].rpartition("/")[2] if words else ""
    if first == "memlock":
        return words[1:2] == ["lock"]
    if not first.startswith("python"):
        return False
    skip = False
    for i, word in enumerate(words[1:], 1):
        if skip:  # the value of -X or -W
            skip = False
        elif word == "-m":
            return words[i + 1:i + 2] in (["memlock"], ["memlock.cli"]) and (
                words[i + 2:i + 3] == ["lock"])
        elif word in ("-X", "-W"):
            skip = True
        elif word == "-c":  # a program in the argument: not the holder
            return False
        elif not word.startswith("-"):
            return word.rpartition("/")[2] == "memlock" and words[i + 1:i + 2] == ["lock"]
    return False


def _label(text: str, limit: int | None = None) -> str:
    """``text`` as a label value: valid UTF-8 (bytes that were not are replaced), cut."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if limit is not None and len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def command_label(command: str) -> str:
    """The ``command`` label: the command line, cut to :data:`COMMAND_CHARS` characters.

    The program's directory is left out (and the script's, for a Python: ``python3 memlock
    lock /srv/models``).
    """
    words = command.split(" ")
    if words and words[0].startswith("/"):
        words[0] = words[0].rpartition("/")[2]
        if words[0].startswith("python") and words[1:2] and words[1].startswith("/"):
            words[1] = words[1].rpartition("/")[2]
    return _label(" ".join(words), COMMAND_CHARS)


def _holder_files(process: HostProcess) -> list[tuple[str, int]]:
    """(path, locked bytes) of each file a holder has locked, the largest first, bounded."""
    per_path: dict[str, int] = {}
    for region in process.regions or ():
        if region.path.startswith("/") and region.locked_bytes:
            per_path[region.path] = per_path.get(region.path, 0) + region.locked_bytes
    files = sorted(per_path.items(), key=lambda item: (-item[1], item[0]))
    if len(files) > HOLDER_PATHS:
        rest = sum(size for _, size in files[HOLDER_PATHS:])
        files = [*files[:HOLDER_PATHS], (OTHER_PATHS, rest)]
    return files


class MemlockCollector:
    """A prometheus_client collector that scans the host on every scrape."""

    def __init__(self, include_unlocked: bool = False) -> None:
        """Export processes with something locked, or every process with ``include_unlocked``."""
        self.include_unlocked = include_unlocked

    def collect(self) -> Iterator[Metric]:
        """The metrics of one scan of ``/proc``."""
        from prometheus_client.core import GaugeMetricFamily

        processes = host_processes(include_unlocked=self.include_unlocked, regions=False)
        locked = GaugeMetricFamily(
            "memlock_process_locked_bytes", "Memory locked by the process (VmLck), in bytes.",
            labels=["pid", "command", "user", "cgroup"])
        limit = GaugeMetricFamily(
            "memlock_process_memlock_limit_bytes",
            "RLIMIT_MEMLOCK of the process, in bytes (no series when unlimited).",
            labels=["pid", "command", "kind"])
        capable = GaugeMetricFamily(
            "memlock_process_ipc_lock_capable",
            "1 when the process holds CAP_IPC_LOCK (no limit applies), else 0.",
            labels=["pid", "command"])
        holders = GaugeMetricFamily(
            "memlock_holder_locked_bytes",
            "Memory a `memlock lock` holder has locked, per file (smaps Locked:), in bytes.",
            labels=["pid", "path"])
        for process in processes:
            pid, command = str(process.pid), command_label(process.command)
            locked.add_metric([pid, command, _label(process.user), _label(process.cgroup)],
                              process.locked_bytes)
            for kind, value in (("soft", process.limit_soft), ("hard", process.limit_hard)):
                if value is not None:
                    limit.add_metric([pid, command, kind], value)
            capable.add_metric([pid, command], 1 if process.privileged else 0)
            if process.locked_bytes and is_holder(process.command):
                for path, size in self._held_files(process.pid):
                    holders.add_metric([pid, _label(path)], size)
        yield from (locked, limit, capable, holders)
        system = memlock.system_status()
        for name, value, text in (
                ("memlock_system_mlocked_bytes", system.mlocked_bytes,
                 "Memory locked on the host (Mlocked of /proc/meminfo), in bytes."),
                ("memlock_system_unevictable_bytes", system.unevictable_bytes,
                 "Memory the host cannot reclaim (Unevictable of /proc/meminfo), in bytes.")):
            if value is not None:
                yield GaugeMetricFamily(name, text, value=value)

    @staticmethod
    def _held_files(pid: int) -> list[tuple[str, int]]:
        """A holder's files; none when it has gone or its smaps may not be read."""
        try:
            (process,) = host_processes(pids=[pid], regions=True)
        except (ProcessLookupError, PermissionError):
            return []
        return _holder_files(process)


# -- the command ---------------------------------------------------------------------------


def _fail(message: str) -> int:
    sys.stderr.write(f"memlock exporter: {message}\n")
    return 1


def write_textfile(directory: str, registry: Any) -> None:
    """Write ``directory/memlock.prom``: a temporary file there, fsync, atomic rename."""
    from prometheus_client.exposition import generate_latest

    write_atomically(os.path.join(directory, TEXTFILE_NAME), generate_latest(registry))


#: The signals that end the exporter (exit 0). They are blocked, then waited for with
#: sigwait/sigtimedwait: nothing runs in a signal handler, and the server's thread, which
#: inherits the mask, never receives them.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def cmd_exporter(args: argparse.Namespace) -> int:
    """Serve or write the metrics until SIGTERM (or once, for ``--textfile`` alone)."""
    if args.interval is not None and args.textfile is None:
        sys.stderr.write("memlock exporter: error: --interval goes with --textfile (a served "
                         "exporter scans on every scrape) (see memlock exporter --help)\n")
        return 2
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        return _fail(f"needs the prometheus_client package: {INSTALL}")
    collector = MemlockCollector(include_unlocked=args.all)
    registry = CollectorRegistry(auto_describe=False)
    try:
        list(collector.collect())  # fail now, plainly, where the scan cannot work
    except UnsupportedOperation as exc:
        return _fail(describe_error(exc))
    registry.register(collector)
    if args.textfile is not None:
        return _write_textfiles(args.textfile, args.interval, registry)
    host, port = args.listen
    return _serve(host, port, registry)


def _write_textfiles(directory: str, interval: float | None, registry: Any) -> int:
    if not os.path.isdir(directory):
        return _fail(f"--textfile {quote_arg(directory)}: not a directory")
    if interval is not None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    while True:
        try:
            write_textfile(directory, registry)
        except OSError as exc:
            return _fail(f"cannot write {os.path.join(directory, TEXTFILE_NAME)}: "
                         f"{describe_error(exc)}")
        if interval is None or _stopped_within(interval):
            return 0


def _stopped_within(timeout: float) -> bool:
    """Whether a blocked stop signal arrives within ``timeout`` seconds (consumed)."""
    if sys.platform == "linux":
        return signal.sigtimedwait(STOP_SIGNALS, timeout) is not None
    import time  # elsewhere (never reached: the scan is Linux's): look once it has passed

    time.sleep(timeout)
    if STOP_SIGNALS & signal.sigpending():
        signal.sigwait(STOP_SIGNALS)
        return True
    return False


def _serve(host: str, port: int, registry: Any) -> int:
    from prometheus_client import start_http_server

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # before the thread starts
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        return _fail(f"cannot listen on {host}:{port}: {describe_error(exc)}")
    shown = f"[{host}]" if ":" in host else host
    print(f"memlock exporter: serving http://{shown}:{server.server_port}/metrics", flush=True)
    signal.sigwait(STOP_SIGNALS)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    return 0
