"""SecureBuffer on the simulated FreeBSD, macOS and illumos C libraries.

Each case runs in a child whose ``memlock._platform.BACKEND`` is the real backend of that
OS over its simulated libc (tests/simlibc.py), set before the secrets and the registry
load, with the pure-Python lock path (the C fast path calls the host's mlock). The
memory is real (SecureBuffer reads and writes it); the simulation's model is the judge
of what the OS was asked: which pages are mapped, their protection, their madvise
advice, which are locked. Pages are 4 KiB in every simulation here (the host's size,
which the pool's layout uses).
"""

from __future__ import annotations

import pytest

from .kernel import output, run_child

PRELUDE = """\
import ctypes, errno, gc, os, sys
from tests import simlibc
import memlock._platform as platform
OS = sys.argv[1]
KW = eval(sys.argv[2])
sim, backend = getattr(simlibc, OS)(page_size=4096, **KW)
platform.BACKEND = backend
import memlock
from memlock import LockLimitError, LockPermissionError
from memlock._secrets import _pool
P = 4096
NOCORE = 8 if OS == "freebsd" else None  # MADV_NOCORE: the only no-dump advice of the three


def region_of(addr):
    (hit,) = [(a, n) for a, n in sim.regions.values() if a <= addr < a + n]
    return hit


def nothing_held():
    gc.collect()  # a mapping whose making failed goes when its owner is collected
    assert not sim.regions, sim.regions
    assert not sim.locked, sim.locked
"""

OSES = ["freebsd", "darwin", "sunos"]
ENV = {"MEMLOCK_PURE_PYTHON": "1"}


def _run(code: str, os_name: str, kw: str = "{}") -> str:
    return output(run_child(code, prelude=PRELUDE, args=[os_name, kw], env=ENV))


@pytest.mark.parametrize("os_name", OSES)
def test_pooled_secret_lives_in_a_guarded_locked_mapping(os_name: str) -> None:
    out = _run("""
        sb = memlock.SecureBuffer(32)
        assert sb.backend == "anonymous"  # no memfd_secret: "auto" never asks the libc
        home = sb._lease.home
        start, total = region_of(home.base)
        assert sim.protection(start, P) == {0}, "guard page before"
        assert sim.protection(start + total - P, P) == {0}, "guard page after"
        assert sim.protection(start + P, total - 2 * P) == {3}
        assert sim.is_locked(start + P, total - 2 * P)
        assert not sim.is_locked(start, P) and not sim.is_locked(start + total - P, P)
        advised = [c for c in sim.calls if c[0] == "madvise"]
        if NOCORE is None:
            assert not advised, advised
        else:
            assert advised == [("madvise", start, total, NOCORE)], advised
        with sb.view() as v:
            v[:] = b"s" * 32
        addr = home.base + sb._lease.off
        assert ctypes.string_at(addr, 32) == b"s" * 32
        sb.close()
        assert sb.closed and ctypes.string_at(addr, 32) == bytes(32), "wiped at close"
        again = memlock.SecureBuffer(32)  # the slot comes back zeroed
        assert bytes(again.view()) == bytes(32)
        again.close()
        _pool.trim()
        nothing_held()  # the empty chunk went back: unlocked and unmapped
        print("ok")
    """, os_name)
    assert out.strip() == "ok"


@pytest.mark.parametrize("os_name", OSES)
def test_isolated_secret_changes_protection_through_the_backend(os_name: str) -> None:
    out = _run("""
        iso = memlock.SecureBuffer(100, isolated=True)
        m = iso._lease.home
        start, total = region_of(m.base)
        assert total == 3 * P and m.base == start + P
        assert sim.protection(start, P) == sim.protection(start + 2 * P, P) == {0}
        assert sim.protection(m.base, P) == {3} and sim.is_locked(m.base, P)
        with iso.view() as v:
            v[:] = b"k" * 100
        iso.readonly()
        assert sim.protection(m.base, P) == {1} and iso.protection == "read"
        iso.noaccess()
        assert sim.protection(m.base, P) == {0} and iso.protection == "none"
        with iso.access() as v:
            assert bytes(v) == b"k" * 100
            assert sim.protection(m.base, P) == {1}
        assert sim.protection(m.base, P) == {0}, "access() put it back"
        iso.readwrite()
        assert sim.protection(m.base, P) == {3}
        iso.noaccess()
        iso.close()  # made writable, wiped, unlocked, unmapped
        assert sim.calls[-1] == ("munmap", start, total), sim.calls[-3:]
        assert ("mprotect", m.base, P, 3) in sim.calls[-6:], sim.calls[-6:]
        nothing_held()
        print("ok")
    """, os_name)
    assert out.strip() == "ok"


ZERO = {"freebsd": "{'soft': 0, 'hard': 0, 'euid': 0}",  # binds root too
        "darwin": "{'soft': 0, 'hard': 0}",
        "sunos": "{'proc_lock_memory': False}"}  # no RLIMIT_MEMLOCK: the privilege


@pytest.mark.parametrize("os_name", OSES)
def test_no_allowance_is_a_permission_error_and_leaves_nothing(os_name: str) -> None:
    out = _run("""
        for isolated in (False, True):
            try:
                memlock.SecureBuffer(32, isolated=isolated)
            except LockPermissionError as exc:
                assert exc.errno == errno.EPERM, exc
                assert type(exc) is LockPermissionError
            else:
                raise AssertionError("no error")
            nothing_held()  # nothing stays mapped or locked
        assert any(c[0] == "mlock" for c in sim.calls)  # the OS was asked, and refused
        print("ok")
    """, os_name, ZERO[os_name])
    assert out.strip() == "ok"


SMALL = {"freebsd": "{'soft': 2 * 4096, 'hard': 2 * 4096}",
         "darwin": "{'soft': 2 * 4096, 'hard': 2 * 4096}",
         "sunos": "{'max_locked_memory': 2 * 4096}"}


@pytest.mark.parametrize("os_name", OSES)
def test_over_the_limit_is_a_limit_error_and_leaves_nothing(os_name: str) -> None:
    out = _run("""
        try:
            memlock.SecureBuffer(5 * P, isolated=True)
        except LockLimitError as exc:
            assert type(exc) is LockLimitError and exc.requested == 5 * P + P, exc
        else:
            raise AssertionError("no error")
        nothing_held()
        small = memlock.SecureBuffer(16)  # what the limit allows still works
        small.close()
        _pool.trim()
        nothing_held()
        print("ok")
    """, os_name, SMALL[os_name])
    assert out.strip() == "ok"


@pytest.mark.parametrize("os_name", OSES)
def test_forked_child_gets_zeros_without_wipe_on_fork_advice(os_name: str) -> None:
    """No MADV_WIPEONFORK there: the child zeroes its copy at fork (copy-on-write)."""
    out = _run("""
        sb = memlock.SecureBuffer(32)
        with sb.view() as v:
            v[:] = b"p" * 32
        addr = sb._lease.home.base + sb._lease.off
        pid = os.fork()
        if pid == 0:
            ok = ctypes.string_at(addr, 32) == bytes(32) and sb.closed
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child saw the parent's secret"
        assert ctypes.string_at(addr, 32) == b"p" * 32, "the parent keeps its secret"
        sb.close()
        print("ok")
    """, os_name)
    assert out.strip() == "ok"
