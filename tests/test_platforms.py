"""The FreeBSD, macOS and illumos backends, run on Linux against simulated C libraries.

None of these OSes can run here: each backend is driven through ``tests/simlibc.py``, whose
classes follow the seed manual pages. What is checked: argument handling, errno translation
(exception class, errno, numbers, the knob the hint names), facts (privilege, limits,
system status). The registry on these backends (all-or-nothing locking, proven by the
simulation's own page accounting) is tested in test_registry.py.
"""

from __future__ import annotations

import errno

import pytest

from memlock._platform._base import Backend
from memlock._platform.darwin import DarwinBackend
from memlock._platform.freebsd import FreeBSDBackend
from memlock._platform.sunos import SunOSBackend
from memlock._registry import PageRegistry
from memlock.errors import (
    LockLimitError,
    LockPermissionError,
    MemlockError,
    UnsupportedOperation,
)

from .holds import acquire
from .simlibc import (
    DarwinLibc,
    FreeBSDLibc,
    SimLibc,
    SunOSLibc,
    darwin,
    exact,
    freebsd,
    sunos,
)

KiB = 1024


# -- construction, constants ------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "sim_cls"),
    [(FreeBSDBackend, FreeBSDLibc), (DarwinBackend, DarwinLibc), (SunOSBackend, SunOSLibc)],
)
def test_constructible_with_only_a_libc(cls: type[Backend], sim_cls: type[SimLibc]) -> None:
    sim = sim_cls()
    backend = cls(sim)  # facts default to this process's
    addr = sim.mmap(4 * sim.page)
    backend.mlock(addr, sim.page)
    assert sim.is_locked(addr, sim.page)
    backend.munlock(addr, sim.page)
    assert not sim.locked
    assert isinstance(backend.limits().privileged, bool)


def test_constants_and_capabilities() -> None:
    assert FreeBSDBackend.constants == {"MCL_CURRENT": 1, "MCL_FUTURE": 2}
    assert DarwinBackend.constants == {"MCL_CURRENT": 1, "MCL_FUTURE": 2}
    assert SunOSBackend.constants == {"MCL_CURRENT": 1, "MCL_FUTURE": 2}
    assert (FreeBSDBackend.name, DarwinBackend.name, SunOSBackend.name) == (
        "freebsd", "darwin", "sunos")
    assert not DarwinBackend.supports_lock_all
    assert FreeBSDBackend.supports_lock_all and SunOSBackend.supports_lock_all
    assert SunOSBackend.requires_alignment
    assert not FreeBSDBackend.requires_alignment and not DarwinBackend.requires_alignment
    for cls in (FreeBSDBackend, DarwinBackend, SunOSBackend):
        assert not cls.supports_onfault
        assert "MCL_ONFAULT" not in cls.constants


@pytest.mark.parametrize("make", [freebsd, darwin, sunos])
def test_no_onfault_or_mlock2_and_no_syscall(make) -> None:  # type: ignore[no-untyped-def]
    sim, backend = make()
    addr = sim.mmap(sim.page)
    with pytest.raises(UnsupportedOperation):
        backend.mlock_onfault(addr, sim.page)
    with pytest.raises(UnsupportedOperation):
        backend.mlock2(addr, sim.page, 1)
    assert sim.calls == []


# -- FreeBSD --------------------------------------------------------------------------


def test_freebsd_lock_unlock_rounds_like_the_seed() -> None:
    sim, b = freebsd()
    addr = sim.mmap(4 * sim.page)
    b.mlock(addr + 100, sim.page)  # touches pages 0 and 1; len rounded up, addr truncated
    assert sim.locked_addresses() == {addr, addr + sim.page}
    b.mlock(addr, sim.page)  # locks do not nest ...
    b.munlock(addr, 2 * sim.page)  # ... one munlock undoes both
    assert not sim.locked


def test_freebsd_eperm_when_unprivileged_mlock_is_0() -> None:
    sim, b = freebsd(unprivileged_mlock=0, euid=1001)
    addr = sim.mmap(sim.page)
    with pytest.raises(LockPermissionError) as info:
        b.mlock(addr, sim.page)
    e = info.value
    assert isinstance(e, PermissionError) and e.errno == errno.EPERM
    assert "security.bsd.unprivileged_mlock" in e.strerror
    assert "sysctl security.bsd.unprivileged_mlock=1" in e.hint
    assert not b.privileged()
    sim.euid = 0  # root may lock whatever the sysctl says
    b.mlock(addr, sim.page)
    assert b.privileged() and sim.is_locked(addr, sim.page)


