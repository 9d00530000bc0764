"""Linux backend: mlock/mlock2/mlockall, /proc accounting, CAP_IPC_LOCK.

Kernel facts this relies on are in DESIGN.md §3: ENOMEM means "over RLIMIT_MEMLOCK",
"not mapped", or (checked on 6.x) "one mapping too many": locking or unlocking part of a
mapping splits it, and at vm.max_map_count the split fails. The limit is checked first and
only when the process lacks CAP_IPC_LOCK, so the causes are told apart by redoing the
kernel's arithmetic and by counting the process's mappings. With RLIMIT_MEMLOCK 0 and no
CAP_IPC_LOCK, mlock/mlock2/mlockall answer EPERM, an mmap of memfd_secret memory EAGAIN:
both are :class:`LockPermissionError`.
"""

from __future__ import annotations

import errno
import os

from .._units import format_size
from ..errors import MemlockError, UnsupportedOperation
from . import _procfs
from ._base import Backend

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import ClassVar

    from .._records import HostProcess, ProcessContext, ProcessMapping, ProcessStatus, SystemStatus
    from ._libc import CachestatCount, RealLibc, SecretsLibc

__all__ = ["LinuxBackend"]

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
MLOCK_ONFAULT = 1
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
CAP_FOWNER = 3
CAP_IPC_LOCK = 14
CAP_SYS_RESOURCE = 24
MAX_MAP_COUNT = "/proc/sys/vm/max_map_count"
#: A failing call may need this many mappings more than there are (mmap plus two splits):
#: a process this close to vm.max_map_count is refused for the count, not anything else.
MAP_COUNT_MARGIN = 8
PR_SET_PDEATHSIG = 1
PR_SET_THP_DISABLE = 41
_O_CLOEXEC = 0o2000000
_PROT_RW, _MAP_SHARED = 3, 0x01

# mlock2 syscall numbers where glibc lacks the wrapper (< 2.27).
_MLOCK2_NR = {"x86_64": 325, "aarch64": 284, "i686": 376, "armv7l": 390, "ppc64le": 378,
              "s390x": 374, "riscv64": 284}


def _has_capability(cap: int) -> bool:
    """Whether ``cap`` is in this process's effective set (False where /proc cannot tell)."""
    try:
        return capability_effective(_procfs.read_text("/proc/self/status"), cap)
    except OSError:
        return False


