"""The kernel's own accounting, read independently of memlock's parsers.

Tests judge memlock by these, never by its return values: the VMA that holds an address
in /proc/PID/smaps (``lo``/``lf`` in VmFlags, ``Locked:``, ``Swap:``), VmLck, mincore.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
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

PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"


def vma(addr: int, pid: int | str = "self") -> dict[str, object]:
    """The smaps entry of the mapping holding ``addr``: flags (set) and kB fields (bytes)."""
    found: dict[str, object] | None = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and ":" not in head:
                if found is not None:
                    break
                lo, hi = (int(x, 16) for x in head.split("-"))
                if lo <= addr < hi:
                    found = {"start": lo, "end": hi}
            elif found is not None:
                key, _, rest = line.partition(":")
                if key == "VmFlags":
                    found["flags"] = set(rest.split())
                elif rest.strip().endswith("kB"):
                    found[key] = int(rest.split()[0]) * 1024
    if found is None:
        raise LookupError(f"no mapping holds {addr:#x}")
    return found


def page_state(addr: int, pid: int | str = "self") -> str:
    """'full', 'onfault' or 'none': the kernel's lock state of the page holding ``addr``."""
    flags = vma(addr, pid)["flags"]
    assert isinstance(flags, set)
    if "lo" not in flags:
        return "none"
    return "onfault" if "lf" in flags else "full"


_VMA = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ", re.M)


def page_states(addrs: list[int], pid: int | str = "self") -> list[str]:
    """:func:`page_state` of many addresses from one read of smaps."""
    with open(f"/proc/{pid}/smaps") as f:
        text = f.read()
    heads = [(int(m.group(1), 16), int(m.group(2), 16), m.end()) for m in _VMA.finditer(text)]
    starts = [lo for lo, _, _ in heads]
    out = []
    for a in addrs:
        k = bisect.bisect_right(starts, a) - 1
        if k < 0 or not heads[k][0] <= a < heads[k][1]:
            raise LookupError(f"no mapping holds {a:#x}")
        at = text.index("VmFlags:", heads[k][2])
        flags = text[at + 8:text.index("\n", at)].split()
        out.append("none" if "lo" not in flags else ("onfault" if "lf" in flags else "full"))
    return out


def status_kb(field: str, pid: int | str = "self") -> int:
    """A ``Vm*`` field of /proc/PID/status in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def vmlck(pid: int | str = "self") -> int:
    """VmLck in bytes."""
    return status_kb("VmLck", pid)


def address_of(buf: object) -> int:
    """Address of a writable buffer's first byte."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))  # type: ignore[arg-type]


def anon(pages: int) -> mmap.mmap:
    """Fresh private anonymous memory, touched, page aligned."""
    m = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(pages):
        m[i * PAGE] = 1
    return m


def resident_pages(addr: int, length: int) -> int:
    """Pages of [addr, addr+length) resident per mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    start = addr - addr % PAGE
    n = (addr + length - start + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * n)()
    if libc.mincore(start, n * PAGE, vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(v & 1 for v in vec)


def file_resident_pages(path: str | Path) -> int:
    """Pages of a whole file resident per mincore(2) over our own read-only shared mapping.

    Independent of memlock (and of Python's mmap module): the file is mapped with the C
    library's mmap, PROT_READ and MAP_SHARED, up to its end. Meaningful for a caller who
    owns the file, may write it or is root: for anyone else the kernel reports every page.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mmap.restype = ctypes.c_void_p
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
    finally:
        os.close(fd)
    try:
        return resident_pages(addr, size)
    finally:
        libc.munmap(addr, size)


def child_env() -> dict[str, str]:
    """Environment for a child Python that imports memlock from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(
    code: str,
    *,
    unprivileged: bool = False,
    limit: int | None = None,
    timeout: float = 60,
    args: list[str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python.

    Args:
        code: Python source (dedented).
        unprivileged: Drop CAP_IPC_LOCK (still uid 0) with setpriv.
        limit: RLIMIT_MEMLOCK (soft and hard) for the child, in bytes.
        timeout: Seconds.
        args: Extra argv for the child.
        cwd: Working directory (the repo root lets the child import ``tests.kernel``).
    """
    cmd = [sys.executable, "-c", textwrap.dedent(code), *(args or [])]
    if limit is not None:
        cmd = ["prlimit", f"--memlock={limit}:{limit}", "--", *cmd]
    if unprivileged:
        cmd = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=child_env(), check=False, cwd=cwd)


def have(tool: str) -> bool:
    """Whether ``tool`` is on PATH."""
    return shutil.which(tool) is not None


# -- running as uid 65534 -----------------------------------------------------------------

NOBODY = 65534
#: tests/ modules a uid-65534 child may import as ``tests.NAME`` (standard library only).
NOBODY_TEST_MODULES = ("__init__.py", "kernel.py", "_files_helpers.py")
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


def _as_nobody(argv: list[str], env: Mapping[str, str], cwd: str | Path,
               timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(env), cwd=cwd,
                          timeout=timeout, check=False)


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
    args: Sequence[str] = (),
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
