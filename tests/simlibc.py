"""Simulated C libraries of FreeBSD, macOS and illumos/Solaris, for backend tests on Linux.

Each class implements the ``Libc`` protocol of ``memlock._platform._libc`` (every call
returns 0 or an errno) over a fake address space, and follows its OS's manual page in
``shared/seeds`` (plus the kernel source where the page is silent, marked "source:").
Nothing here touches real memory (addresses are numbers, pages are sets and counters),
except the mappings the secrets reserve (:meth:`SimLibc.reserve`): SecureBuffer reads and
writes its memory, so those pages are real, and the model says what the OS would enforce.

Common state: ``mapped`` (page numbers), ``locked`` (page number -> wire count; 1 on
FreeBSD and illumos, where locks do not nest; a count on XNU, where they do), RLIMIT_MEMLOCK
(``soft``/``hard`` bytes, None = unlimited), ``euid``, and ``calls`` (every call made, so a
test can prove that a check happened before any system call).

errno values are the host's (``errno.EAGAIN`` ...), so the backends' comparisons by name
work as they would on the real system. ``freebsd()``, ``darwin()`` and ``sunos()`` give a
simulated library and the real backend built on it.

With ``host_memory=True`` the simulated address space is this real process's: a page counts
as mapped when /proc/self/maps says so (files, mmaps and the heap are the host kernel's),
while what is locked stays simulated. That lets the feature modules (lock_file, residency,
touch, evict, lock_process) run on a simulated OS in a child whose
``memlock._platform.BACKEND`` is the simulated backend (tests/test_platforms_files.py).
mincore answers what the host kernel says about residency, in the OS's own bit layout
(:attr:`SimLibc.mincore_bits`).
"""

from __future__ import annotations

import errno
import mmap
import threading
import time
import weakref
from typing import Any, TypeVar

from memlock._platform._libc import RealLibc
from memlock._platform.darwin import DarwinBackend
from memlock._platform.freebsd import FreeBSDBackend
from memlock._platform.sunos import SunOSBackend

SIZE_MAX = 2**64 - 1
S = TypeVar("S", bound="SimLibc")
MCL_CURRENT, MCL_FUTURE = 1, 2


