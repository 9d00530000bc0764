"""SecureBuffer across processes: core dumps, fork, guard pages, limits, capacity, getpass.

Everything here runs in child processes: they crash on purpose, lower RLIMIT_MEMLOCK, drop
CAP_IPC_LOCK (setpriv, still uid 0: privilege is the capability) or install seccomp
filters. The evidence is the kernel's: a core file written by gcore, a child's exit
signal, VmLck and smaps VmFlags, the terminal's echo flag.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import termios
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from memlock._secrets import _pool as _securemem

from .kernel import child_env, have, last_json, python_cmd, run_child

BACKENDS = ["anonymous"]
if _securemem.probe_memfd_secret():
    BACKENDS.append("memfd_secret")

# Helpers every child script gets.
PRELUDE = textwrap.dedent(
    """
    import bisect, ctypes, json, os, resource, signal, sys
    import memlock
    from tests.kernel import address_of, mappings, vmlck

    def addr(sb):
        with sb.view() as v:
            return address_of(v)

    def set_soft_limit(n):
        resource.setrlimit(resource.RLIMIT_MEMLOCK,
                           (n, resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]))
    """
)


def run_secure_child(code: str, *, timeout: float = 120,
                     **options: Any) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + ``code`` in a child; ``options`` as for tests.kernel.run_cmd."""
    return run_child(code, prelude=PRELUDE, timeout=timeout, **options)


needs_setpriv = pytest.mark.skipif(not have("setpriv"), reason="setpriv (util-linux) not installed")


