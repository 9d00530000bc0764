"""At vm.max_map_count: the errors name the mapping count and the sysctl, not RLIMIT_MEMLOCK.

Each child fills its own mapping count for real (one big PROT_NONE mapping, every other page
made readable, until the kernel refuses the next split: ~0.2 s for the default 65530), then
makes the calls a SecureBuffer and a partial lock make, and translates what the kernel
answered. Nothing global changes: the count is per process, the child exits. Facts checked
on this kernel (6.x): at the maximum mprotect of part of a mapping, an mmap with MAP_FIXED
over part of one, mlock and munlock of part of one all answer ENOMEM; a lock of a whole
mapping still succeeds.
"""

from __future__ import annotations

import errno
import sys

import pytest

from memlock._platform import BACKEND
from memlock.errors import LockLimitError, MemlockError

from .kernel import PAGE, last_json, run_child

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="vm.max_map_count is Linux's")

# Pasted into each child. After fill_map_count() the child can make almost no new mapping:
# it records what it needs, calls release(), and only then prints.
FILL = """
import ctypes, errno, json, os
import memlock, memlock.lowlevel
from memlock import _lock  # imported now: at the max, an import may find no memory
from memlock._platform import BACKEND
from memlock._platform._libc import real_libc
from tests.kernel import PAGE as P, page_state, vmlck

L = real_libc()
PROT_NONE, PROT_READ, PROT_RW = 0, 1, 3
MAP_SHARED, MAP_PRIVATE_ANON, MAP_FIXED = 0x01, 0x22, 0x10
FILLS = []

def fill_map_count():
    # Split one mapping page by page until the kernel refuses the next split.
    pairs = 1 << 16
    addr, err = L.mmap(0, 2 * pairs * P, PROT_NONE, MAP_PRIVATE_ANON)
    assert not err, err
    FILLS.append((addr, 2 * pairs * P))
    for i in range(pairs):
        err = L.mprotect(addr + 2 * i * P, P, PROT_READ)
        if err:
            assert err == errno.ENOMEM, err
            return
    raise AssertionError("vm.max_map_count is above 131072: not filled")

def release():
    for addr, size in FILLS:
        L.munmap(addr, size)
    FILLS.clear()

def map_lines():
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)

def anon(pages, prot=PROT_RW):
    addr, err = L.mmap(0, pages * P, prot, MAP_PRIVATE_ANON)
    assert not err, err
    if prot == PROT_RW:
        ctypes.memset(addr, 1, pages * P)
    return addr

def describe(exc):
    return None if exc is None else [type(exc).__name__, exc.errno, exc.strerror, exc.hint]
"""


def _run(body: str, *, unprivileged: bool = False) -> dict[str, object]:
    """Run FILL then ``body`` in a child; its JSON line."""
    out: dict[str, object] = last_json(run_child(body, prelude=FILL, unprivileged=unprivileged))
    return out


def _assert_names_map_count(desc: object, op: str, lines: int, most: int) -> None:
    """A plain MemlockError(ENOMEM) naming the count, the sysctl and the fix."""
    assert isinstance(desc, list), desc
    kind, err, text, hint = desc
    assert kind == "MemlockError" and err == errno.ENOMEM, desc
    assert text.startswith(f"{op}: "), text
    assert f"vm.max_map_count {most}" in text, text
    count = int(text.split("the process has ")[1].split()[0])
    assert abs(count - lines) <= 3, (count, lines)  # the count when the call failed
    assert "RLIMIT_MEMLOCK" not in text and "ulimit" not in hint, desc
    assert f"`sysctl -w vm.max_map_count={2 * most}`" in hint, hint
    assert "pooled SecureBuffers use far fewer mappings than isolated ones" in hint, hint


@pytest.mark.parametrize("unprivileged", [False, True], ids=["cap_ipc_lock", "unprivileged"])
def test_secret_memory_calls_at_the_max_name_the_mapping_count(unprivileged: bool) -> None:
    out = _run("""
        reserve_anon = anon(3, PROT_NONE)      # a SecureBuffer's reservations: guard, data,
        reserve_secret = anon(3, PROT_NONE)    # guard; the data page is then remapped
        fd, err = L.memfd_secret(0)
        assert not err, err
        os.ftruncate(fd, P)
        locked_before = vmlck()
        fill_map_count()
        lines = map_lines()
        # the anonymous backend: make the data page writable
        err_mprotect = L.mprotect(reserve_anon + P, P, PROT_RW)
        exc_mprotect = BACKEND.map_error("mprotect", err_mprotect, P)
        # the memfd_secret backend: map the secret page over the data page
        _, err_secret = L.mmap(reserve_secret + P, P, PROT_RW, MAP_SHARED | MAP_FIXED, fd)
        exc_secret = BACKEND.map_error("mmap(memfd_secret)", err_secret, P)
        release()
        most = int(open("/proc/sys/vm/max_map_count").read())
        print(json.dumps({"errs": [err_mprotect, err_secret], "lines": lines, "max": most,
                          "mprotect": describe(exc_mprotect),
                          "secret": describe(exc_secret),
                          "vmlck": [locked_before, vmlck()]}))
    """, unprivileged=unprivileged)
    assert out["errs"] == [errno.ENOMEM, errno.ENOMEM]  # the kernel's answer at the max
    lines, most = out["lines"], out["max"]
    assert isinstance(lines, int) and isinstance(most, int) and lines >= most
    _assert_names_map_count(out["mprotect"], "mprotect", lines, most)
    _assert_names_map_count(out["secret"], "mmap(memfd_secret)", lines, most)
    assert out["vmlck"] == [0, 0]