def test_freebsd_enomem_over_rlimit_is_a_limit_error_with_numbers() -> None:
    sim, b = freebsd(soft=64 * KiB, hard=64 * KiB)
    addr = sim.mmap(64 * KiB)
    b.mlock(addr, 16 * KiB)  # 16 KiB locked already
    with pytest.raises(LockLimitError) as info:
        # 13 pages, the last one past the mapping: the limit is checked first
        b.mlock(addr + 16 * KiB, 64 * KiB - 16 * KiB + sim.page)
    e = info.value
    assert e.errno == errno.ENOMEM
    assert (e.requested, e.limit, e.locked) == (52 * KiB, 64 * KiB, 16 * KiB)
    assert "RLIMIT_MEMLOCK" in e.strerror
    assert "vm.max_user_wired" in e.hint and "login.conf" in e.hint and "ulimit -l" in e.hint
    assert sim.locked_bytes() == 16 * KiB  # unchanged


def test_freebsd_root_is_not_exempt_from_rlimit() -> None:
    sim, b = freebsd(soft=8 * KiB, euid=0)
    addr = sim.mmap(16 * KiB)
    with pytest.raises(LockLimitError) as info:
        b.mlock(addr, 16 * KiB)
    assert info.value.limit == 8 * KiB
    lim = b.limits()
    assert lim.privileged and lim.available_bytes == 8 * KiB  # computed for root too


def test_freebsd_enomem_over_max_user_wired() -> None:
    sim, b = freebsd(max_user_wired=100, other_user_wired=98)
    addr = sim.mmap(4 * sim.page)
    with pytest.raises(LockLimitError) as info:
        b.mlock(addr, 4 * sim.page)
    e = info.value
    assert e.errno == errno.ENOMEM
    assert e.limit == 100 * sim.page
    assert "vm.max_user_wired" in e.strerror
    assert "sysctl vm.max_user_wired=102" in e.hint  # 98 wired now + 4 needed
    # one request larger than the whole system-wide limit
    sim2, b2 = freebsd(max_user_wired=2)
    with pytest.raises(LockLimitError, match=r"vm\.max_user_wired"):
        b2.mlock(sim2.mmap(3 * sim2.page), 3 * sim2.page)
    assert b.limits().available_bytes == 2 * sim.page