# -- core dump ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gcore") is None, reason="gcore (gdb) not installed")
def test_core_dump_has_no_secret_but_has_the_control(tmp_path: Path) -> None:
    kinds = [(b, iso, n) for b in BACKENDS for iso, n in ((False, 48), (True, 48),
                                                          (False, 6000))]
    # Generated at run time and sent through a pipe straight into locked memory
    # (read_secret uses readv): the child never holds them in a bytes or str object.
    secrets = [os.urandom(n // 2).hex().encode() for _, _, n in kinds]
    control = b"CONTROL-" + os.urandom(20).hex().encode()
    code = f"""
        bufs = []
        for backend, isolated, n in {kinds!r}:
            bufs.append(memlock.read_secret(0, n, isolated=isolated, backend=backend))
        control = bytearray({len(control)})
        os.readv(0, [control])
        os.write(1, b"ready\\n")
        os.read(0, 1)  # until the parent closes stdin
        for b in bufs:
            b.close()
    """
    with subprocess.Popen(
            python_cmd(PRELUDE + textwrap.dedent(code)), env=child_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdin and child.stdout and child.stderr
        try:
            child.stdin.write(b"".join(secrets) + control)
            child.stdin.flush()
            assert child.stdout.readline() == b"ready\n"
            prefix = tmp_path / "core"
            subprocess.run(["gcore", "-o", str(prefix), str(child.pid)], capture_output=True,
                           timeout=180, check=False)
            core = Path(f"{prefix}.{child.pid}").read_bytes()
        finally:
            child.stdin.close()
            child.wait(timeout=60)
        errors = child.stderr.read()
    assert child.returncode == 0, errors
    assert control in core  # the dump works and ordinary memory is in it
    for (backend, isolated, n), secret in zip(kinds, secrets, strict=True):
        assert secret[:16] not in core, (backend, isolated, n)


# -- fork -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("isolated", [False, True])
def test_forked_child_never_reads_the_secret(backend: str, isolated: bool) -> None:
    code = f"""
        sb = memlock.SecureBuffer(32, isolated={isolated}, backend={backend!r})
        sb.view()[:] = b"S" * 32
        a = addr(sb)
        inherited = sb.view()
        libc_fork = ctypes.CDLL(None).fork  # a fork Python's at-fork handlers miss
        out = {{}}
        for probe in ("api", "raw", "view", "new", "cfork"):
            pid = libc_fork() if probe == "cfork" else os.fork()
            if pid == 0:
                if probe == "cfork":  # only the kernel protects the secret here
                    os._exit(10 if ctypes.string_at(a, 32) == bytes(32) else 11)
                if probe == "api":
                    try:
                        sb.view()
                        os._exit(3)
                    except ValueError:
                        os._exit(0 if sb.closed else 4)
                if probe == "raw":
                    os._exit(10 if ctypes.string_at(a, 32) == bytes(32) else 11)
                if probe == "view":
                    os._exit(10 if bytes(inherited) == bytes(32) else 11)
                if probe == "new":  # the child has a pool of its own, locked
                    assert vmlck() == 0  # locks are not inherited
                    with memlock.SecureBuffer(32, isolated={isolated},
                                              backend={backend!r}) as mine:
                        mine.view()[:] = b"c" * 32
                        ok = vmlck() > 0 and bytes(mine.view()) == b"c" * 32
                    sb.close()  # inherited: a no-op, never touches the parent's memory
                    os._exit(0 if ok else 5)
            _, status = os.waitpid(pid, 0)
            out[probe] = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                          else os.WEXITSTATUS(status))
        out["parent_intact"] = bytes(inherited) == b"S" * 32
        del inherited
        sb.close()
        print(json.dumps(out))
    """
    out = last_json(run_secure_child(code))
    assert out["parent_intact"] is True
    assert out["api"] == 0 and out["new"] == 0
    if backend == "anonymous":  # MADV_WIPEONFORK: the child reads zeros
        assert out["raw"] == out["view"] == out["cfork"] == 10
    else:  # MADV_DONTFORK: no mapping in the child
        assert out["raw"] == out["view"] == out["cfork"] == -signal.SIGSEGV


# -- guard pages -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("size", "isolated", "where"), [
    (32, True, "end"), (5000, False, "end"), (4088, True, "end"), (32, True, "noaccess"),
])
def test_guard_page_sigsegv(backend: str, size: int, isolated: bool, where: str) -> None:
    code = f"""
        sb = memlock.SecureBuffer({size}, isolated={isolated}, backend={backend!r})
        a = addr(sb)
        ctypes.memset(a + {size} - 1, 1, 1)  # the last byte is fine
        print("alive", flush=True)
        if {where!r} == "end":
            ctypes.memset(a + {size}, 1, 1)  # one byte past the end
        else:
            sb.noaccess()
            ctypes.string_at(a, 1)
        print("survived", flush=True)
    """
    proc = run_secure_child(code)
    assert "alive" in proc.stdout and "survived" not in proc.stdout, proc.stderr
    assert proc.returncode == -signal.SIGSEGV, proc.stderr


# -- limits and capacity -----------------------------------------------------------------------


@needs_setpriv
@pytest.mark.parametrize("backend", BACKENDS)
def test_100k_secrets_unprivileged_all_locked(backend: str) -> None:
    code = f"""
        set_soft_limit(8 << 20)
        assert not memlock.limits().privileged
        before = vmlck()
        bufs = [memlock.SecureBuffer(32, backend={backend!r}) for _ in range(100_000)]
        addrs = []
        for i, b in enumerate(bufs):
            with b.view() as v:
                v[:4] = i.to_bytes(4, "little")
                addrs.append(address_of(v))
        maps = mappings()
        starts = [m["start"] for m in maps]
        used = set()
        for a in addrs:
            m = maps[bisect.bisect_right(starts, a) - 1]
            assert m["start"] <= a and a + 32 <= m["end"], hex(a)
            assert "lo" in m["flags"] and "dd" in m["flags"], m
            used.add(m["start"])
        ok = all(bytes(b.view()[:4]) == i.to_bytes(4, "little") for i, b in enumerate(bufs))
        print(json.dumps({{"locked": vmlck() - before, "vmas": len(used), "ok": ok,
                          "distinct": len(set(addrs)), "total_vmas": len(maps)}}))
    """
    out = last_json(run_secure_child(code, unprivileged=True, timeout=300))
    assert out["ok"] is True and out["distinct"] == 100_000
    locked = out["locked"]
    assert isinstance(locked, int) and 100_000 * 40 <= locked <= 8 << 20
    vmas = out["vmas"]
    assert isinstance(vmas, int) and vmas < 64  # chunks, not a mapping per secret


@needs_setpriv
@pytest.mark.parametrize("backend", BACKENDS)
def test_small_limit_adapts_then_lock_limit_error(backend: str) -> None:
    code = f"""
        set_soft_limit(64 * 1024)
        B = {backend!r}
        first = [memlock.SecureBuffer(c, backend=B) for c in (16, 32, 64, 128, 256, 512,
                                                               1024, 2048)]
        keep = []
        try:
            while len(keep) < 100_000:
                keep.append(memlock.SecureBuffer(32, backend=B))
        except memlock.LockLimitError as exc:
            err = exc
        locked = vmlck()
        for b in keep[: len(keep) // 2]:
            b.close()
        again = [memlock.SecureBuffer(32, backend=B) for _ in range(100)]
        try:
            memlock.SecureBuffer(64 * 1024, isolated=True, backend=B)
            iso = None
        except memlock.LockLimitError as exc:
            iso = [exc.requested, exc.limit]
        print(json.dumps({{"n": len(keep), "limit": err.limit, "requested": err.requested,
                          "locked": err.locked, "hint": err.hint, "msg": str(err),
                          "vmlck": locked, "iso": iso}}))
    """
    out = last_json(run_secure_child(code, unprivileged=True))
    n = out["n"]
    # 16 pages: one per class, the 8 left for class 32: 9 pages of 85 slots (32 bytes
    # between two 8-byte canaries) = 765 slots.
    assert isinstance(n, int) and 700 < n < 100_000
    assert out["limit"] == 64 * 1024
    requested = out["requested"]
    assert isinstance(requested, int) and requested >= 4096
    assert isinstance(out["locked"], int)
    assert out["hint"] and "RLIMIT_MEMLOCK" in str(out["msg"])
    vmlck = out["vmlck"]
    assert isinstance(vmlck, int) and vmlck <= 64 * 1024
    assert out["iso"] == [64 * 1024 + 4096, 64 * 1024]


@needs_setpriv
def test_zero_limit_refused_with_hint() -> None:
    # Limit 0 without CAP_IPC_LOCK is a permission problem whatever the kernel's errno
    # (EPERM from mlock for the anonymous backend, EAGAIN from mmap for memfd_secret).
    code = """
        set_soft_limit(0)
        res = {}
        for backend in BACKENDS:
            for isolated in (False, True):
                try:
                    memlock.SecureBuffer(32, backend=backend, isolated=isolated)
                    res[f"{backend} {isolated}"] = None
                except memlock.MemlockError as exc:
                    res[f"{backend} {isolated}"] = [type(exc).__name__, exc.errno,
                                                    bool(exc.hint), vmlck()]
        print(json.dumps(res))
    """.replace("BACKENDS", repr(BACKENDS))
    out = last_json(run_secure_child(code, unprivileged=True))
    assert out == {f"{b} {i}": ["LockPermissionError", errno.EPERM, True, 0]
                   for b in BACKENDS for i in (False, True)}


def test_memfd_secret_refused_by_the_kernel() -> None:
    # A seccomp filter makes the kernel answer ENOSYS to memfd_secret, as a kernel
    # without CONFIG_SECRETMEM does.
    code = """
        class F(ctypes.Structure):
            _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                        ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
        class P(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(F))]
        prog = (F * 4)(F(0x20, 0, 0, 0), F(0x15, 0, 1, 447),
                       F(0x06, 0, 0, 0x00050000 | 38), F(0x06, 0, 0, 0x7FFF0000))
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
        fp = P(4, prog)
        assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0  # seccomp filter
        try:
            memlock.SecureBuffer(32, backend="memfd_secret")
            refused = None
        except memlock.UnsupportedOperation as exc:
            refused = str(exc)
        with memlock.SecureBuffer(32) as sb:
            auto = sb.backend
        print(json.dumps({"refused": refused, "auto": auto}))
    """
    if os.uname().machine != "x86_64":
        pytest.skip("the seccomp filter hard-codes the x86_64 syscall number 447")
    out = last_json(run_secure_child(code))
    assert out["refused"] and "memfd_secret" in str(out["refused"])
    assert out["auto"] == "anonymous"


# -- getpass on a real terminal -------------------------------------------------------------------


def _getpass_session(keys: list[bytes], prompt: str = "Secret: ") -> dict[str, object]:
    """Run getpass in a child whose controlling terminal is a new pty; type ``keys``."""
    master, slave = pty.openpty()
    result = Path(f"/tmp/memlock-getpass-{os.getpid()}-{time.monotonic_ns()}")
    code = f"""
        import fcntl, termios
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty becomes /dev/tty
        try:
            with memlock.getpass({prompt!r}) as sb:
                out = {{"len": len(sb), "hex": bytes(sb.view()).hex()}}
        except EOFError:
            out = {{"eof": True}}
        with open({str(result)!r}, "w") as f:
            json.dump(out, f)
    """
    child = subprocess.Popen(
        python_cmd(PRELUDE + textwrap.dedent(code)), env=child_env(),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    seen = b""
    echo_at_prompt = None
    try:
        original = termios.tcgetattr(slave)
        deadline = time.monotonic() + 60
        while prompt.encode() not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 1024)
        assert prompt.encode() in seen, seen
        echo_at_prompt = bool(termios.tcgetattr(slave)[3] & termios.ECHO)
        for k in keys:
            os.write(master, k)
            time.sleep(0.02)
        child.wait(timeout=60)
        while select.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 1024)
            except OSError:
                break
        restored = termios.tcgetattr(slave) == original
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
        os.close(slave)
    assert child.returncode == 0
    out: dict[str, object] = json.loads(result.read_text())
    result.unlink()
    out.update(echo_at_prompt=echo_at_prompt, restored=restored,
               shown=seen.decode("latin-1"))
    return out