def test_partial_lock_and_unlock_at_the_max_name_the_mapping_count() -> None:
    out = _run("""
        part = anon(3)                  # lock() of its middle page must split it
        whole = anon(3)                 # locked whole now; unlocking its middle splits it
        memlock.lowlevel.mlock(whole, 3 * P)
        view = (ctypes.c_ubyte * P).from_address(part + P)
        fill_map_count()
        lines = map_lines()
        try:
            memlock.lock(view)
            exc_lock = None
        except memlock.MemlockError as e:
            exc_lock = e
        try:
            memlock.lowlevel.munlock(whole + P, P)
            exc_unlock = None
        except memlock.MemlockError as e:
            exc_unlock = e
        try:
            memlock.lowlevel.mlock(whole, 3 * P)  # whole mappings split nothing
            whole_ok = True
        except memlock.MemlockError:
            whole_ok = False
        release()
        most = int(open("/proc/sys/vm/max_map_count").read())
        print(json.dumps({"lines": lines, "max": most, "whole_ok": whole_ok,
                          "lock": describe(exc_lock), "unlock": describe(exc_unlock),
                          "states": [page_state(part + P), page_state(whole + P)],
                          "vmlck": vmlck()}))
    """)
    lines, most = out["lines"], out["max"]
    assert isinstance(lines, int) and isinstance(most, int)
    _assert_names_map_count(out["lock"], "mlock", lines, most)
    _assert_names_map_count(out["unlock"], "munlock", lines, most)
    assert out["whole_ok"] is True
    # the kernel: the failed lock locked nothing, the failed unlock left the page locked
    assert out["states"] == ["none", "full"]
    assert out["vmlck"] == 3 * PAGE


def test_enomem_far_from_the_max_does_not_blame_the_mapping_count() -> None:
    exc = BACKEND.map_error("mprotect", errno.ENOMEM, PAGE)
    assert type(exc) is MemlockError and exc.errno == errno.ENOMEM
    assert "max_map_count" not in str(exc) and str(exc.strerror).startswith("mprotect: ")


def test_memfd_secret_over_the_limit_is_a_limit_error_with_numbers() -> None:
    # A real refusal: 32 pages of memfd_secret against an 8-page RLIMIT_MEMLOCK.
    proc = run_child("""
        import errno, json, os
        from memlock._platform import BACKEND
        from memlock._platform._libc import real_libc
        from tests.kernel import PAGE as P
        L = real_libc()
        fd, err = L.memfd_secret(0)
        os.ftruncate(fd, 32 * P)
        _, err = L.mmap(0, 32 * P, 3, 0x01, fd)
        e = BACKEND.map_error("mmap(memfd_secret)", err, 32 * P)
        print(json.dumps([err, type(e).__name__, e.requested, e.limit, e.locked, e.hint]))
    """, unprivileged=True, limit=8 * PAGE)
    err, kind, requested, limit, locked, hint = last_json(proc)
    assert err == errno.EAGAIN and kind == LockLimitError.__name__
    assert (requested, limit, locked) == (32 * PAGE, 8 * PAGE, 0)
    assert hint.startswith("How to fix")


@pytest.mark.parametrize("backend", ["anonymous", "memfd_secret"])
@pytest.mark.parametrize("unprivileged", [False, True], ids=["cap_ipc_lock", "unprivileged"])
def test_secure_buffers_at_the_max_name_the_mapping_count(backend: str,
                                                          unprivileged: bool) -> None:
    """SecureBuffer itself, isolated and a new pool chunk: the error names the mapping
    count and the sysctl (not RLIMIT_MEMLOCK), and nothing stays locked or mapped."""
    from memlock._secrets import _pool as _securemem

    if backend == "memfd_secret" and not _securemem.probe_memfd_secret():
        pytest.skip("memfd_secret is not available on this kernel")
    out = _run(f"""
        from memlock import SecureBuffer
        from memlock._secrets import _pool as _securemem
        B = {backend!r}
        SecureBuffer(16, backend=B).close()   # the module loaded, no chunk of class 64
        _securemem.trim()
        locked_before = vmlck()
        fill_map_count()
        lines = map_lines()
        found = []
        for kwargs in ({{"isolated": True}}, {{"isolated": False}}):
            try:
                SecureBuffer(48, backend=B, **kwargs).close()
                found.append(None)
            except memlock.MemlockError as e:
                found.append(describe(e))
        after = map_lines()
        release()
        most = int(open("/proc/sys/vm/max_map_count").read())
        print(json.dumps({{"lines": lines, "after": after, "max": most, "found": found,
                          "vmlck": [locked_before, vmlck()]}}))
    """, unprivileged=unprivileged)
    lines, most = out["lines"], out["max"]
    assert isinstance(lines, int) and isinstance(most, int)
    found = out["found"]
    assert isinstance(found, list) and len(found) == 2
    for desc in found:
        assert isinstance(desc, list), out
        op = desc[2].split(":")[0]
        assert op in ("mprotect", "mmap", "mmap(memfd_secret)", "madvise(MADV_DONTDUMP)",
                      "madvise(MADV_WIPEONFORK)", "madvise(MADV_DONTFORK)", "mlock"), desc
        _assert_names_map_count(desc, op, lines, most)
    assert out["after"] == lines  # nothing left mapped by the failed attempts
    vm = out["vmlck"]
    assert isinstance(vm, list) and vm[0] == vm[1]  # nor locked
