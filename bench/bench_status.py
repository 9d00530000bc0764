"""``memlock status`` over a host of 1,000 processes vs the shell idiom ``grep VmLck``.

Starts ``--procs`` sleeping processes (and ``--lockers`` more that each hold ``--locked``
bytes locked), then times whole commands side by side, the order rotating on every
repetition, best of ``--reps``:

- ``memlock status --all --json``: every process, with user, command, limits,
  capability, cgroup (and the locked mappings of those that lock);
- ``memlock status``: the processes with locked memory, and the host's totals;
- ``sh -c 'grep VmLck /proc/[0-9]*/status'``: what an operator types today;
- ``memlock limits``: memlock's start-up (it reads one file of its own process);
- ``python -c pass``: the interpreter's own start-up, the floor of any Python command.

memlock runs as users run it, through the ``memlock`` console script next to the Python
running this bench, with its bytecode cached (as after ``pip install``): a private
PYTHONPYCACHEPREFIX, filled by a warm-up run, even where PYTHONDONTWRITEBYTECODE is set.
Every process it starts dies with it (PR_SET_PDEATHSIG) and is killed and reaped at the
end, also on failure or Ctrl-C.

Usage: python bench/bench_status.py [--procs 1000] [--lockers 4] [--locked 1M] [--reps 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from memlock._cli_api import die_with_parent, parse_size

PY = sys.executable
_SCRIPT = os.path.join(os.path.dirname(PY), "memlock")
MEMLOCK = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else [PY, "-m", "memlock"]

LOCKER = """
import mmap, sys, memlock
m = mmap.mmap(-1, int(sys.argv[1]), flags=mmap.MAP_PRIVATE)
lk = memlock.lock(m)
print("ready", flush=True)
sys.stdin.read()
"""


def start(procs: int, lockers: int, locked: int) -> list[subprocess.Popen[bytes]]:
    """``procs`` sleepers and ``lockers`` processes holding ``locked`` bytes each."""
    children: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(procs):
            children.append(subprocess.Popen(["sleep", "3600"], preexec_fn=die_with_parent))
        for _ in range(lockers):
            child = subprocess.Popen([PY, "-c", LOCKER, str(locked)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, preexec_fn=die_with_parent)
            children.append(child)
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    except BaseException:
        stop(children)
        raise
    return children


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
    for child in children:
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds ``cmd`` took; it must exit 0 (grep: 2 where a process ended meanwhile)."""
    grep = cmd[0] == "sh"
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL if grep else None, env=env)
    elapsed = time.perf_counter() - t
    if proc.returncode not in ((0, 2) if grep else (0,)):
        raise SystemExit(f"bench_status: {cmd} exited {proc.returncode}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=1000, help="sleeping processes (1000)")
    ap.add_argument("--lockers", type=int, default=4, help="processes that lock (4)")
    ap.add_argument("--locked", type=parse_size, default=1 << 20, help="each locks (1M)")
    ap.add_argument("--reps", type=int, default=15, help="repetitions, best kept (15)")
    args = ap.parse_args()
    # SIGTERM too ends in the finally below (the children die with us anyway).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = tempfile.mkdtemp(prefix="memlock-bench-status-")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
    children: list[subprocess.Popen[bytes]] = []
    try:
        children = start(args.procs, args.lockers, args.locked)
        commands = {
            "memlock status --all --json": [*MEMLOCK, "status", "--all", "--json"],
            "memlock status": [*MEMLOCK, "status"],
            "grep VmLck /proc/[0-9]*/status": ["sh", "-c", "grep VmLck /proc/[0-9]*/status"],
            "memlock limits": [*MEMLOCK, "limits"],
            "python -c pass": [PY, "-c", "pass"],
        }
        for cmd in commands.values():  # warm-up: bytecode, page cache, dentries
            timed(cmd, env)
        best = dict.fromkeys(commands, float("inf"))
        names = list(commands)
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                best[name] = min(best[name], timed(commands[name], env))
        total = sum(1 for d in os.listdir("/proc") if d.isdigit())
        print(f"{total} processes on this host ({args.procs} sleepers, {args.lockers} "
              f"holding {args.locked} bytes locked each); best of {args.reps}, whole "
              "commands, memlock bytecode cached")
        grep = best["grep VmLck /proc/[0-9]*/status"]
        for name, seconds in best.items():
            print(f"  {seconds * 1000:7.1f} ms  {seconds / grep:4.2f}x grep  {name}")
    finally:
        stop(children)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
