"""The kernel's own accounting, read independently of memlock, and the children tests run.

Tests judge memlock by these, never by its return values: the mappings of /proc/PID/smaps
(``lo``/``lf`` in VmFlags, ``Locked:``, ``Swap:``), the ``Vm*`` fields of /proc/PID/status,
mincore(2). Whatever changes limits, forks or may crash runs in a child started here: with
CAP_IPC_LOCK dropped (:func:`unprivileged_cmd`), under a RLIMIT_MEMLOCK, or as uid 65534
(:func:`run_as_nobody`). Standard library only: children import it as ``tests.kernel``.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import json
import mmap
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"

# -- /proc/PID/smaps ----------------------------------------------------------------------

#: One mapping of smaps: start, end (addresses), perms, inode, path (without " (deleted)"),
#: deleted, flags (the set of VmFlags; empty on kernels without them), and every ``kB``
#: field (Size, Rss, Locked, Swap, ...) in bytes.
Vma = dict[str, Any]

_HEAD = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)[ \t]*(.*)$", re.M)
_DELETED = " (deleted)"


def _smaps(pid: int | str) -> tuple[str, list[re.Match[str]]]:
    """The text of /proc/PID/smaps and its header lines, in address order."""
    with open(f"/proc/{pid}/smaps") as f:
        text = f.read()
    return text, list(_HEAD.finditer(text))


def _parse(text: str, heads: list[re.Match[str]], k: int) -> Vma:
    """The ``k``-th mapping of :func:`_smaps`."""
    head = heads[k]
    path = head[5]
    deleted = path.endswith(_DELETED)
    entry: Vma = {"start": int(head[1], 16), "end": int(head[2], 16), "perms": head[3],
                  "inode": int(head[4]), "path": path[:-len(_DELETED)] if deleted else path,
                  "deleted": deleted, "flags": set()}
    body_end = heads[k + 1].start() if k + 1 < len(heads) else len(text)
    for line in text[head.end():body_end].splitlines():
        key, _, rest = line.partition(":")
        if key == "VmFlags":
            entry["flags"] = set(rest.split())
        elif rest.endswith(" kB"):
            entry[key] = int(rest.split()[0]) * 1024
    return entry


def _holding(heads: list[re.Match[str]], starts: list[int], addr: int) -> int:
    """Index of the mapping holding ``addr``; LookupError if none does."""
    k = bisect.bisect_right(starts, addr) - 1
    if k < 0 or addr >= int(heads[k][2], 16):
        raise LookupError(f"no mapping holds {addr:#x}")
    return k


def mappings(pid: int | str = "self", path: str | None = None) -> list[Vma]:
    """Every mapping of the process (see :data:`Vma`), or only those of file ``path``."""
    text, heads = _smaps(pid)
    return [_parse(text, heads, k) for k, head in enumerate(heads)
            if path is None or head[5] in (path, path + _DELETED)]


def vmas(addrs: Sequence[int], pid: int | str = "self") -> list[Vma]:
    """The mapping holding each address, from one read of smaps."""
    text, heads = _smaps(pid)
    starts = [int(head[1], 16) for head in heads]
    return [_parse(text, heads, _holding(heads, starts, a)) for a in addrs]


def vma(addr: int, pid: int | str = "self") -> Vma:
    """The mapping holding ``addr``."""
    return vmas([addr], pid)[0]


def lock_state(flags: set[str]) -> str:
    """'full', 'onfault' or 'none': the lock state VmFlags say."""
    if "lo" not in flags:
        return "none"
    return "onfault" if "lf" in flags else "full"


def page_states(addrs: Sequence[int], pid: int | str = "self") -> list[str]:
    """:func:`page_state` of many addresses from one read of smaps."""
    return [lock_state(v["flags"]) for v in vmas(addrs, pid)]


def page_state(addr: int, pid: int | str = "self") -> str:
    """'full', 'onfault' or 'none': the kernel's lock state of the page holding ``addr``."""
    return page_states([addr], pid)[0]


# -- /proc/PID/status ---------------------------------------------------------------------


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of /proc/PID/status (VmLck, VmSize, RssAnon, ...) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def vmlck(pid: int | str = "self") -> int:
    """VmLck in bytes."""
    return status_bytes("VmLck", pid)


# -- memory and mincore(2) ----------------------------------------------------------------