def test_getpass_echo_off_before_prompt_and_editing() -> None:
    out = _getpass_session([b"hunter2", b"x", b"\x7f", b"\xc3\xa9", b"\x7f", b"!\r"])
    assert out["echo_at_prompt"] is False  # echo was already off when the prompt showed
    assert bytes.fromhex(str(out["hex"])) == b"hunter2!"  # backspace: one char, é whole
    assert out["len"] == 8
    assert "hunter" not in str(out["shown"])  # never echoed
    assert out["restored"] is True


def test_getpass_kill_line_and_eof() -> None:
    out = _getpass_session([b"wrong", b"\x15", b"right\n"])
    assert bytes.fromhex(str(out["hex"])) == b"right"
    out = _getpass_session([b"\x04"])
    assert out["eof"] is True and out["restored"] is True


def test_forked_child_cannot_reach_new_memory_through_an_inherited_memfd_secret_view() -> None:
    # MADV_DONTFORK leaves a hole in the child where the secret was; the child's own
    # mappings must never land there (an inherited view would then read them).
    if not _securemem.probe_memfd_secret():
        pytest.skip("memfd_secret is not available on this kernel")
    proc = run_secure_child("""
        import ctypes, mmap
        sb = memlock.SecureBuffer(32, backend="memfd_secret")
        v = sb.view()
        v[:4] = b"abcd"
        a = ctypes.addressof(ctypes.c_char.from_buffer(v))
        pid = os.fork()
        if pid == 0:
            maps = []
            for _ in range(3000):
                m = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE)
                base = ctypes.addressof(ctypes.c_char.from_buffer(m))
                if base <= a < base + 4096:
                    os._exit(3)          # a new mapping under the inherited view
                maps.append(m)
            v[0]                         # must fault
            os._exit(4)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                          "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}))
    """)
    assert last_json(proc) == {"signal": signal.SIGSEGV, "exit": None}
