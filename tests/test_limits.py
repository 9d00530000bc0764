"""limits(), set_limit() and what lock() does under RLIMIT_MEMLOCK, with and without the
privilege (CAP_IPC_LOCK, not uid 0), each in a child that lost it or runs as uid 65534."""

from __future__ import annotations

import os
import resource
from typing import Any

import pytest

import memlock

from .kernel import CHILD_PRELUDE, output, run_child, vmlck

# Every test here runs through lock()'s C fast path and through the pure-Python path.
pytestmark = pytest.mark.usefixtures("lock_path")


def child(code: str, **options: Any) -> str:
    """Run CHILD_PRELUDE + code in a child; its stdout, once it exited 0."""
    return output(run_child(code, prelude=CHILD_PRELUDE, **options))


def test_limit_zero_without_capability_is_a_permission_error() -> None:
    out = child("""
        m = anon(1)
        try:
            memlock.lock(m)
        except memlock.LockPermissionError as e:
            assert isinstance(e, PermissionError) and e.errno == errno.EPERM
            assert "CAP_IPC_LOCK" in str(e) and e.hint and "IPC_LOCK" in e.hint
            assert (e.requested, e.limit, e.locked) == (PAGE, 0, 0)
            print("permission", page_state(address_of(m)), vmlck())
        lim = memlock.limits()
        print(lim.privileged, lim.soft, lim.available_bytes)
    """, unprivileged=True, limit=0)
    assert out.split() == ["permission", "none", "0", "False", "0", "0"]


def test_over_limit_is_a_limit_error_with_numbers_and_nothing_locked() -> None:
    out = child("""
        small, big = anon(256), anon(2048)  # 1 MiB then 8 MiB against a 4 MiB limit
        held = memlock.lock(small)
        try:
            memlock.lock(big)
        except memlock.LockLimitError as e:
            assert not isinstance(e, BlockingIOError) and e.errno == errno.ENOMEM
            print(e.requested, e.limit, e.locked)
            assert "ulimit -l" in e.hint and "LimitMEMLOCK" in e.hint, e.hint
            assert "--ulimit memlock" in e.hint and "IPC_LOCK" in e.hint, e.hint
        print(vmlck(), page_state(address_of(big)))
        lim = memlock.limits()
        print(lim.locked_bytes, lim.available_bytes, lim.privileged)
    """, unprivileged=True, limit=4 * 2**20)
    mib = 2**20
    assert out.split() == [
        str(8 * mib), str(4 * mib), str(mib),
        str(mib), "none",
        str(mib), str(3 * mib), "False",
    ]


def test_unmapped_range_is_not_a_limit_error_unprivileged() -> None:
    out = child("""
        import ctypes
        from memlock import lowlevel
        m = anon(4); addr = address_of(m)
        try:
            lowlevel.munlock(addr, 4 * PAGE)
            m.close()
            lowlevel.mlock(addr, PAGE)
        except memlock.LockLimitError:
            print("limit")
        except memlock.MemlockError as e:
            print("memlock", e.errno == errno.ENOMEM)
    """, unprivileged=True, limit=4 * 2**20)
    assert out.split() == ["memlock", "True"]


def test_capability_not_uid_is_the_privilege() -> None:
    # uid 0 without CAP_IPC_LOCK is limited; with it (this process) it is not.
    assert memlock.limits().privileged is (os.geteuid() == 0)
    out = child("print(os.geteuid(), memlock.limits().privileged)", unprivileged=True)
    assert out.split() == ["0", "False"]


def test_limits_match_the_kernel() -> None:
    lim = memlock.limits()
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    inf = resource.RLIM_INFINITY
    assert lim.soft == (None if soft == inf else soft)
    assert lim.hard == (None if hard == inf else hard)
    assert lim.locked_bytes == vmlck()
    assert lim.available_bytes is None  # privileged here


def test_set_limit() -> None:
    out = child("""
        import resource
        memlock.set_limit(2 * 2**20)
        print(resource.getrlimit(resource.RLIMIT_MEMLOCK)[0], memlock.limits().soft)
        try:
            memlock.set_limit(64 * 2**20)  # above the hard limit
        except ValueError:
            print("valueerror")
        try:
            memlock.set_limit(None, None)  # unlimited soft, above the hard limit
        except ValueError:
            print("valueerror")
        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        try:
            memlock.set_limit(hard, hard * 2)  # raise hard: needs CAP_SYS_RESOURCE
            print("raised")
        except memlock.LockPermissionError as e:
            print("permission", e.errno == errno.EPERM)
        memlock.set_limit(2**20, 2**20)  # lowering the hard limit is allowed
        print(resource.getrlimit(resource.RLIMIT_MEMLOCK))
    """, unprivileged=True, limit=8 * 2**20)
    lines = out.splitlines()
    assert lines[0].split() == [str(2 * 2**20)] * 2
    assert lines[1:3] == ["valueerror", "valueerror"]
    assert lines[3] == "permission True"
    assert lines[4] == f"({2**20}, {2**20})"


def test_uid_nobody_is_unprivileged() -> None:
    # A real uid switch (tests/kernel.py brings an interpreter and code that uid can read).
    proc = run_child("""
        import memlock, mmap
        lim = memlock.limits()
        m = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE)
        memlock.set_limit(0)
        try:
            memlock.lock(m)
        except memlock.LockPermissionError:
            print("perm")
        print(lim.privileged)
    """, as_nobody=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["perm", "False"]
