"""Files resident in RAM: memlock vs vmtouch (Debian package) and fincore (util-linux).

Side by side in one run, alternating the tools on every repetition; medians, their ratio,
and the median and range of the per-repetition ratios:

1. cold 2 GiB file (evicted with POSIX_FADV_DONTNEED): lock and wait until fully resident
   and locked: ``memlock lock --daemon`` vs ``vmtouch -dlw`` (both return only then); the
   tool that goes first swaps every repetition, and guest memory is backed before each
   run (see :func:`back_guest_memory`);
2. ``memlock resident`` over trees of 10,000 and 100,000 small files (``--files``), warm
   cache, whole process: vs ``vmtouch`` (report mode) and ``fincore`` (all files as
   arguments; at 10,000 files only: 100,000 paths pass the kernel's argument limit);
3. RssAnon growth of a process that locks a warm 2 GiB file (no private copies).

memlock runs as users run it, through the ``memlock`` console script next to the Python
running this bench, with its bytecode cached (as after ``pip install``, which compiles it): a
private PYTHONPYCACHEPREFIX, filled by a warm-up run, even where PYTHONDONTWRITEBYTECODE
is set; ``--no-pyc`` compiles every module on every run instead (a source checkout with
bytecode writing disabled).

Usage: python bench/bench_files.py [--dir /var/tmp] [--size 2G] [--files 10000,100000]
       [--reps 5] [--skip-cold] [--resident-only] [--no-pyc]
Needs vmtouch (apt-get install vmtouch); files are created under --dir and deleted after.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from memlock._units import format_size, parse_size

PY = sys.executable
#: The console script that ``pip install`` puts next to the interpreter (what users run);
#: ``python -m memlock`` where there is none (it also loads runpy: ~8 ms more).
_SCRIPT = os.path.join(os.path.dirname(PY), "memlock")
MEMLOCK = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else [PY, "-m", "memlock"]


def evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def back_guest_memory(nbytes: int) -> None:
    """Fault in and free ``nbytes`` of anonymous memory, just before a timed cold run.

    These VMs report free pages to the host (virtio-balloon free page reporting), which
    then drops their backing: whichever tool next fills 2 GiB of page cache pays for the
    host faulting it back in, up to 2x its time. Doing this before every run, for either
    tool, takes the host out of the comparison.
    """
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m.madvise(23)  # MADV_POPULATE_WRITE (Linux 5.14+)
    except OSError:
        pass
    m.close()


#: Environment of the memlock runs (see the module docstring); None: inherit ours.
ENV: dict[str, str] | None = None


def use_pyc_cache(work: str) -> None:
    """Run memlock with its bytecode cached under ``work`` (as an installed package)."""
    global ENV
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
    ENV = env
    subprocess.run([*MEMLOCK, "--help"], check=True, stdout=subprocess.DEVNULL, env=ENV)


def timed(cmd: list[str]) -> float:
    env = ENV if cmd[: len(MEMLOCK)] == MEMLOCK else None
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie too: a holder reparented to an init that does
    not reap answers ``kill(pid, 0)`` forever, its locks long released)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_pidfile(pidfile: str) -> None:
    with open(pidfile) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if _gone(pid):
            break
        time.sleep(0.02)
    else:  # vmtouch's holder sometimes ignores SIGTERM: later cold runs would be warm
        os.kill(pid, signal.SIGKILL)
        while not _gone(pid):
            time.sleep(0.02)
    if os.path.exists(pidfile):
        os.unlink(pidfile)


def assert_evicted(path: str) -> None:
    """Refuse a "cold" run of a file still in the page cache (a holder left running)."""
    out = subprocess.run(["fincore", "-b", "-n", "-r", "-o", "RES", path], capture_output=True,
                         text=True, check=True).stdout.split()
    if out and int(out[0]) > 0:
        raise RuntimeError(f"{path}: {out[0]} bytes still cached after eviction (a holder "
                           "of an earlier run still locks it?)")


def make_big(path: str, size: int) -> None:
    chunk = os.urandom(16 * 2**20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def make_tree(root: str, count: int) -> list[str]:
    paths = []
    for d in range(count // 100 + 1):
        os.makedirs(f"{root}/d{d:03}", exist_ok=True)
        for i in range(min(100, count - d * 100)):
            p = f"{root}/d{d:03}/f{i:03}"
            with open(p, "wb") as f:
                f.write(os.urandom(4096 * (1 + i % 4)))
            paths.append(p)
    return paths


def ratio_line(name: str, mine: list[float], theirs: list[float], other: str) -> str:
    """Medians and their ratio, plus the ratios of the runs made side by side (each rep)."""
    m, t = statistics.median(mine), statistics.median(theirs)
    pairs = sorted(a / b for a, b in zip(mine, theirs, strict=True))
    return (f"{name:<44} memlock {m:8.3f} s  {other} {t:8.3f} s  ratio {m / t:5.2f}x"
            f"  (per rep: median {statistics.median(pairs):.2f}x, "
            f"{pairs[0]:.2f}-{pairs[-1]:.2f}x)")


def bench_cold(big: str, reps: int, work: str) -> list[str]:
    """Both tools from an evicted file, the order swapped every rep (disk drift hits both)."""
    pidfile = os.path.join(work, "holder.pid")
    tools = {
        "vmtouch": ["vmtouch", "-q", "-d", "-l", "-w", "-P", pidfile, big],
        "memlock": [*MEMLOCK, "lock", "-q", "--daemon", "--pidfile", pidfile, big],
    }
    times: dict[str, list[float]] = {"vmtouch": [], "memlock": []}
    for rep in range(reps):
        for name in (("vmtouch", "memlock") if rep % 2 == 0 else ("memlock", "vmtouch")):
            evict(big)
            assert_evicted(big)
            back_guest_memory(os.path.getsize(big) + (1 << 30))
            times[name].append(timed(tools[name]))
            kill_pidfile(pidfile)
    return [ratio_line(f"cold {format_size(os.path.getsize(big))} lock until resident",
                       times["memlock"], times["vmtouch"], "vmtouch -dlw")]


def bench_resident(root: str, paths: list[str], reps: int) -> list[str]:
    subprocess.run(["vmtouch", "-qt", root], check=True)  # warm
    with_fincore = len(paths) <= 10_000  # one command line: 100,000 paths are too long
    vm, fc, mq, mv = [], [], [], []
    for rep in range(reps):
        first, second = (vm, mq) if rep % 2 == 0 else (mq, vm)
        for times in (first, second):
            times.append(timed(["vmtouch", "-q", root] if times is vm
                               else [*MEMLOCK, "resident", "-q", root]))
        if with_fincore:
            fc.append(timed(["fincore", *paths]))
            mv.append(timed([*MEMLOCK, "resident", root]))
    n = len(paths)
    lines = [ratio_line(f"resident, {n} files, summary only", mq, vm, "vmtouch    ")]
    if with_fincore:
        lines.append(ratio_line(f"resident, {n} files, a line per file", mv, fc, "fincore    "))
    return lines


def bench_rss_anon(big: str) -> list[str]:
    code = (
        "import memlock\n"
        "def anon():\n"
        "    for l in open('/proc/self/status'):\n"
        "        if l.startswith('RssAnon'): return int(l.split()[1])\n"
        f"memlock.touch({big!r})\n"
        "a = anon()\n"
        f"lf = memlock.lock_file({big!r})\n"
        "print(anon() - a)\n"
        "lf.unlock()\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    kib = int(out.strip())
    verdict = "ok" if kib < 1024 else "TOO MUCH"
    return [f"{'RssAnon growth locking a warm file':<44} {kib} KiB (< 1024 KiB: {verdict})"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--size", default="2G")
    ap.add_argument("--files", default="10000,100000",
                    help="file counts of the resident trees, comma-separated")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--resident-only", action="store_true",
                    help="only the resident trees (no 2 GiB file)")
    ap.add_argument("--no-pyc", action="store_true",
                    help="do not cache memlock's bytecode (compile it on every run)")
    args = ap.parse_args()
    if shutil.which("vmtouch") is None or shutil.which("fincore") is None:
        print("needs vmtouch (apt-get install vmtouch) and fincore (util-linux)")
        return 2
    work = tempfile.mkdtemp(prefix="memlock-bench-", dir=args.dir)
    lines = []
    try:
        if not args.no_pyc:
            use_pyc_cache(work)
        for count in (int(n) for n in args.files.split(",")):
            root = os.path.join(work, "tree")
            paths = make_tree(root, count)
            lines += bench_resident(root, paths, args.reps)
            shutil.rmtree(root)
        if args.resident_only:
            return report(args, lines)
        big = os.path.join(work, "big.bin")
        make_big(big, parse_size(args.size))
        lines += bench_rss_anon(big)
        if not args.skip_cold:
            lines += bench_cold(big, max(3, args.reps), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(args, lines)


def report(args: argparse.Namespace, lines: list[str]) -> int:
    pyc = "compiled on every run" if args.no_pyc else "cached"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# memlock files bench: {os.cpu_count()} CPUs, medians of {args.reps}+ runs, "
          f"memlock bytecode {pyc}, load after: {load}")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