class SimLibc:
    """An address space with locked pages; the OS subclasses add their rules."""

    def __init__(
        self,
        page_size: int = 4096,
        *,
        euid: int = 1000,
        soft: int | None = None,
        hard: int | None = None,
    ) -> None:
        self.page = page_size
        self.euid = euid
        self.soft = soft
        self.hard = hard
        self.mapped: set[int] = set()
        self.locked: dict[int, int] = {}
        self.future = False
        self.calls: list[tuple[object, ...]] = []
        self._mutex = threading.Lock()
        self._next = 0x10_0000_0000
        #: Secrets: protection and madvise advice per page, reserved regions (id ->
        #: (address, bytes)).
        self.prot: dict[int, int] = {}
        self.advice: dict[int, set[int]] = {}
        self.regions: dict[int, tuple[int, int]] = {}

    # -- facts the backends take by injection --------------------------------------

    def getrlimit(self) -> tuple[int | None, int | None]:
        """Soft and hard RLIMIT_MEMLOCK (None = unlimited)."""
        return self.soft, self.hard

    def geteuid(self) -> int:
        """The simulated effective uid."""
        return self.euid

    def locked_bytes(self) -> int:
        """Bytes this process has locked (virtual, each page once)."""
        return len(self.locked) * self.page

    # -- the address space ------------------------------------------------------------

    def mmap(self, nbytes: int) -> int:
        """Map ``nbytes`` (rounded up to pages) at a fresh address; a hole follows it."""
        npages = -(-nbytes // self.page)
        with self._mutex:
            addr = self._next
            self._next += (npages + 1) * self.page  # leave one unmapped page after it
            first = addr // self.page
            self.mapped.update(range(first, first + npages))
        return addr

    def munmap(self, addr: int, nbytes: int) -> None:
        """Unmap pages; that unlocks them implicitly (every seed page says so)."""
        with self._mutex:
            for p in self._pages(addr, nbytes):
                self.mapped.discard(p)
                self.locked.pop(p, None)

    def locked_addresses(self) -> set[int]:
        """Addresses of the locked pages."""
        return {p * self.page for p in self.locked}

    def is_locked(self, addr: int, nbytes: int) -> bool:
        """Every page of [addr, addr+nbytes) is locked."""
        return all(p in self.locked for p in self._pages(addr, nbytes))

    def _pages(self, addr: int, nbytes: int) -> range:
        start = addr // self.page
        end = -(-(addr + nbytes) // self.page)
        return range(start, end)

    # -- Libc protocol ------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether the simulated libc exports ``name``."""
        return name in ("mlock", "munlock", "mlockall", "munlockall", "clock_nanosleep")

    def serial_lock_calls(self) -> tuple[Any, Any]:
        """The plain calls: the simulation has no per-call cost to save."""
        return self.mlock, self.munlock

    def mlock2(self, addr: int, length: int, flags: int, syscall_nr: int) -> int:
        """No mlock2 outside Linux."""
        self.calls.append(("mlock2", addr, length, flags))
        return errno.ENOSYS

    def mlock(self, addr: int, length: int) -> int:
        """mlock: logged, then the OS's rules under a mutex (the registry uses threads)."""
        self.calls.append(("mlock", addr, length))
        with self._mutex:
            return self._mlock(addr, length)

    def munlock(self, addr: int, length: int) -> int:
        """munlock."""
        self.calls.append(("munlock", addr, length))
        with self._mutex:
            return self._munlock(addr, length)

    def mlockall(self, flags: int) -> int:
        """mlockall."""
        self.calls.append(("mlockall", flags))
        with self._mutex:
            return self._mlockall(flags)

    def munlockall(self) -> int:
        """munlockall."""
        self.calls.append(("munlockall",))
        with self._mutex:
            return self._munlockall()

    def _mlock(self, addr: int, length: int) -> int:
        raise NotImplementedError

    def _munlock(self, addr: int, length: int) -> int:
        raise NotImplementedError

    def _mlockall(self, flags: int) -> int:
        raise NotImplementedError

    def _lock_all(self, new: list[int], flags: int) -> int:
        """The effect of an mlockall that passed its checks: lock ``new`` (the pages
        MCL_CURRENT adds) and note MCL_FUTURE."""
        for p in new:
            self.locked[p] = 1
        if flags & MCL_FUTURE:
            self.future = True
        return 0

    def _munlockall(self) -> int:
        self.locked.clear()
        self.future = False
        return 0

    # -- secrets: guarded, locked, undumpable mappings -----------------------------------
    #
    # reserve() maps real private memory (a Python mmap object, as RealLibc does) and
    # enters its pages in the model (mapped, PROT_READ|PROT_WRITE); release(), or the
    # object's death (Python unmaps it then), unmaps it, which unlocks it (every seed
    # page says so). mprotect() and madvise() check the
    # range and the arguments as the OS's manual page says and change only the model
    # (``prot``, ``advice``): the real pages stay readable, so a test can read what a
    # wipe left. wipe() and exporter() are the real ones (they touch the real pages).

    #: errno of mprotect/madvise for a range that is not (wholly) mapped.
    UNMAPPED = errno.ENOMEM
    #: Whether mprotect/madvise refuse an address that is not page-aligned (EINVAL).
    STRICT_ALIGNMENT = True
    #: The madvise advice values the OS knows (others: EINVAL).
    ADVICE: frozenset[int] = frozenset(range(7))

    wipe = staticmethod(RealLibc.wipe)
    exporter = staticmethod(RealLibc.exporter)

    def reserve(self, length: int) -> tuple[mmap.mmap, int]:
        """mmap(2) of private anonymous memory, readable and writable: (owner, address)."""
        region = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE)
        addr = RealLibc.address_of(memoryview(region))
        self.calls.append(("mmap", addr, length))
        with self._mutex:
            self.regions[id(region)] = (addr, length)
            for p in self._pages(addr, length):
                self.mapped.add(p)
                self.prot[p] = 3
        weakref.finalize(region, self._unmapped, id(region))
        return region, addr

    def release(self, region: mmap.mmap) -> None:
        """munmap(2) of a reserved region: unmapped and unlocked (idempotent)."""
        self._unmapped(id(region))
        region.close()

    def _unmapped(self, key: int) -> None:
        with self._mutex:
            where = self.regions.pop(key, None)
            if where is not None:
                self.calls.append(("munmap", *where))
                for p in self._pages(*where):
                    self.mapped.discard(p)
                    self.locked.pop(p, None)
                    self.prot.pop(p, None)
                    self.advice.pop(p, None)

    def _range_error(self, addr: int, length: int) -> int:
        if self.STRICT_ALIGNMENT and addr % self.page:
            return errno.EINVAL
        if any(p not in self.mapped for p in self._pages(addr, length)):
            return self.UNMAPPED
        return 0

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2): EINVAL for unknown bits; the range as :meth:`_range_error`."""
        self.calls.append(("mprotect", addr, length, prot))
        with self._mutex:
            err = errno.EINVAL if prot & ~7 else self._range_error(addr, length)
            if not err:
                for p in self._pages(addr, length):
                    self.prot[p] = prot
            return err

    def madvise(self, addr: int, length: int, advice: int) -> int:
        """madvise(2): EINVAL for advice the OS does not know; the range as mprotect."""
        self.calls.append(("madvise", addr, length, advice))
        with self._mutex:
            err = errno.EINVAL if advice not in self.ADVICE else self._range_error(addr, length)
            if not err:
                for p in self._pages(addr, length):
                    self.advice.setdefault(p, set()).add(advice)
            return err

    def protection(self, addr: int, length: int) -> set[int]:
        """The protections the model gives the pages of [addr, addr+length)."""
        return {self.prot.get(p, -1) for p in self._pages(addr, length)}

    def syscall_names(self) -> list[object]:
        """Names of the calls made so far."""
        return [c[0] for c in self.calls]

    # -- the rest of the Libc protocol: what these OSes lack (Linux-only calls) --------

    #: mincore(2)'s byte for a resident page (bit 0 on every OS; the BSDs add more).
    mincore_bits = 0x1

    def advice_call(self, advice: int) -> Any:
        """madvise bound to ``advice`` (none of these OSes has MADV_POPULATE_*: EINVAL)."""
        return lambda addr, length: self.madvise(addr, length, advice)

    def mincore_into(self, addr: int, length: int, out: bytearray) -> int:
        """mincore(2): the host kernel's residency, in this OS's bits; ENOMEM if unmapped."""
        self.calls.append(("mincore", addr, length))
        if any(p not in self.mapped for p in self._pages(addr, length)):
            return errno.ENOMEM
        host = bytearray(len(out))
        err = _host_libc().mincore_into(addr, length, host)
        if err:
            return err
        for i, b in enumerate(host):
            out[i] = self.mincore_bits if b & 1 else 0
        return 0

    def cachestat_pages(self, fd: int, offset: int, length: int) -> tuple[int, int]:
        """No cachestat(2) outside Linux."""
        self.calls.append(("cachestat", fd))
        return -1, errno.ENOSYS

    def cachestat_counter(self) -> Any:
        """No cachestat(2): every count fails."""
        return lambda fd: -1

    def peek(self, addr: int) -> int:
        """A read of the byte at ``addr`` (host memory)."""
        return _host_libc().peek(addr)

    def mallopt(self, param: int, value: int) -> bool:
        """No glibc: mallopt(3) is absent."""
        self.calls.append(("mallopt", param, value))
        return False

    def prctl(self, option: int, arg: int) -> int:
        """No prctl(2) outside Linux."""
        self.calls.append(("prctl", option, arg))
        return errno.ENOSYS

    def syscall(self, number: int, *args: int) -> int:
        """Raw Linux system call numbers mean nothing here."""
        self.calls.append(("syscall", number))
        return errno.ENOSYS

    def syscall_long(self, number: int, *args: int) -> tuple[int, int]:
        """As :meth:`syscall`."""
        return -1, self.syscall(number, *args)

    def priv_ineffect(self, name: str) -> bool | None:
        """Only illumos has priv_ineffect(3C)."""
        return None

    def sysctl_int(self, name: str) -> int | None:
        """Only the BSDs and macOS have sysctlbyname(3)."""
        return None

    def deadline_sleep_call(self, clock_id: int, flags: int) -> Any:
        """clock_nanosleep(clock_id, flags, deadline): logged, then slept on the host's
        monotonic clock (time.monotonic_ns); None where the OS has none (macOS)."""
        if not self.has("clock_nanosleep"):
            return None

        def sleep_until(deadline_ns: int) -> int:
            self.calls.append(("clock_nanosleep", clock_id, flags, deadline_ns))
            left = deadline_ns - time.monotonic_ns()
            if left > 0:
                time.sleep(left / 1e9)
            return 0

        return sleep_until

    def address_of(self, buffer: memoryview) -> int:
        """The host address of ``buffer``."""
        return _host_libc().address_of(buffer)

    def default_thread_stack_size(self) -> int:
        """Thread defaults are not simulated: unknown."""
        self.calls.append(("default_thread_stack_size",))
        return 0


def _host_libc() -> Any:
    from memlock._platform._libc import real_libc

    return real_libc()


class _HostPages(set[int]):
    """The pages of this real process's mappings (/proc/self/maps), as page numbers.

    Membership asks the host kernel; ``add``/``update``/``discard`` (the simulated mmap and
    munmap) are remembered on top.
    """

    def __init__(self, page: int) -> None:
        super().__init__()
        self._page = page

    def __contains__(self, p: object) -> bool:
        if super().__contains__(p):
            return True
        addr = int(p) * self._page  # type: ignore[call-overload]
        with open("/proc/self/maps") as f:
            for line in f:
                lo, _, rest = line.partition("-")
                hi = rest.split(" ", 1)[0]
                if int(lo, 16) <= addr < int(hi, 16):
                    return True
        return False

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __iter__(self) -> Any:
        """Every page of every host mapping (what MCL_CURRENT would lock)."""
        seen = set(super().__iter__())
        with open("/proc/self/maps") as f:
            for line in f:
                lo, _, rest = line.partition("-")
                hi = rest.split(" ", 1)[0]
                seen.update(range(int(lo, 16) // self._page, int(hi, 16) // self._page))
        return iter(seen)


class SysctlSim(SimLibc):
    """A simulated libc with sysctlbyname (the BSDs): subclasses give :meth:`sysctls`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unreadable_sysctls: set[str] = set()

    def sysctls(self) -> dict[str, int]:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        """Also sysctlbyname."""
        return name == "sysctlbyname" or super().has(name)

    def sysctl_int(self, name: str) -> int | None:
        """sysctlbyname, failing for the names in ``unreadable_sysctls``."""
        if name in self.unreadable_sysctls:
            return None
        return self.sysctls().get(name)