def address_of(buf: object) -> int:
    """Address of a writable buffer's first byte."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))  # type: ignore[arg-type]


def anon(pages: int) -> mmap.mmap:
    """Fresh private anonymous memory, touched, page aligned."""
    m = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(pages):
        m[i * PAGE] = 1
    return m


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def resident_pages(addr: int, length: int) -> int:
    """Pages of [addr, addr+length) resident per mincore(2)."""
    start = addr - addr % PAGE
    n = (addr + length - start + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * n)()
    if _libc.mincore(start, n * PAGE, vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(v & 1 for v in vec)


def file_resident_pages(path: str | Path, offset: int = 0, length: int | None = None) -> int:
    """Pages of a file range (default: to its end) resident per mincore(2).

    Independent of memlock (and of Python's mmap module): the range is mapped with the C
    library's mmap, PROT_READ and MAP_SHARED. Meaningful for a caller who owns the file,
    may write it or is root: for anyone else the kernel reports every page.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size if length is None else offset + length
        if end <= offset:
            return 0
        first = offset - offset % PAGE
        addr = _libc.mmap(None, end - first, mmap.PROT_READ, mmap.MAP_SHARED, fd, first)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
    finally:
        os.close(fd)
    try:
        return resident_pages(addr + offset - first, end - offset)
    finally:
        _libc.munmap(addr, end - first)



# -- files and the page cache -------------------------------------------------------------


def make_file(path: str, size: int) -> str:
    """A file of ``size`` random bytes, written back to disk (so it can be evicted)."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    return path


def drop_cache(path: str | Path) -> None:
    """Write back and drop a file's pages (fsync, then POSIX_FADV_DONTNEED)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

# -- children -----------------------------------------------------------------------------

#: ``python -m memlock``: the command line a user runs.
CLI = (sys.executable, "-m", "memlock")

Arg = str | bytes


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a child Python that imports memlock from this checkout and this
    directory as package ``tests`` (whatever its working directory), plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


def python_cmd(code: str, *args: Arg) -> list[Arg]:
    """The command line that runs Python ``code`` (dedented) in this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def unprivileged_cmd(*cmd: Arg, limit: int | tuple[int, int] | None = None,
                     drop: Sequence[str] = ("ipc_lock",)) -> list[Arg]:
    """``cmd`` without the capabilities ``drop`` (setpriv; still uid 0), under a limit.

    Args:
        cmd: The command; none gives a prefix to put before one.
        limit: RLIMIT_MEMLOCK in bytes (soft and hard, or a (soft, hard) pair), by prlimit
            after the capabilities are gone (so without CAP_SYS_RESOURCE in ``drop`` it
            cannot be raised again).
        drop: Capability names without ``CAP_``; empty keeps them all.
    """
    out: list[Arg] = []
    if drop:
        caps = ",".join(f"-{cap}" for cap in drop)
        out += ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
    if limit is not None:
        soft, hard = limit if isinstance(limit, tuple) else (limit, limit)
        out += ["prlimit", f"--memlock={soft}:{hard}", "--"]
    return [*out, *cmd]


def run_cmd(
    cmd: Sequence[Arg],
    *,
    unprivileged: bool = False,
    drop: Sequence[str] = (),
    limit: int | tuple[int, int] | None = None,
    prefix: Sequence[Arg] = (),
    cwd: str | bytes | Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end in the environment of :func:`child_env`; never raises on exit.

    Output is text (UTF-8; bytes that are not come back as surrogates, as os.fsdecode
    gives them).

    Args:
        cmd: The command line.
        unprivileged: Without CAP_IPC_LOCK (still uid 0).
        drop: More capabilities to drop (see :func:`unprivileged_cmd`).
        limit: RLIMIT_MEMLOCK (soft and hard, or a (soft, hard) pair) in bytes.
        prefix: A command that runs ``cmd`` (``prlimit --nofile=64``, ...), inside the
            capability drop and the limit.
        cwd: Working directory.
        env: Variables added to :func:`child_env`.
        input: Standard input.
        timeout: Seconds.
    """
    drop = [*(["ipc_lock"] if unprivileged else []), *drop]
    full = unprivileged_cmd(*prefix, *cmd, limit=limit, drop=drop)
    return subprocess.run(full, capture_output=True, encoding="utf-8",
                          errors="surrogateescape", input=input, env=child_env(env), cwd=cwd,
                          timeout=timeout, check=False)


#: A prelude for child code that judges memlock by this module (``prelude=`` of run_child).
CHILD_PRELUDE = """\
import errno, json, mmap, os, sys
import memlock
from tests.kernel import (PAGE, address_of, anon, mappings, page_state, page_states,
                          status_bytes, vma, vmlck)
"""


def run_child(code: str, *, args: Sequence[Arg] = (), prelude: str = "", as_nobody: bool = False,
              **options: Any) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a fresh interpreter, with ``sys.argv[1:]`` ``args``.

    Args:
        code: Python source, dedented.
        args: The child's arguments.
        prelude: Python source run first (dedented on its own), such as CHILD_PRELUDE.
        as_nobody: As uid 65534 (:func:`run_as_nobody`, whose options apply: cwd, env,
            timeout).
        **options: Those of :func:`run_cmd` (unprivileged, limit, cwd, env, timeout, ...).
    """
    source = textwrap.dedent(prelude) + textwrap.dedent(code)
    if as_nobody:
        return run_as_nobody(source, args=args, **options)
    return run_cmd(python_cmd(source, *args), **options)


def run_cli(*args: Arg, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m memlock ARGS``; ``options`` are those of :func:`run_cmd`."""
    return run_cmd([*CLI, *args], **options)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a child, once it exited 0 (else fail with its output)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The last line a child printed, as JSON, once it exited 0."""
    return json.loads(output(proc).strip().splitlines()[-1])


@contextlib.contextmanager
def locking_child(nbytes: int) -> Iterator[int]:
    """A child that holds ``nbytes`` of fresh anonymous memory locked with memlock.lock
    while the block runs; yields its pid. It has exited (and been reaped) afterwards."""
    code = f"""
        import mmap, sys, memlock
        m = mmap.mmap(-1, {nbytes}, flags=mmap.MAP_PRIVATE)
        lk = memlock.lock(m)
        print("ready", flush=True)
        sys.stdin.read()
    """
    with subprocess.Popen(python_cmd(code), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, env=child_env()) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            yield child.pid
        finally:
            child.communicate("", timeout=60)


def have(tool: str) -> bool:
    """Whether ``tool`` is on PATH."""
    return shutil.which(tool) is not None


# -- running as uid 65534 -----------------------------------------------------------------

NOBODY = 65534
#: tests/ modules a uid-65534 child may import as ``tests.NAME`` (standard library only).
NOBODY_TEST_MODULES = ("__init__.py", "kernel.py")
#: Interpreters tried for uid 65534, in order: the first that uid can run (3.11+) is used.
NOBODY_PYTHONS = ("/usr/bin/python3", sys.executable)
_nobody_python: list[str] = []  # the interpreter found, once per test session


def _reachable_by_all(path: str) -> bool:
    """Whether every uid can traverse ``path`` and each directory above it."""
    p = Path(path).resolve()
    return all(os.stat(d).st_mode & stat.S_IXOTH for d in (p, *p.parents))


@contextlib.contextmanager
def world_dir(prefix: str = "memlock-") -> Iterator[Path]:
    """A fresh directory of mode 755 that any uid can reach (not in root's home); removed.

    For files that another uid must see: pytest's ``tmp_path`` lies under a mode-700
    directory, and a checkout may lie in root's home.
    """
    bases = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
    base = next((b for b in bases if os.path.isdir(b) and _reachable_by_all(b)), None)
    if base is None:
        raise RuntimeError(f"no directory that every uid can reach among {bases}")
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path)


def _as_nobody(argv: Sequence[Arg], env: Mapping[str, str], cwd: str | Path,
               timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as uid/gid 65534 with no groups, with exactly ``env``, text as run_cmd."""
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="surrogateescape",
                          env=dict(env), cwd=cwd, timeout=timeout, check=False)


def _find_nobody_python(env: Mapping[str, str], cwd: Path) -> str | None:
    """The first of NOBODY_PYTHONS that uid 65534 can run; it must then import memlock."""
    if _nobody_python:
        return _nobody_python[0]
    probe = "import sys\nprint(sys.version_info >= (3, 11), flush=True)\nimport memlock\n"
    for py in dict.fromkeys(NOBODY_PYTHONS):
        proc = _as_nobody([py, "-s", "-c", probe], env, cwd, 60)
        if proc.stdout.strip() != "True":
            continue  # not readable by that uid, or too old
        if proc.returncode != 0:
            raise AssertionError(f"uid {NOBODY} runs {py} but cannot import memlock from a "
                                 f"copy of src/memlock:\n{proc.stderr}")
        _nobody_python.append(py)
        return py
    return None


def run_as_nobody(
    code: str,
    *,
    args: Sequence[Arg] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` (dedented) as uid/gid 65534 with no groups.

    That uid cannot read root's home (mode 700), where the test session's Python and the
    checkout may be. So src/memlock (with the built C module) and NOBODY_TEST_MODULES (as
    package ``tests``) are copied into a mode-755 directory, and the child runs the first
    interpreter of NOBODY_PYTHONS that uid can run (Debian's /usr/bin/python3 here). It
    sees PATH, PYTHONPATH (the copy), the MEMLOCK_* variables of this process, and ``env``.
    The copy is removed afterwards. Skips the calling test without root, setpriv or a
    usable interpreter; fails it if the interpreter runs but cannot import memlock.

    Args:
        code: Python source.
        args: ``sys.argv[1:]`` of the child.
        env: Extra environment variables.
        cwd: Working directory (default: the copy, which that uid can read).
        timeout: Seconds.
    """
    import pytest  # not at the top: children import this module without pytest

    if os.geteuid() != 0:
        pytest.skip(f"switching to uid {NOBODY} needs root")
    if not have("setpriv"):
        pytest.skip(f"switching to uid {NOBODY} needs setpriv (util-linux)")
    with world_dir("memlock-nobody-") as tree:
        shutil.copytree(SRC / "memlock", tree / "memlock",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (tree / "tests").mkdir()
        for name in NOBODY_TEST_MODULES:
            shutil.copy(REPO / "tests" / name, tree / "tests" / name)
        for p in tree.rglob("*"):  # whatever the umask of the checkout
            p.chmod(p.stat().st_mode | (0o555 if p.is_dir() else 0o444))
        full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree),
                    "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8"}
        full_env.update((k, v) for k, v in os.environ.items() if k.startswith("MEMLOCK_"))
        full_env.update(env or {})
        py = _find_nobody_python(full_env, tree)
        if py is None:
            pytest.skip(f"no Python 3.11+ that uid {NOBODY} can run among {NOBODY_PYTHONS}")
        return _as_nobody([py, "-s", "-c", textwrap.dedent(code), *args], full_env,
                          tree if cwd is None else cwd, timeout)


# -- what a test must leave as it found it ------------------------------------------------

#: Where tests/pressure.py makes its memory cgroups (v1, v2).
CGROUP_DIRS = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))
SYSCTLS = ("vm/max_map_count", "kernel/core_pattern", "kernel/core_uses_pid",
           "vm/overcommit_memory", "vm/swappiness")
#: Each rlimit once (RLIMIT_OFILE is RLIMIT_NOFILE on Linux).
RLIMITS = tuple(sorted({getattr(resource, n): n for n in sorted(dir(resource), reverse=True)
                        if n.startswith("RLIMIT_")}.values()))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return f"<{exc.strerror}>"


def machine_state() -> dict[str, object]:
    """Swap devices, memlock-test cgroups, mounts, this process's rlimits and some sysctls.

    Cheap (a few small /proc reads; ~0.1 ms): taken before and after every test.
    """
    return {
        "swap devices": sorted(line.split()[0]
                               for line in _read("/proc/swaps").splitlines()[1:]),
        "memlock cgroups": sorted(str(p) for d in CGROUP_DIRS
                                  for p in d.glob("memlock-test-*")),
        "mounts": sorted(_read("/proc/self/mountinfo").splitlines()),
        "rlimits": {n: resource.getrlimit(getattr(resource, n)) for n in RLIMITS},
        "sysctls": {n: _read(f"/proc/sys/{n}").strip() for n in SYSCTLS},
    }


def machine_changes(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    """What differs between two :func:`machine_state` snapshots, one line per change."""
    out: list[str] = []
    for key, was in before.items():
        now = after[key]
        if isinstance(was, dict) and isinstance(now, dict):
            out += [f"{key}: {k} {was.get(k)!r} -> {now.get(k)!r}"
                    for k in sorted(was.keys() | now.keys()) if was.get(k) != now.get(k)]
        elif isinstance(was, list) and isinstance(now, list):
            out += [f"{key}: left behind {x}" for x in now if x not in was]
            out += [f"{key}: gone {x}" for x in was if x not in now]
    return out