def test_freebsd_enomem_unmapped_is_not_a_limit_error() -> None:
    sim, b = freebsd(soft=1 << 30)
    addr = sim.mmap(2 * sim.page)
    with pytest.raises(MemlockError) as info:
        b.mlock(addr, 3 * sim.page)  # the third page is the hole after the mapping
    exact(info.value, MemlockError)
    assert info.value.errno == errno.ENOMEM and "not mapped" in info.value.strerror
    assert not sim.locked  # the seed: on failure nothing changes
    sim.unfaultable.add(addr // sim.page)
    with pytest.raises(MemlockError) as info:
        b.mlock(addr, sim.page)
    exact(info.value, MemlockError)


def test_freebsd_enomem_ambiguous_without_locked_count() -> None:
    """With no per-process wired count (a real FreeBSD), the error says both causes."""
    sim = FreeBSDLibc(soft=1 << 20)
    b = FreeBSDBackend(sim, sim.page, rlimit=sim.getrlimit, euid=sim.geteuid)
    addr = sim.mmap(sim.page)
    with pytest.raises(MemlockError) as info:
        b.mlock(addr, 2 * sim.page)
    exact(info.value, MemlockError)
    assert "RLIMIT_MEMLOCK" in info.value.strerror and info.value.hint
    with pytest.raises(LockLimitError):  # beyond the limit alone: certain
        b.mlock(addr, 2 << 20)


def test_freebsd_einval_on_wraparound() -> None:
    sim, b = freebsd()
    with pytest.raises(MemlockError) as info:
        b.mlock(2**64 - sim.page, 2 * sim.page)
    exact(info.value, MemlockError)
    assert info.value.errno == errno.EINVAL and "wraps" in info.value.strerror


def test_freebsd_munlock_errors() -> None:
    sim, b = freebsd()
    addr = sim.mmap(sim.page)
    with pytest.raises(MemlockError) as info:
        b.munlock(addr, 2 * sim.page)
    exact(info.value, MemlockError)
    assert info.value.errno == errno.ENOMEM
    sim.unprivileged_mlock = 0
    with pytest.raises(LockPermissionError):
        b.munlock(addr, sim.page)


def test_freebsd_mlockall() -> None:
    sim, b = freebsd(soft=1 << 20)
    a = sim.mmap(8 * sim.page)
    b.mlockall(b.constants["MCL_CURRENT"] | b.constants["MCL_FUTURE"])
    assert sim.is_locked(a, 8 * sim.page) and sim.future
    b.munlockall()
    assert not sim.locked and not sim.future
    with pytest.raises(MemlockError) as info:
        b.mlockall(0)
    exact(info.value, MemlockError)
    assert info.value.errno == errno.EINVAL and "flags" in info.value.strerror
    sim.unfaultable.add(a // sim.page)  # EAGAIN: could not be locked when the call was made
    with pytest.raises(LockLimitError) as lim:
        b.mlockall(1)
    assert lim.value.errno == errno.EAGAIN and not isinstance(lim.value, BlockingIOError)
    assert "vm.max_user_wired" in lim.value.hint
    sim.unfaultable.clear()
    sim.soft = 4 * sim.page  # the address space is larger than RLIMIT_MEMLOCK
    with pytest.raises(LockLimitError) as lim:
        b.mlockall(1)
    assert lim.value.errno == errno.ENOMEM and lim.value.limit == 4 * sim.page
    assert not sim.locked
    sim.unprivileged_mlock = 0
    with pytest.raises(LockPermissionError):
        b.mlockall(1)


def test_freebsd_system_status_and_missing_sysctls() -> None:
    sim, b = freebsd(max_user_wired=1000, other_user_wired=10, kernel_wired=50)
    b.mlock(sim.mmap(2 * sim.page), 2 * sim.page)
    st = b.system_status()
    assert st.user_wired_bytes == 12 * sim.page
    assert st.wired_bytes == 62 * sim.page
    assert st.max_user_wired_bytes == 1000 * sim.page
    assert st.mlocked_bytes is None and st.max_map_count is None
    sim.unreadable_sysctls = {"vm.stats.vm.v_wire_count", "vm.max_user_wired"}
    st = b.system_status()
    assert st.wired_bytes is None and st.max_user_wired_bytes is None
    assert st.user_wired_bytes == 12 * sim.page


# -- macOS ------------------------------------------------------------------------------


def test_darwin_lock_all_is_unsupported_without_a_syscall() -> None:
    sim, b = darwin()
    for call in (lambda: b.mlockall(1), b.munlockall):
        with pytest.raises(UnsupportedOperation) as info:
            call()
        e = info.value
        assert e.errno == errno.ENOSYS
        assert "macOS" in str(e) and "memlock.lock()" in str(e)
    assert sim.calls == []
    # the simulated XNU answers ENOSYS, and the backend says the same if it ever gets it
    assert sim.mlockall(1) == errno.ENOSYS
    exc = b.lock_error("mlockall", errno.ENOSYS, None)
    assert isinstance(exc, UnsupportedOperation) and "macOS" in str(exc)


def test_darwin_eagain_is_a_limit_error() -> None:
    sim, b = darwin(soft=2 * 16384)
    addr = sim.mmap(4 * sim.page)
    b.mlock(addr, sim.page)
    with pytest.raises(LockLimitError) as info:
        b.mlock(addr + sim.page, 2 * sim.page)
    e = info.value
    assert e.errno == errno.EAGAIN and not isinstance(e, BlockingIOError)
    assert (e.requested, e.limit) == (2 * sim.page, 2 * sim.page)
    assert "vm.user_wire_limit" in e.strerror
    assert "ulimit -l" in e.hint and "launchctl limit memlock" in e.hint
    assert "vm.user_wire_limit" in e.hint
    assert sim.locked_addresses() == {addr}
    # the per-process sysctl and the global limit refuse the same way
    sim2, b2 = darwin(user_wire_limit=16384)
    with pytest.raises(LockLimitError):
        b2.mlock(sim2.mmap(2 * sim2.page), 2 * sim2.page)
    sim3, b3 = darwin(global_user_wire_limit=2**20, other_wired=2**20 - 16384)
    with pytest.raises(LockLimitError):
        b3.mlock(sim3.mmap(2 * sim3.page), 2 * sim3.page)


def test_darwin_other_errors() -> None:
    sim, b = darwin()
    addr = sim.mmap(2 * sim.page)
    with pytest.raises(MemlockError) as info:
        b.mlock(addr, 3 * sim.page)
    exact(info.value, MemlockError)
    assert info.value.errno == errno.ENOMEM and "not mapped" in info.value.strerror
    sim.protected.add(addr // sim.page)
    with pytest.raises(MemlockError) as info:
        b.mlock(addr, sim.page)
    exact(info.value, MemlockError)  # EACCES is not a PermissionError here
    assert info.value.errno == errno.EACCES and not isinstance(info.value, PermissionError)
    with pytest.raises(MemlockError) as info:
        b.mlock(2**64 - 100, 200)
    assert info.value.errno == errno.EINVAL
    b.mlock(addr, 0)  # length 0 is a no-op on XNU
    assert not sim.locked


def test_darwin_facts() -> None:
    sim, b = darwin(euid=0)
    assert not b.privileged()  # root does not lift the XNU wire limits
    assert "no privilege" in b.permission_hint()
    st = b.system_status()
    assert st.total_bytes == 16 * 2**30 and st.max_user_wired_bytes == 2**34
    assert st.wired_bytes is None
    sim.unreadable_sysctls = {"hw.memsize"}
    assert b.system_status().total_bytes is None


# -- illumos / Solaris -------------------------------------------------------------------


def test_sunos_unaligned_address_is_einval_and_locks_nothing() -> None:
    sim, b = sunos()
    addr = sim.mmap(2 * sim.page)
    with pytest.raises(MemlockError) as info:
        b.mlock(addr + 16, sim.page)
    e = info.value
    exact(e, MemlockError)
    assert e.errno == errno.EINVAL and "page size" in e.strerror
    assert not sim.locked
    b.mlock(addr, sim.page + 1)  # aligned address, length rounded up
    assert sim.locked_addresses() == {addr, addr + sim.page}


def test_sunos_eperm_names_the_privilege() -> None:
    sim, b = sunos(proc_lock_memory=False, euid=0)
    addr = sim.mmap(sim.page)
    with pytest.raises(LockPermissionError) as info:
        b.mlock(addr, sim.page)
    e = info.value
    assert e.errno == errno.EPERM and isinstance(e, PermissionError)
    assert "PRIV_PROC_LOCK_MEMORY" in e.strerror
    assert "PRIV_PROC_LOCK_MEMORY" in e.hint and "project.max-locked-memory" in e.hint
    assert not b.privileged()  # priv_ineffect decides, not the uid


def test_sunos_privilege_falls_back_to_euid() -> None:
    sim, b = sunos(priv_api=False, euid=0)
    assert b.privileged()
    sim.euid = 100
    assert not b.privileged()
    sim.priv_api = True
    assert b.privileged()  # proc_lock_memory is in the effective set


def test_sunos_eagain_is_a_limit_error() -> None:
    sim, b = sunos(max_locked_memory=3 * 8192)
    addr = sim.mmap(4 * sim.page)
    b.mlock(addr, sim.page)
    with pytest.raises(LockLimitError) as info:
        b.mlock(addr + sim.page, 3 * sim.page)
    e = info.value
    assert e.errno == errno.EAGAIN and not isinstance(e, BlockingIOError)
    assert (e.requested, e.limit, e.locked) == (3 * sim.page, 3 * sim.page, sim.page)
    assert "project.max-locked-memory" in e.strerror
    assert "prctl -n project.max-locked-memory" in e.hint and "projmod" in e.hint
    assert b.limits().available_bytes == 2 * sim.page
    sim2, b2 = sunos(lockable_pages=1)  # machine short of lockable memory
    with pytest.raises(LockLimitError):
        b2.mlock(sim2.mmap(2 * sim2.page), 2 * sim2.page)


def test_sunos_enosys_and_enomem() -> None:
    sim, b = sunos(supported=False)
    addr = sim.mmap(sim.page)
    with pytest.raises(UnsupportedOperation) as info:
        b.mlock(addr, sim.page)
    assert info.value.errno == errno.ENOSYS
    with pytest.raises(UnsupportedOperation):
        b.mlockall(1)
    sim.supported = True
    with pytest.raises(MemlockError) as err:
        b.mlock(addr, 2 * sim.page)
    exact(err.value, MemlockError)
    assert err.value.errno == errno.ENOMEM and "not mapped" in err.value.strerror


def test_sunos_mlockall() -> None:
    sim, b = sunos(max_locked_memory=4 * 8192)
    a = sim.mmap(2 * sim.page)
    b.mlockall(b.constants["MCL_CURRENT"])
    assert sim.is_locked(a, 2 * sim.page)
    b.munlockall()
    assert not sim.locked
    with pytest.raises(MemlockError) as info:
        b.mlockall(8)
    assert info.value.errno == errno.EINVAL and "MCL_CURRENT" in info.value.strerror
    sim.mmap(4 * sim.page)
    with pytest.raises(LockLimitError):
        b.mlockall(1)
    assert not sim.locked


# -- a zero RLIMIT_MEMLOCK, and hints that can be followed --------------------------------


@pytest.mark.parametrize(
    ("make", "kw", "errno_of_os"),
    [(freebsd, {"euid": 0}, errno.ENOMEM), (freebsd, {"euid": 1001}, errno.ENOMEM),
     (darwin, {}, errno.EAGAIN)],
    ids=["freebsd_root", "freebsd_user", "darwin"],
)
def test_zero_limit_is_a_permission_error_whatever_errno_says(make, kw, errno_of_os) -> None:  # type: ignore[no-untyped-def]
    """FreeBSD answers ENOMEM (root is bound too), XNU EAGAIN: both mean "none at all"."""
    sim, b = make(soft=0, hard=2**20, **kw)
    reg = PageRegistry(b)
    addr = sim.mmap(2 * sim.page)
    assert sim.mlock(addr, sim.page) == errno_of_os  # what the OS itself says
    with pytest.raises(LockPermissionError) as info:
        acquire(reg, addr, addr + 2 * sim.page)
    e = info.value
    assert e.errno == errno.EPERM and isinstance(e, PermissionError)
    assert "RLIMIT_MEMLOCK is 0" in e.strerror and errno.errorcode[errno_of_os] in e.strerror
    assert (e.requested, e.limit) == (2 * sim.page, 0)
    assert e.hint and "ulimit -l" in e.hint
    assert not sim.locked
    if b.supports_lock_all:
        with pytest.raises(LockPermissionError):
            b.mlockall(b.constants["MCL_CURRENT"])
    exc = b.map_error("mmap", errno_of_os, sim.page)
    exact(exc, LockPermissionError)


def test_zero_limit_leaves_unlock_errors_and_other_causes_alone() -> None:
    _, b = freebsd(soft=0)
    exact(b.lock_error("munlock", errno.ENOMEM, 4096), MemlockError)  # not wired
    sim2, b2 = freebsd(soft=0, unprivileged_mlock=0)
    with pytest.raises(LockPermissionError) as info:
        b2.mlock(sim2.mmap(sim2.page), sim2.page)
    assert "security.bsd.unprivileged_mlock" in info.value.strerror  # EPERM: the sysctl
    _, b3 = sunos(proc_lock_memory=True)  # no RLIMIT_MEMLOCK: EAGAIN is the rctl
    exact(b3.lock_error("mlock", errno.EAGAIN, 8192), LockLimitError)


@pytest.mark.parametrize("make", [freebsd, darwin])
def test_hint_names_a_hard_limit_that_only_root_can_raise(make) -> None:  # type: ignore[no-untyped-def]
    sim, b = make(soft=64 * KiB, hard=64 * KiB, euid=1001)
    addr = sim.mmap(2**20)
    with pytest.raises(LockLimitError) as info:
        b.mlock(addr, 2**20)
    hint = info.value.hint
    assert "hard limit (64.0 KiB) is below the 1.0 MiB needed" in hint, hint
    assert "only root can raise it" in hint and "`ulimit -l 1024`" not in hint, hint
    sim.hard = 2**20  # within the hard limit: `ulimit -l` is the fix
    with pytest.raises(LockLimitError) as info:
        b.mlock(addr, 2**20)
    assert "`ulimit -l 1024`" in info.value.hint and "hard limit (" not in info.value.hint
    sim.hard, sim.euid = 64 * KiB, 0  # root may raise its hard limit
    with pytest.raises(LockLimitError) as info:
        b.mlock(addr, 2**20)
    assert "`ulimit -l 1024`" in info.value.hint