def capability_effective(status_text: str, cap: int) -> bool:
    """Whether ``cap`` is in the CapEff mask of a /proc/PID/status text."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


class LinuxBackend(Backend):
    """Linux, verified on a real kernel."""

    name = "linux"
    monotonic_abstime = (1, 1)  # <time.h>: CLOCK_MONOTONIC 1, TIMER_ABSTIME 1
    constants: ClassVar[dict[str, int]] = {
        "MCL_CURRENT": MCL_CURRENT,
        "MCL_FUTURE": MCL_FUTURE,
        "MCL_ONFAULT": MCL_ONFAULT,
        "MLOCK_ONFAULT": MLOCK_ONFAULT,
    }
    supports_onfault = True
    supports_prefault_stack = True
    per_thread_faults = True
    supports_thp_disable = True
    populate_read_advice = MADV_POPULATE_READ

    def mlock2(self, addr: int, length: int, flags: int) -> None:
        """mlock2(2)."""
        nr = _MLOCK2_NR.get(os.uname().machine, 325)
        err = self.libc.mlock2(addr, length, flags, nr)
        if err:
            raise self.lock_error("mlock2", err, length)

    def mlock_onfault(self, addr: int, length: int) -> None:
        """mlock2(MLOCK_ONFAULT)."""
        self.mlock2(addr, length, MLOCK_ONFAULT)

    @staticmethod
    def _maps() -> list[tuple[int, int, str, str]] | None:
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                return list(_procfs.iter_maps(f))
        except OSError:
            return None

    def explain_range(self, start: int, end: int) -> str | None:
        """Holes, PROT_NONE pages and memfd_secret memory in [start, end), from /proc/self/maps.

        Reads the file a line at a time and keeps only what overlaps the range: it runs on
        error paths, where the process may be at vm.max_map_count and unable to map more.
        """
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                overlapping = [m for m in _procfs.iter_maps(f) if m[1] > start and m[0] < end]
        except OSError:
            return None
        reasons, pos = [], start
        for lo, hi, perms, path in overlapping:
            if lo > pos:
                reasons.append(f"nothing is mapped at {pos:#x}-{lo:#x}")
            if "secretmem" in path:
                reasons.append(f"{max(lo, start):#x}-{min(hi, end):#x} is memfd_secret memory "
                               "(locked from the start; the kernel refuses mlock on it)")
            elif perms.startswith("---"):
                reasons.append(f"{max(lo, start):#x}-{min(hi, end):#x} is PROT_NONE")
            pos = max(pos, hi)
        if pos < end:
            reasons.append(f"nothing is mapped at {pos:#x}-{end:#x}")
        return "; ".join(reasons) or None

    def mapped_ranges(self) -> list[tuple[int, int]] | None:
        """From /proc/self/maps."""
        maps = self._maps()
        return None if maps is None else [(lo, hi) for lo, hi, _, _ in maps]

    def copy_on_write_files(self, start: int, end: int) -> list[tuple[int, int, str]]:
        """From /proc/self/maps: file-backed mappings with perms ``rw?p``."""
        try:
            text = _procfs.read_text("/proc/self/maps")
        except OSError:
            return []
        return [(max(lo, start), min(hi, end), path)
                for lo, hi, perms, path in _procfs.maps_overlapping(text, start, end)
                if perms[1] == "w" and perms[3] == "p" and path.startswith("/")]

    def populate_plan(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """MADV_POPULATE_WRITE where mlock would write-fault (private writable), else READ.

        Mirrors the kernel's own choice in mlock (populate_vma_page_range), so populating
        never dirties a shared file page or breaks copy-on-write where mlock would not.
        """
        try:
            text = _procfs.read_text("/proc/self/maps")
        except OSError:
            return []
        return [
            (max(lo, start), min(hi, end),
             MADV_POPULATE_WRITE if perms[1] == "w" and perms[3] == "p" else MADV_POPULATE_READ)
            for lo, hi, perms, _ in _procfs.maps_overlapping(text, start, end)
        ]

    def populate(self, start: int, end: int, advice: int) -> None:
        """madvise(MADV_POPULATE_*) (Linux 5.14+): faults in without SIGBUS; errors ignored."""
        self.libc.madvise(start, end - start, advice)

    def prefault_locked(self, addr: int, length: int) -> None:
        """MADV_POPULATE_WRITE (5.14+); mlock on older kernels (EINVAL)."""
        err = self.libc.madvise(addr, length, MADV_POPULATE_WRITE)
        if err == errno.EINVAL:  # kernel < 5.14: mlock populates the (already locked) range
            self.mlock(addr, length)
        elif err:
            raise MemlockError(err, f"madvise(MADV_POPULATE_WRITE): {os.strerror(err)}")

    def thread_stack_texts(self) -> tuple[str, str]:
        """/proc/thread-self/syscall (its stack pointer) and /proc/self/maps."""
        try:
            return (_procfs.read_text("/proc/thread-self/syscall"),
                    _procfs.read_text("/proc/self/maps"))
        except OSError as exc:
            raise UnsupportedOperation(
                f"prefault_stack needs /proc/thread-self/syscall and /proc/self/maps: {exc}"
            ) from None

    # -- files and the page cache --------------------------------------------------------

    def file_populator(self) -> Callable[[int, int], int]:
        """madvise(MADV_POPULATE_READ) (Linux 5.14+): errors as errno, never SIGBUS."""
        return self.libc.advice_call(MADV_POPULATE_READ)

    def cached_pages(self, fd: int, offset: int, length: int) -> tuple[int, int]:
        """cachestat(2) (Linux 6.5+; EPERM where the kernel hides the page cache)."""
        return self.libc.cachestat_pages(fd, offset, length)

    def cached_pages_counter(self) -> CachestatCount | None:
        """cachestat(2) of whole files, pre-bound (ENOSYS shows as -1: ask cached_pages)."""
        return self.libc.cachestat_counter()

    def page_cache_visible(self, fd: int) -> bool:
        """The kernel's rule (mm/mincore.c, can_do_mincore): the caller owns the file,
        may write it, or has CAP_FOWNER; else mincore calls every page resident."""
        if os.fstat(fd).st_uid == os.geteuid():
            return True
        if os.access(f"/proc/self/fd/{fd}", os.W_OK, effective_ids=True):
            return True
        return _has_capability(CAP_FOWNER)

    # -- processes -----------------------------------------------------------------------

    def uses_glibc(self) -> bool:
        """glibc or another C library (musl, ...)."""
        try:
            return os.confstr("CS_GNU_LIBC_VERSION") is not None
        except (ValueError, OSError):
            import platform

            return platform.libc_ver()[0] == "glibc"

    def die_with_parent(self) -> None:
        """prctl(PR_SET_PDEATHSIG, SIGKILL); errors ignored (the parent reaps anyway)."""
        import signal

        self.libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def cgroup_memory_headroom(self) -> tuple[int, int, str] | None:
        """From /proc/self/cgroup and the cgroup files (see :mod:`._linux_probes`)."""
        from ._linux_probes import cgroup_memory_headroom

        return cgroup_memory_headroom()

    def doctor_probes(self) -> list[tuple[str, bool, str]]:
        """MCL_ONFAULT, MADV_POPULATE_READ/WRITE, cachestat: whether this kernel has them."""
        from ._linux_probes import doctor_probes

        return doctor_probes()


    # -- facts ---------------------------------------------------------------------

    def privileged(self) -> bool:
        """CAP_IPC_LOCK in the effective set (not uid 0: root without it is limited)."""
        return _has_capability(CAP_IPC_LOCK)

    def may_raise_hard_limit(self) -> bool:
        """CAP_SYS_RESOURCE in the effective set (root without it cannot)."""
        return _has_capability(CAP_SYS_RESOURCE)

    def locked_bytes(self) -> int | None:
        """VmLck of this process."""
        return _procfs.status_fields().get("VmLck")

    def vm_size(self) -> int | None:
        """VmSize of this process: what mlockall(MCL_CURRENT) is charged."""
        return _procfs.status_fields().get("VmSize")

    def process_memory(self) -> dict[str, int]:
        """The byte figures of /proc/self/status (VmSize, VmLck, VmRSS, ...)."""
        return _procfs.status_fields()

    def vm_usage(self) -> tuple[int | None, int | None]:
        """VmSize and VmData of /proc/self/status."""
        fields = _procfs.status_fields()
        return fields.get("VmSize"), fields.get("VmData")

    @staticmethod
    def map_count() -> tuple[int, int] | None:
        """(mappings of this process, vm.max_map_count); None where /proc cannot tell.

        The mappings are the lines of /proc/self/maps (on x86-64 one more than the kernel's
        count: the [vsyscall] page).
        """
        try:
            most = int(_procfs.read_text(MAX_MAP_COUNT))
            return _procfs.count_lines("/proc/self/maps"), most
        except (OSError, ValueError):
            return None

    def own_cgroups(self) -> str:
        """/proc/self/cgroup ("" if unreadable)."""
        try:
            return _procfs.read_text("/proc/self/cgroup")
        except OSError:
            return ""

    def open_descriptors(self) -> int | None:
        """How many descriptors this process has open now (/proc/self/fd)."""
        try:
            return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir opened
        except OSError:
            return super().open_descriptors()

    def pseudo_file_systems(self) -> dict[int, str]:
        """Pseudo file systems by ``st_dev``, from /proc/self/mountinfo ({} if unreadable)."""
        try:
            with open("/proc/self/mountinfo", "rb") as f:
                return _procfs.pseudo_devices(f.read())
        except OSError:
            return {}

    def process_status(self, pid: int) -> ProcessStatus:
        """Locked mappings of ``pid`` from its smaps, VmLck from its status."""
        try:
            smaps = _procfs.read_text(f"/proc/{pid}/smaps")
            status = _procfs.read_text(f"/proc/{pid}/status")
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
        return status_from_texts(pid, smaps, status)

    def process_mappings(self, pid: int, *, dumps: bool = False) -> tuple[ProcessMapping, ...]:
        """From /proc/PID/smaps (and coredump_filter); see :mod:`._linux_process`."""
        from ._linux_process import process_mappings

        return process_mappings(pid, dumps=dumps)

    def process_context(self, pid: int) -> ProcessContext:
        """From /proc/PID (status, limits, cgroup, environ, root); see :mod:`._linux_process`."""
        from ._linux_process import process_context

        return process_context(pid)

    def system_status(self) -> SystemStatus:
        """/proc/meminfo and vm.max_map_count."""
        try:
            meminfo = _procfs.read_text("/proc/meminfo")
        except OSError:
            meminfo = ""
        try:
            max_map: int | None = int(_procfs.read_text(MAX_MAP_COUNT))
        except (OSError, ValueError):
            max_map = None
        return system_status_from_meminfo(meminfo, max_map)

    def process_locked_bytes(self, pid: int) -> int | None:
        """VmLck of /proc/PID/status (see :mod:`._hostscan`)."""
        from ._hostscan import process_locked_bytes

        return process_locked_bytes(pid)

    def host_processes(self, *, include_unlocked: bool = False, regions: bool = True,
                       pids: Sequence[int] | None = None) -> list[HostProcess]:
        """From /proc, one pass (see :mod:`._hostscan`)."""
        from ._hostscan import host_processes

        return host_processes(include_unlocked=include_unlocked, regions=regions, pids=pids)

    def host_unaccounted_bytes(self, processes: Sequence[HostProcess],
                               system: SystemStatus) -> int | None:
        """``Unevictable:`` less the processes' resident locked bytes, at least 0.

        That is ramfs, shared memory locked with SHM_LOCK and the like: the kernel counts
        them as unevictable, but not as ``Mlocked:`` nor in any VmLck. A process's share is
        its smaps ``Locked:`` (its regions, or smaps_rollup when they were not read); where
        the caller may not read that, at most its VmRSS and VmLck (then the figure is a
        lower bound)."""
        from ._hostscan import unaccounted_bytes

        return unaccounted_bytes(processes, system)

    # -- errors ----------------------------------------------------------------------

    def zero_limit_reason(self) -> str:
        """Linux: CAP_IPC_LOCK is what lifts the limit."""
        return "RLIMIT_MEMLOCK is 0 and the process lacks CAP_IPC_LOCK"

    def needed_total(self, op: str, requested: int | None) -> int | None:
        """mlockall is charged VmSize (every mapping), whatever is locked already."""
        if op == "mlockall":
            return requested if requested is not None else self.vm_size()
        return super().needed_total(op, requested)

    def map_count_error(self, op: str, err: int, requested: int | None) -> MemlockError | None:
        """ENOMEM with the process within :data:`MAP_COUNT_MARGIN` of vm.max_map_count."""
        counts = self.map_count() if err == errno.ENOMEM else None
        if counts is None or counts[0] + MAP_COUNT_MARGIN < counts[1]:
            return None
        used, most = counts
        return MemlockError(
            err,
            f"{op}: {os.strerror(err)}: the process has {used} mappings (lines of "
            f"/proc/self/maps), at vm.max_map_count {most}: the kernel refuses another "
            "mapping, and locking or unlocking part of a mapping splits it in two or three",
            hint=(
                f"How to fix: as root, `sysctl -w vm.max_map_count={2 * most}` (persist it "
                "in /etc/sysctl.d/; a container needs it set on the host); or use fewer "
                "mappings: pooled SecureBuffers use far fewer mappings than isolated ones "
                "(isolated=True), and locking whole mappings splits none"
            ),
            requested=requested,
        )

    def translate_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """ENOMEM: over the limit only when the kernel's limit check could have failed."""
        if err == errno.ENOMEM and op in ("mlock", "mlock2") and requested is not None:
            soft, _ = self.rlimit()
            locked = self.locked_bytes() or 0
            if soft is not None and not self.privileged() and locked + requested > soft:
                return self.limit_error(op, err, requested)
            return self.map_count_error(op, err, requested) or MemlockError(
                err, f"{op}: {os.strerror(err)}: part of the range is not mapped (or is "
                "PROT_NONE / beyond the end of a mapped file)", requested=requested,
            )
        if err == errno.ENOMEM and op == "munlock":
            crowded = self.map_count_error(op, err, requested)
            if crowded is not None:
                return crowded
        if err == errno.ENOMEM and op == "mlockall":
            soft, _ = self.rlimit()
            vm_size = self.vm_size()
            if soft is not None and not self.privileged():
                limit_exc = self.limit_error(op, err, vm_size, "RLIMIT_MEMLOCK")
                limit_exc.strerror = (
                    f"mlockall: VmSize {format_size(vm_size)} (all mappings, not just "
                    f"resident memory) exceeds RLIMIT_MEMLOCK {format_size(soft)}"
                )
                return limit_exc
        if err == errno.EPERM and op in ("mlock", "mlock2", "mlockall"):
            return self.zero_limit_error(op, err, requested)
        if err == errno.ENOSYS:
            return UnsupportedOperation(f"{op} is not implemented by this kernel")
        return super().translate_error(op, err, requested)

    # --- secrets: guarded, locked, undumpable mappings ---

    no_dump_advice = (16, "MADV_DONTDUMP")
    wipe_on_fork_advice = (18, "MADV_WIPEONFORK")  # Linux 4.14: the child sees zeros
    #: A forked child gets no mapping there (memfd_secret pages cannot be wiped on fork).
    NO_FORK_ADVICE = (10, "MADV_DONTFORK")
    _MAP_PRIVATE, _MAP_FIXED = 0x02, 0x10
    _MAP_ANONYMOUS, _MAP_FIXED_NOREPLACE = 0x20, 0x100000

    def secret_memory_errno(self) -> int:
        """0 where the kernel grants memfd_secret(2) (Linux 5.14+), else its errno."""
        libc: SecretsLibc = self.libc  # type: ignore[assignment]
        try:
            libc.memfd_secret_file(_O_CLOEXEC).close()
        except OSError as exc:
            return exc.errno or errno.ENOSYS
        return 0

    def map_secret_memory(self, base: int, size: int) -> None:
        """memfd_secret(2) pages over ``base`` (MAP_FIXED), MADV_DONTFORK.

        The kernel locks them and charges RLIMIT_MEMLOCK at mmap time: EAGAIN over the
        limit, ENOMEM at vm.max_map_count, LockPermissionError under a zero limit
        (map_error). The descriptor is closed at once; the mapping keeps the memory.
        """
        libc: SecretsLibc = self.libc  # type: ignore[assignment]
        try:
            f = libc.memfd_secret_file(_O_CLOEXEC)  # owns the descriptor (see _libc)
        except OSError as exc:
            raise UnsupportedOperation(f"memfd_secret(2): {exc.strerror}") from None
        with f:
            os.ftruncate(f.fileno(), size)
            _, err = libc.mmap(base, size, self.PROT_RW, _MAP_SHARED | self._MAP_FIXED,
                               f.fileno())
        if err:
            raise self.map_error("mmap(memfd_secret)", err, size)
        self._advise(base, size, self.NO_FORK_ADVICE)

    def wipe_inherited(self, base: int, size: int, secret_memory: bool) -> None:
        """MADV_DONTFORK left a hole where the parent's memfd_secret pages are: fill it
        with PROT_NONE (MAP_FIXED_NOREPLACE: only where nothing is mapped yet), so an
        inherited view faults instead of one day reaching a mapping the child makes there.
        Anonymous pages: the kernel zeroed them (MADV_WIPEONFORK)."""
        if secret_memory:
            libc: SecretsLibc = self.libc  # type: ignore[assignment]
            libc.mmap(
                base, size, self.PROT_NONE,
                self._MAP_PRIVATE | self._MAP_ANONYMOUS | self._MAP_FIXED_NOREPLACE)

    # --- end of secrets ---

    # -- probes ------------------------------------------------------------------------

    def secret_memory_error(self) -> MemlockError | None:
        """Map one page of memfd_secret memory and unmap it: None if that worked.

        Else the exception a SecureBuffer would raise: UnsupportedOperation where the
        kernel has no memfd_secret, LockPermissionError under a zero RLIMIT_MEMLOCK without
        CAP_IPC_LOCK, LockLimitError with no room left under the limit, and so on. The page
        is charged to RLIMIT_MEMLOCK for the moment it is mapped.
        """
        import mmap

        libc: RealLibc = self.libc  # type: ignore[assignment]
        try:
            f = libc.memfd_secret_file(_O_CLOEXEC)  # owns the descriptor
        except OSError as exc:
            return UnsupportedOperation(f"memfd_secret(2): {exc.strerror}")
        with f:
            os.ftruncate(f.fileno(), self.page_size)
            try:  # a Python mmap object owns the mapping: no interrupt can leak it
                mmap.mmap(f.fileno(), self.page_size, flags=_MAP_SHARED).close()
            except OSError as exc:
                return self.map_error("mmap(memfd_secret)", exc.errno or 0, self.page_size)
        return None

    def allocation_refusal(self, nbytes: int) -> tuple[str | None, str]:
        """Also the overcommit policy (vm.overcommit_memory) and free memory."""
        why, facts = super().allocation_refusal(nbytes)
        try:
            mode = int(_procfs.read_text("/proc/sys/vm/overcommit_memory"))
            mem = _procfs.parse_kib_fields(_procfs.read_text("/proc/meminfo"))
        except (OSError, ValueError):
            return why, facts
        fmt = format_size
        ram, swap = mem.get("MemTotal", 0), mem.get("SwapTotal", 0)
        commit_limit, committed = mem.get("CommitLimit", 0), mem.get("Committed_AS", 0)
        facts += (f", vm.overcommit_memory {mode}, MemTotal {fmt(ram)}, SwapTotal "
                  f"{fmt(swap)}, MemAvailable {fmt(mem.get('MemAvailable'))}")
        if mode == 2:
            facts += f", CommitLimit {fmt(commit_limit)}, Committed_AS {fmt(committed)}"
        if why is None and mode == 0 and nbytes > ram + swap:
            why = (f"larger than RAM + swap ({fmt(ram)} + {fmt(swap)}): with "
                   "vm.overcommit_memory 0 the kernel refuses any one allocation that big")
        elif why is None and mode == 2 and committed + nbytes > commit_limit:
            why = (f"over the commit limit: vm.overcommit_memory 2 allows {fmt(commit_limit)} "
                   f"(CommitLimit) and {fmt(committed)} is committed (Committed_AS)")
        return why, facts

    def set_thp_disabled(self, disabled: bool) -> None:
        """prctl(PR_SET_THP_DISABLE) (Linux 3.15+): no huge page is faulted in or collapsed
        (khugepaged) in this process's memory, even where madvise(MADV_HUGEPAGE) asked;
        ``False`` clears it (the system policy applies again). Inherited by fork() children
        and kept across execve(). /proc/PID/status shows it: ``THP_enabled: 0`` (5.0+).
        """
        err = self.libc.prctl(PR_SET_THP_DISABLE, 1 if disabled else 0)
        if err in (errno.EINVAL, errno.ENOSYS):
            raise UnsupportedOperation("this kernel has no prctl(PR_SET_THP_DISABLE)")
        if err:
            raise MemlockError(err, f"prctl(PR_SET_THP_DISABLE): {os.strerror(err)}")


def status_from_texts(pid: int, smaps_text: str, status_text: str) -> ProcessStatus:
    """A ProcessStatus from the texts of /proc/PID/smaps and /proc/PID/status."""
    from .._records import ProcessStatus
    from ._hostscan import locked_regions

    return ProcessStatus(pid, _procfs.parse_kib_fields(status_text).get("VmLck"),
                         locked_regions(smaps_text))


def system_status_from_meminfo(meminfo_text: str, max_map_count: int | None) -> SystemStatus:
    """A SystemStatus from the text of /proc/meminfo."""
    from .._records import SystemStatus

    f = _procfs.parse_kib_fields(meminfo_text)
    return SystemStatus(
        mlocked_bytes=f.get("Mlocked"),
        unevictable_bytes=f.get("Unevictable"),
        total_bytes=f.get("MemTotal"),
        available_bytes=f.get("MemAvailable"),
        max_map_count=max_map_count,
    )