class FreeBSDLibc(SysctlSim):
    """FreeBSD mlock(2)/mlockall(2) (seeds 000 and 003; order from kern_mlock).

    mlock: EPERM if ``unprivileged_mlock`` is 0 and euid != 0; EINVAL if the range wraps;
    ENOMEM if the pages exceed ``vm.max_user_wired``, if they plus the pages this process
    has wired exceed RLIMIT_MEMLOCK (root included), if part of the range is unmapped or a
    page cannot be faulted (``unfaultable``), or if all users' wired pages would exceed
    ``vm.max_user_wired``. On failure nothing changes. Locks do not nest.
    munlock: EPERM as above, EINVAL on wrap, ENOMEM if part is unmapped or (source:
    vm_map_unwire) not wired; nothing changes then.
    mlockall: EPERM; EINVAL for 0 or unknown flags; ENOMEM if the mapped size exceeds
    RLIMIT_MEMLOCK (unless ``old_mlock``) or the system limit; EAGAIN if some page could not
    be locked.
    """

    def __init__(
        self,
        page_size: int = 4096,
        *,
        euid: int = 1000,
        soft: int | None = None,
        hard: int | None = None,
        unprivileged_mlock: int = 1,
        max_user_wired: int = 2**20,
        other_user_wired: int = 0,
        kernel_wired: int = 5000,
        old_mlock: int = 0,
    ) -> None:
        super().__init__(page_size, euid=euid, soft=soft, hard=hard)
        self.unprivileged_mlock = unprivileged_mlock
        self.max_user_wired = max_user_wired  # pages
        self.other_user_wired = other_user_wired  # pages wired by other processes
        self.kernel_wired = kernel_wired  # pages wired by the kernel
        self.old_mlock = old_mlock
        self.unfaultable: set[int] = set()

    #: mprotect(2): "EINVAL: The virtual address range specified by the addr and len
    #: arguments is not valid"; the kernel rounds addr down to a page (trunc_page).
    UNMAPPED = errno.EINVAL
    STRICT_ALIGNMENT = False
    #: madvise(2): MADV_NORMAL (0) .. MADV_NOCORE (8), MADV_CORE (9), MADV_PROTECT (10).
    ADVICE = frozenset(range(11))

    #: mincore(2): MINCORE_INCORE | MINCORE_REFERENCED for a resident page just read.
    mincore_bits = 0x1 | 0x2

    def sysctls(self) -> dict[str, int]:
        """The integers the backend reads with sysctlbyname."""
        user = self.other_user_wired + len(self.locked)
        return {
            "security.bsd.unprivileged_mlock": self.unprivileged_mlock,
            "vm.max_user_wired": self.max_user_wired,
            "vm.stats.vm.v_user_wire_count": user,
            "vm.stats.vm.v_wire_count": self.kernel_wired + user,
            "vm.old_mlock": self.old_mlock,
            "hw.physmem": 8 * 2**30,
        }

    def _denied(self) -> bool:
        return self.unprivileged_mlock == 0 and self.euid != 0

    def _span(self, addr: int, length: int) -> range | None:
        """The pages of the range, or None if it wraps (kern_mlock's check)."""
        last = (addr + length) % 2**64
        end = (last + self.page - 1) // self.page * self.page % 2**64
        if last < addr or end < addr:
            return None
        return range(addr // self.page, end // self.page)

    def _mlock(self, addr: int, length: int) -> int:
        if self._denied():
            return errno.EPERM
        pages = self._span(addr, length)
        if pages is None:
            return errno.EINVAL
        if len(pages) > self.max_user_wired:
            return errno.ENOMEM
        if self.soft is not None and (len(pages) + len(self.locked)) * self.page > self.soft:
            return errno.ENOMEM
        if any(p not in self.mapped or p in self.unfaultable for p in pages):
            return errno.ENOMEM
        new = [p for p in pages if p not in self.locked]
        if self.other_user_wired + len(self.locked) + len(new) > self.max_user_wired:
            return errno.ENOMEM
        for p in new:
            self.locked[p] = 1
        return 0

    def _munlock(self, addr: int, length: int) -> int:
        if self._denied():
            return errno.EPERM
        pages = self._span(addr, length)
        if pages is None:
            return errno.EINVAL
        if any(p not in self.mapped or p not in self.locked for p in pages):
            return errno.ENOMEM
        for p in pages:
            del self.locked[p]
        return 0

    def _mlockall(self, flags: int) -> int:
        if self._denied():
            return errno.EPERM
        if flags == 0 or flags & ~(MCL_CURRENT | MCL_FUTURE):
            return errno.EINVAL
        if flags & MCL_CURRENT:
            size = len(self.mapped) * self.page
            if not self.old_mlock and self.soft is not None and size > self.soft:
                return errno.ENOMEM
            new = [p for p in self.mapped if p not in self.locked]
            if self.other_user_wired + len(self.locked) + len(new) > self.max_user_wired:
                return errno.ENOMEM
            if any(p in self.unfaultable for p in new):
                return errno.EAGAIN
            return self._lock_all(new, flags)
        return self._lock_all([], flags)

    def _munlockall(self) -> int:
        if self._denied():
            return errno.EPERM
        return super()._munlockall()


class DarwinLibc(SysctlSim):
    """macOS/XNU (seed 003 is the BSD page; source: xnu bsd/kern/kern_mman.c, vm_map.c).

    mlock: EINVAL if the range wraps; 0 for length 0; addr rounded down; ENOMEM if part is
    unmapped; EACCES for pages that cannot be wired with their protection (``protected``);
    EAGAIN (KERN_RESOURCE_SHORTAGE) if newly wired pages would take this process over
    min(RLIMIT_MEMLOCK, ``vm.user_wire_limit``) or all users over
    ``vm.global_user_wire_limit``. No privilege is needed. User wirings nest: each mlock
    adds one, each munlock removes one. On failure nothing changes.
    munlock: ENOMEM if part is unmapped. mlockall/munlockall: always ENOSYS.
    """

    def __init__(
        self,
        page_size: int = 16384,
        *,
        euid: int = 501,
        soft: int | None = None,
        hard: int | None = None,
        user_wire_limit: int = 2**33,
        global_user_wire_limit: int = 2**34,
        other_wired: int = 0,
    ) -> None:
        super().__init__(page_size, euid=euid, soft=soft, hard=hard)
        self.user_wire_limit = user_wire_limit  # bytes
        self.global_user_wire_limit = global_user_wire_limit  # bytes
        self.other_wired = other_wired  # bytes wired by everything else
        self.protected: set[int] = set()

    #: mprotect(2)/madvise(2): EINVAL for an address that is not page-aligned, ENOMEM for
    #: pages that are not mapped; madvise knows MADV_NORMAL (0) .. MADV_ZERO_WIRED_PAGES (6),
    #: MADV_FREE_REUSABLE (7), MADV_FREE_REUSE (8), MADV_CAN_REUSE (9).
    ADVICE = frozenset(range(10))

    #: mincore(2): MINCORE_INCORE | MINCORE_REFERENCED, as on FreeBSD (XNU's page).
    mincore_bits = 0x1 | 0x2

    def has(self, name: str) -> bool:
        """No clock_nanosleep in macOS's libc."""
        return name != "clock_nanosleep" and super().has(name)

    def sysctls(self) -> dict[str, int]:
        """The integers the backend reads with sysctlbyname (bytes on macOS)."""
        return {
            "vm.user_wire_limit": self.user_wire_limit,
            "vm.global_user_wire_limit": self.global_user_wire_limit,
            "hw.memsize": 16 * 2**30,
        }

    def _mlock(self, addr: int, length: int) -> int:
        if addr + length > SIZE_MAX:
            return errno.EINVAL
        if length == 0:
            return 0
        pages = self._pages(addr, length)
        if any(p not in self.mapped for p in pages):
            return errno.ENOMEM
        if any(p in self.protected for p in pages):
            return errno.EACCES
        new = sum(1 for p in pages if p not in self.locked) * self.page
        mine = len(self.locked) * self.page
        cap = self.user_wire_limit if self.soft is None else min(self.soft, self.user_wire_limit)
        if mine + new > cap or self.other_wired + mine + new > self.global_user_wire_limit:
            return errno.EAGAIN
        for p in pages:
            self.locked[p] = self.locked.get(p, 0) + 1
        return 0

    def _munlock(self, addr: int, length: int) -> int:
        pages = self._pages(addr, length)
        if any(p not in self.mapped for p in pages):
            return errno.ENOMEM
        for p in pages:
            n = self.locked.get(p, 0)
            if n > 1:
                self.locked[p] = n - 1
            else:
                self.locked.pop(p, None)
        return 0

    def _mlockall(self, flags: int) -> int:
        return errno.ENOSYS

    def _munlockall(self) -> int:
        return errno.ENOSYS


class SunOSLibc(SimLibc):
    """illumos/Solaris munlock(3C) (seed 002) and mlockall(3C).

    mlock/munlock: ENOSYS if ``supported`` is False; EINVAL if addr is not page-aligned;
    ENOMEM if the range wraps or part of it is unmapped; EPERM without
    PRIV_PROC_LOCK_MEMORY (``proc_lock_memory``); mlock: EAGAIN if the newly locked pages
    would take the process over ``max_locked_memory`` (project.max-locked-memory, bytes) or
    the machine over ``lockable_pages``. Locks do not nest. On failure nothing changes.
    mlockall: EINVAL for 0 or unknown flags; EPERM; EAGAIN as above for MCL_CURRENT.
    """

    def __init__(
        self,
        page_size: int = 8192,
        *,
        euid: int = 100,
        proc_lock_memory: bool = True,
        priv_api: bool = True,
        max_locked_memory: int | None = None,
        lockable_pages: int | None = None,
        supported: bool = True,
    ) -> None:
        super().__init__(page_size, euid=euid)
        self.proc_lock_memory = proc_lock_memory
        self.priv_api = priv_api
        self.max_locked_memory = max_locked_memory
        self.lockable_pages = lockable_pages
        self.supported = supported

    #: mprotect(2)/madvise(3C): EINVAL for an address that is not a multiple of the page
    #: size, ENOMEM for pages that are not mapped; madvise knows MADV_NORMAL (0) ..
    #: MADV_ACCESS_MANY (7), MADV_PURGE (9).
    ADVICE = frozenset((*range(8), 9))

    def has(self, name: str) -> bool:
        """Also priv_ineffect where ``priv_api``."""
        return (name == "priv_ineffect" and self.priv_api) or super().has(name)

    def priv_ineffect(self, name: str) -> bool | None:
        """priv_ineffect(3C); None when the simulated libc lacks it."""
        if not self.priv_api:
            return None
        return name == "proc_lock_memory" and self.proc_lock_memory

    def rctl(self) -> int | None:
        """project.max-locked-memory (bytes)."""
        return self.max_locked_memory

    def _over(self, new_pages: int) -> bool:
        total = (len(self.locked) + new_pages) * self.page
        if self.max_locked_memory is not None and total > self.max_locked_memory:
            return True
        cap = self.lockable_pages
        return cap is not None and len(self.locked) + new_pages > cap

    def _check(self, addr: int, length: int) -> int | range:
        if not self.supported:
            return errno.ENOSYS
        if addr % self.page:
            return errno.EINVAL
        if addr + length > SIZE_MAX:
            return errno.ENOMEM
        if not self.proc_lock_memory:
            return errno.EPERM
        pages = self._pages(addr, length)
        if any(p not in self.mapped for p in pages):
            return errno.ENOMEM
        return pages

    def _mlock(self, addr: int, length: int) -> int:
        pages = self._check(addr, length)
        if isinstance(pages, int):
            return pages
        new = [p for p in pages if p not in self.locked]
        if self._over(len(new)):
            return errno.EAGAIN
        for p in new:
            self.locked[p] = 1
        return 0

    def _munlock(self, addr: int, length: int) -> int:
        pages = self._check(addr, length)
        if isinstance(pages, int):
            return pages
        for p in pages:
            self.locked.pop(p, None)
        return 0

    def _mlockall(self, flags: int) -> int:
        if not self.supported:
            return errno.ENOSYS
        if flags == 0 or flags & ~(MCL_CURRENT | MCL_FUTURE):
            return errno.EINVAL
        if not self.proc_lock_memory:
            return errno.EPERM
        if flags & MCL_CURRENT:
            new = [p for p in self.mapped if p not in self.locked]
            if self._over(len(new)):
                return errno.EAGAIN
            return self._lock_all(new, flags)
        return self._lock_all([], flags)

    def _munlockall(self) -> int:
        if not self.supported:
            return errno.ENOSYS
        if not self.proc_lock_memory:
            return errno.EPERM
        return super()._munlockall()


# -- the real backends on these libraries ---------------------------------------------------


def _host(kw: dict[str, object], sim: S) -> S:
    """``sim``, over this process's real address space if ``kw`` asks (host_memory=True)."""
    if kw.get("host_memory"):
        sim.mapped = _HostPages(sim.page)
    return sim



def freebsd(**kw: object) -> tuple[FreeBSDLibc, FreeBSDBackend]:
    sim = _host(kw, FreeBSDLibc(**{k: v for k, v in kw.items() if k != 'host_memory'}))  # type: ignore[arg-type]
    backend = FreeBSDBackend(
        sim, sim.page, rlimit=sim.getrlimit, euid=sim.geteuid, locked_bytes=sim.locked_bytes
    )
    return sim, backend


def darwin(**kw: object) -> tuple[DarwinLibc, DarwinBackend]:
    sim = _host(kw, DarwinLibc(**{k: v for k, v in kw.items() if k != 'host_memory'}))  # type: ignore[arg-type]
    return sim, DarwinBackend(sim, sim.page, rlimit=sim.getrlimit, euid=sim.geteuid)


def sunos(**kw: object) -> tuple[SunOSLibc, SunOSBackend]:
    sim = _host(kw, SunOSLibc(**{k: v for k, v in kw.items() if k != 'host_memory'}))  # type: ignore[arg-type]
    backend = SunOSBackend(
        sim, sim.page, euid=sim.geteuid, locked_bytes=sim.locked_bytes,
        locked_memory_limit=sim.rctl,
    )
    return sim, backend


def exact(exc: BaseException, cls: type[BaseException]) -> None:
    """``exc`` is exactly ``cls`` (a MemlockError must not be a LockLimitError, ...)."""
    assert type(exc) is cls, f"{type(exc).__name__}: {exc}"
