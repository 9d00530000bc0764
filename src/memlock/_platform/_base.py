"""What every OS backend provides, and the errno translation they share.

A backend turns raw libc results (0 or errno) into memlock's exceptions, and answers the
questions only the OS can: limits, privilege, what is locked. One errno means different
things on different systems, so each backend refines :meth:`Backend.translate_error`;
:meth:`Backend.lock_error` and :meth:`Backend.map_error` apply the rules all OSes share
first (a zero RLIMIT_MEMLOCK is a permission problem, whatever errno says it).
"""

from __future__ import annotations

import errno
import os
import resource
import sys

from .. import _hints
from ..errors import LockLimitError, LockPermissionError, MemlockError, UnsupportedOperation

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:  # records load on first use: dataclasses costs ~20 ms at import
    import ctypes
    import mmap
    from collections.abc import Callable, Sequence
    from typing import ClassVar

    from .._records import (
        HostProcess,
        Limits,
        ProcessContext,
        ProcessMapping,
        ProcessStatus,
        SystemStatus,
    )
    from ._libc import CachestatCount, Libc, SecretsLibc

__all__ = ["Backend"]

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def _unsupported_call(addr: int, length: int) -> int:
    return errno.ENOSYS


class Backend:
    """Base class of the per-OS backends. Subclasses set the class attributes."""

    name: ClassVar[str] = "generic"
    #: C constant names and values this OS defines (MCL_CURRENT, ...).
    constants: ClassVar[dict[str, int]] = {}
    #: Whether mlock needs a page-aligned address (Solaris: EINVAL otherwise).
    requires_alignment: ClassVar[bool] = False
    #: mlock2(MLOCK_ONFAULT) / MCL_ONFAULT exist.
    supports_onfault: ClassVar[bool] = False
    #: mlockall/munlockall are implemented (not ENOSYS).
    supports_lock_all: ClassVar[bool] = True
    #: The stack below the stack pointer can be found and prefaulted (lock_process).
    supports_prefault_stack: ClassVar[bool] = False
    #: getrusage can count one thread's page faults (RUSAGE_THREAD).
    per_thread_faults: ClassVar[bool] = False
    #: Transparent huge pages can be turned off for this process (set_thp_disabled).
    supports_thp_disable: ClassVar[bool] = False
    #: (CLOCK_MONOTONIC, TIMER_ABSTIME) of clock_nanosleep(2), where the OS has it.
    monotonic_abstime: ClassVar[tuple[int, int] | None] = None

    #: The C library (see _libc.py). The process's own is bound on first use, so that
    #: ``import memlock`` (and ``memlock status``) does not load ctypes: 3-5 ms.
    libc: Libc

    def __init__(
        self,
        libc: Libc | None = None,
        page_size: int | None = None,
        *,
        rlimit: Callable[[], tuple[int | None, int | None]] | None = None,
        euid: Callable[[], int] | None = None,
    ) -> None:
        if libc is not None:
            self.libc = libc
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")
        #: Injected facts (tests of backends for other OSes run on a simulated libc).
        self._rlimit_source = rlimit
        self._euid = euid or os.geteuid

    if not TYPE_CHECKING:  # hidden from mypy, which would accept any attribute otherwise

        def __getattr__(self, name: str) -> Libc:
            """Bind the process's C library the first time ``libc`` is read.

            Afterwards it is a plain instance attribute: this is never called for it again.
            """
            if name != "libc":
                raise AttributeError(f"{type(self).__name__!r} object has no attribute "
                                     f"{name!r}")
            from ._libc import real_libc

            self.libc = libc = real_libc()
            return libc

    # -- raw calls, translated -------------------------------------------------------

    def mlock(self, addr: int, length: int) -> None:
        """mlock(2); raises a MemlockError subclass on failure."""
        err = self.libc.mlock(addr, length)
        if err:
            raise self.lock_error("mlock", err, length)

    def munlock(self, addr: int, length: int) -> None:
        """munlock(2)."""
        err = self.libc.munlock(addr, length)
        if err:
            raise self.lock_error("munlock", err, length)

    def mlock_onfault(self, addr: int, length: int) -> None:
        """Lock pages as they fault in (Linux mlock2 MLOCK_ONFAULT)."""
        raise UnsupportedOperation(f"lock on fault is not available on {self.name}")

    def mlock2(self, addr: int, length: int, flags: int) -> None:
        """mlock2(2) (Linux only)."""
        raise UnsupportedOperation(f"mlock2 is not available on {self.name}")

    def mlockall(self, flags: int) -> None:
        """mlockall(2)."""
        err = self.libc.mlockall(flags)
        if err:
            raise self.lock_error("mlockall", err, None)

    def explain_range(self, start: int, end: int) -> str | None:
        """What in [start, end) the kernel cannot lock, where the OS tells; else None."""
        return None

    def mapped_ranges(self) -> list[tuple[int, int]] | None:
        """The process's mappings, sorted (start, end); None where the OS cannot tell."""
        return None

    def copy_on_write_files(self, start: int, end: int) -> list[tuple[int, int, str]]:
        """(start, end, file) of the private writable file mappings in [start, end).

        Locking such memory copies its pages (mlock breaks copy-on-write). Empty where the
        OS cannot tell.
        """
        return []

    def populate_plan(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """How to prefault [start, end): (start, end, advice) pieces; [] where unsupported."""
        return []

    def populate(self, start: int, end: int, advice: int) -> None:
        """Prefault [start, end) with ``advice`` from :meth:`populate_plan`; errors ignored."""

    #: The :meth:`populate_plan` advice that reads pages in (file pages: the kernel's
    #: readahead serves each thread best as one sequential stream); None where none does.
    populate_read_advice: int | None = None

    def munlockall(self) -> None:
        """munlockall(2)."""
        err = self.libc.munlockall()
        if err:
            raise self.lock_error("munlockall", err, None)

    def prefault_locked(self, addr: int, length: int) -> None:
        """Fault in [addr, addr+length) of memory mlockall already covers (a stack's pages).

        Writes no data (safe over live frames). Where the OS has no populate call, mlock
        does it (POSIX: mlock makes the pages resident).
        """
        self.mlock(addr, length)

    def thread_stack_texts(self) -> tuple[str, str]:
        """(this thread's /proc/PID/syscall text, the process's /proc/PID/maps text).

        Raises:
            UnsupportedOperation: Where the OS has no such files (all but Linux), or they
                cannot be read.
        """
        raise UnsupportedOperation(f"prefault_stack is not available on {self.name}")

    def grow_stack_to(self, addr: int) -> None:
        """Read the byte at ``addr``: a read fault that grows a stack mapping down to it."""
        self.libc.peek(addr)

    # -- files and the page cache --------------------------------------------------------

    def file_populator(self) -> Callable[[int, int], int]:
        """``populate(addr, length)``: fault in mapped file pages, 0 or errno, bound once.

        Never SIGBUS: past EOF it answers EFAULT. ENOSYS where the OS cannot (callers
        read the file instead); EINVAL from a kernel that predates the call.
        """
        return _unsupported_call

    def cached_pages(self, fd: int, offset: int, length: int) -> tuple[int, int]:
        """Pages of a file range in the page cache without mapping it: ``(pages, 0)`` or
        ``(-1, errno)``; ENOSYS where the OS has no such call (use :meth:`mincore`).
        ``length`` 0 means to EOF. EPERM: the kernel hides this file's page cache."""
        return -1, errno.ENOSYS

    def cached_pages_counter(self) -> CachestatCount | None:
        """``count(fd)``: whole-file cached pages (or -1), for scans of big trees; None
        where the OS has no call for it. One thread per counter."""
        return None

    def mincore(self, addr: int, length: int, out: bytearray) -> None:
        """mincore(2) of mapped, page-aligned ``addr`` into ``out`` (one byte a page;
        bit 0 set: resident).

        Raises:
            OSError: The call failed.
        """
        err = self.libc.mincore_into(addr, length, out)
        if err:
            raise OSError(err, f"mincore: {os.strerror(err)}")

    def page_cache_visible(self, fd: int) -> bool:
        """Whether mincore reports the page cache of the file on ``fd`` (not all ones)."""
        return True

    def pseudo_file_systems(self) -> dict[int, str]:
        """``st_dev`` -> type of each pseudo file system mounted here (procfs, sysfs ...).

        Their files are made up by the kernel when read: nothing to keep in RAM. {} where
        the OS cannot tell.
        """
        return {}

    def evict(self, fd: int, offset: int, length: int) -> None:
        """Drop clean, unlocked cached pages of a file range (POSIX_FADV_DONTNEED)."""
        if sys.platform == "darwin":  # no posix_fadvise (DarwinBackend.evict says so)
            raise UnsupportedOperation(f"evict needs posix_fadvise, which {self.name} lacks")
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)

    def prefetch(self, fd: int, offset: int, length: int) -> None:
        """Start reading exactly a file range into the page cache (POSIX_FADV_WILLNEED).

        Returns once the reads are queued; no read-ahead past the range. Asked for in
        2 MiB steps: Linux reads at most the read-ahead window (read_ahead_kb) of each
        call.

        Availability: Linux, FreeBSD, illumos (posix_fadvise); a no-op on macOS.
        """
        if sys.platform != "darwin":
            step = 2 * 2**20
            for start in range(offset, offset + length, step):
                os.posix_fadvise(fd, start, min(step, offset + length - start),
                                 os.POSIX_FADV_WILLNEED)

    # -- processes -----------------------------------------------------------------------

    def uses_glibc(self) -> bool:
        """The C library is glibc (whose malloc :meth:`tune_malloc` tunes)."""
        return False

    def tune_malloc(self) -> None:
        """Keep glibc's malloc from returning memory: no mmap'd blocks, no heap trimming.

        Does nothing with another C library.

        Raises:
            MemlockError: mallopt(3) refused.
        """
        if not self.uses_glibc():
            return
        for name, param, value in (("M_MMAP_MAX", M_MMAP_MAX, 0),
                                   ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, -1)):
            if not self.libc.mallopt(param, value):
                raise MemlockError(errno.EINVAL, f"mallopt({name}, {value}) failed")

    def die_with_parent(self) -> None:
        """Have the kernel kill this process when its parent dies, where the OS can."""

    def own_cgroups(self) -> str:
        """This process's control groups in /proc/PID/cgroup's format; "" where none."""
        return ""

    def map_count(self) -> tuple[int, int] | None:
        """(mappings of this process, the most the OS allows); None where it cannot tell."""
        return None

    def open_descriptors(self) -> int | None:
        """How many descriptors this process has open now; None where the OS cannot tell."""
        try:
            return len(os.listdir("/dev/fd")) - 1  # less the one listdir itself opened
        except OSError:
            return None

    def cgroup_memory_headroom(self) -> tuple[int, int, str] | None:
        """(limit, usage, cgroup) of the tightest memory cgroup above this process; None
        where no limit applies or the OS has no cgroups."""
        return None

    def doctor_probes(self) -> list[tuple[str, bool, str]]:
        """Kernel features worth a line of ``memlock doctor``: (name, works, what)."""
        return []

    # -- facts -------------------------------------------------------------------------

    def faults_rusage(self) -> tuple[int, bool]:
        """``(who, per_thread)``: the getrusage(2) target that counts page faults, the
        calling thread's where the OS can (RUSAGE_THREAD), else the whole process's."""
        if sys.platform == "linux" and self.per_thread_faults:
            return resource.RUSAGE_THREAD, True
        return resource.RUSAGE_SELF, False

    def rlimit(self) -> tuple[int | None, int | None]:
        """Soft and hard RLIMIT_MEMLOCK in bytes (None = unlimited)."""
        if self._rlimit_source is not None:
            return self._rlimit_source()
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

        def conv(v: int) -> int | None:
            return None if v == resource.RLIM_INFINITY else v

        return conv(soft), conv(hard)

    def privileged(self) -> bool:
        """The process may lock beyond RLIMIT_MEMLOCK (root on the BSDs)."""
        return self._euid() == 0

    def locked_bytes(self) -> int | None:
        """Bytes this process has locked, where the OS tells."""
        return None

    def limits(self) -> Limits:
        """The current limits and usage."""
        from .._records import Limits

        soft, hard = self.rlimit()
        privileged = self.privileged()
        locked = self.locked_bytes()
        available: int | None = None
        if soft is not None and not privileged:
            available = max(0, soft - (locked or 0))
        return Limits(soft, hard, locked, available, privileged)

    def process_status(self, pid: int) -> ProcessStatus:
        """What process ``pid`` has locked."""
        raise UnsupportedOperation(f"per-process lock status is not available on {self.name}")

    def process_locked_bytes(self, pid: int) -> int | None:
        """What process ``pid`` has locked (VmLck: any user may read it); None when it has
        no memory of its own (a kernel thread, a zombie).

        Raises:
            ProcessLookupError: No process ``pid`` (or it is a thread of another).
            PermissionError: The caller may not read its status (hidepid).
            UnsupportedOperation: The OS does not tell (all but Linux).
        """
        raise UnsupportedOperation(f"another process's locked memory is not available on "
                                   f"{self.name}")

    def process_mappings(self, pid: int, *, dumps: bool = False) -> tuple[ProcessMapping, ...]:
        """Every mapping of process ``pid``, in address order, with what the kernel does with
        it: locked, swapped, kept out of core dumps (``dumps``: judge whether a core dump
        would hold it, by the process's own settings), never locked whatever is asked.

        Raises:
            ProcessLookupError: No process ``pid``.
            PermissionError: The caller may not see that process's mappings.
            UnsupportedOperation: The OS does not tell (all but Linux).
        """
        raise UnsupportedOperation(f"another process's mappings are not available on "
                                   f"{self.name}")

    def process_context(self, pid: int) -> ProcessContext:
        """What bears on whether process ``pid`` may lock memory: its limits, privilege,
        address space, memory cgroup and environment (``memlock doctor --pid``).

        Raises:
            ProcessLookupError: No process ``pid``.
            PermissionError: The caller may not read its status.
            UnsupportedOperation: The OS does not tell (all but Linux).
        """
        raise UnsupportedOperation(f"another process's limits are not available on "
                                   f"{self.name}")

    def host_processes(self, *, include_unlocked: bool = False, regions: bool = True,
                       pids: Sequence[int] | None = None) -> list[HostProcess]:
        """Every process of the host that has memory locked, in one pass.

        Args:
            include_unlocked: Also the processes with nothing locked (never kernel threads).
            regions: Read each locked process's mappings (``HostProcess.regions``; None
                where the caller may not read them, or when False).
            pids: Only these processes, in this order, whether or not they have anything
                locked (a kernel thread too).

        Returns:
            The processes, the most locked first (when ``pids`` is None). Kernel threads
            and processes that end during the scan are left out silently.

        Raises:
            ProcessLookupError: A process of ``pids`` does not exist.
            PermissionError: A process of ``pids`` is hidden from the caller.
            ValueError: ``pids`` holds something that is not a process id.
            UnsupportedOperation: On an OS other than Linux.
        """
        raise UnsupportedOperation(f"listing the host's processes is not available on "
                                   f"{self.name}")

    def host_unaccounted_bytes(self, processes: Sequence[HostProcess],
                               system: SystemStatus) -> int | None:
        """Locked memory of the host that no process's mappings account for (ramfs, shared
        memory locked with SHM_LOCK, ...), from a :meth:`host_processes` scan of every
        process with locked memory and :meth:`system_status`; None where unknown.

        Raises:
            UnsupportedOperation: On an OS other than Linux.
        """
        raise UnsupportedOperation(f"host locked-memory accounting is not available on "
                                   f"{self.name}")

    def system_status(self) -> SystemStatus:
        """Machine-wide locked/wired memory."""
        from .._records import SystemStatus

        return SystemStatus()

    # -- errors and hints --------------------------------------------------------------
    #
    # lock_error() and map_error() are the only ways a failed call becomes an exception.
    # Both first apply the one rule every OS shares (a zero RLIMIT_MEMLOCK that binds this
    # process is a permission problem, whatever errno the call gave), then the OS's own
    # translation (translate_error, refined per backend).

    def rlimit_binds(self) -> bool:
        """RLIMIT_MEMLOCK applies to this process (no privilege lifts it)."""
        return not self.privileged()

    def may_raise_hard_limit(self) -> bool:
        """The process may raise its hard RLIMIT_MEMLOCK (root on Unix)."""
        return self._euid() == 0

    def locking_forbidden(self) -> bool:
        """RLIMIT_MEMLOCK is 0 and binds this process: no lock of any size can succeed."""
        return self.rlimit()[0] == 0 and self.rlimit_binds()

    def zero_limit_reason(self) -> str:
        """Why a zero RLIMIT_MEMLOCK refuses this process (for messages)."""
        return "RLIMIT_MEMLOCK is 0 and the process has no privilege that lifts it"

    def needed_total(self, op: str, requested: int | None) -> int | None:
        """Bytes the limit must allow for ``op`` of ``requested`` bytes to succeed."""
        return None if requested is None else requested + (self.locked_bytes() or 0)

    def permission_hint(self, needed_total: int | None = None) -> str:
        """How to get the privilege (or any allowance) to lock ``needed_total`` bytes."""
        return self.limit_hint(needed_total)

    def hard_limit_too_low(self, needed_total: int | None,
                           process: ProcessContext | None = None) -> int | None:
        """The hard RLIMIT_MEMLOCK when it is below ``needed_total`` and this process (or
        ``process``) cannot raise it (so ``ulimit -l`` would fail); else None."""
        hard = self.rlimit()[1] if process is None else process.limits.hard
        if hard is None or (needed_total is not None and needed_total <= hard):
            return None
        may_raise = (self.may_raise_hard_limit() if process is None
                     else process.may_raise_hard_limit)
        return None if may_raise else hard

    def process_limit_hint(self, needed_total: int | None, process: ProcessContext) -> str:
        """:meth:`limit_hint` for another process: by its hard limit and privilege, for
        where it runs (naming its unit, container or pod)."""
        return _hints.limit_hint(needed_total,
                                 low_hard_limit=self.hard_limit_too_low(needed_total, process),
                                 place=process.environment)

    def limit_hint(self, needed_total: int | None, environment: str | None = None) -> str:
        """How to raise the limit to ``needed_total`` bytes on this OS (None: unlimited)."""
        return _hints.limit_hint(needed_total, environment,
                                 low_hard_limit=self.hard_limit_too_low(needed_total))

    def limit_error(
        self, op: str, err: int, requested: int | None, what: str = "RLIMIT_MEMLOCK"
    ) -> LockLimitError:
        """A LockLimitError with the numbers and the hint."""
        soft, _hard = self.rlimit()
        locked = self.locked_bytes()
        amount = "that" if requested is None else _hints.format_size(requested)
        msg = (
            f"{op}: cannot lock {amount}"
            f": over {what} (limit {_hints.format_size(soft)}, already locked "
            f"{_hints.format_size(locked) if locked is not None else 'unknown'})"
        )
        return LockLimitError(
            err, msg, hint=self.limit_hint(self.needed_total(op, requested)),
            requested=requested, limit=soft, locked=locked,
        )

    def permission_error(
        self, op: str, err: int, requested: int | None, why: str, hint: str
    ) -> LockPermissionError:
        """A LockPermissionError (errno EPERM) saying ``why``; names ``err`` if it differs."""
        answered = "" if err == errno.EPERM else f" (the kernel answered {_errno_name(err)})"
        return LockPermissionError(
            errno.EPERM, f"{op}: {os.strerror(errno.EPERM)}: {why}{answered}",
            hint=hint, requested=requested, limit=self.rlimit()[0], locked=self.locked_bytes(),
        )

    def zero_limit_error(self, op: str, err: int, requested: int | None) -> LockPermissionError:
        """The LockPermissionError of a zero RLIMIT_MEMLOCK, with the hint to raise it."""
        return self.permission_error(op, err, requested, self.zero_limit_reason(),
                                     self.limit_hint(self.needed_total(op, requested)))

    def _zero_limit_refuses(self, op: str, err: int) -> bool:
        """``err`` from ``op`` is how this OS refuses a lock under a zero RLIMIT_MEMLOCK.

        EPERM is left to :meth:`translate_error`: its cause differs per OS.
        """
        return (err in (errno.EAGAIN, errno.ENOMEM) and not op.startswith("munlock")
                and self.locking_forbidden())

    def lock_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """The exception for ``err`` from the lock call ``op`` (mlock, mlockall, ...)."""
        if self._zero_limit_refuses(op, err):
            return self.zero_limit_error(op, err, requested)
        return self.translate_error(op, err, requested)

    def map_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """The exception for ``err`` from mapping memory that must stay locked.

        For a failed mmap/mprotect/madvise of secret memory: ``op`` names the call (e.g.
        ``"mmap(memfd_secret)"``, ``"mprotect"``), ``requested`` is its length. In order:
        a zero RLIMIT_MEMLOCK that binds -> :class:`LockPermissionError`; the process at
        vm.max_map_count -> :class:`MemlockError` (ENOMEM) naming both counts, with the
        sysctl in ``hint``; EAGAIN (how memfd_secret and MCL_FUTURE refuse going over
        RLIMIT_MEMLOCK) -> :class:`LockLimitError`; else :class:`MemlockError` naming the
        call. An ``mlock*`` op is translated as :meth:`lock_error` does.
        """
        if op.startswith("mlock"):
            return self.lock_error(op, err, requested)
        if self._zero_limit_refuses(op, err):
            return self.zero_limit_error(op, err, requested)
        crowded = self.map_count_error(op, err, requested)
        if crowded is not None:
            return crowded
        if err == errno.EAGAIN and self.rlimit_binds():
            return self.limit_error(op, err, requested)
        return MemlockError(err, f"{op}: {os.strerror(err)}", requested=requested)

    def map_count_error(self, op: str, err: int, requested: int | None) -> MemlockError | None:
        """A MemlockError if ``err`` is the OS refusing one mapping too many; else None."""
        return None

    def translate_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """Translate ``err`` from ``op`` into the right exception (POSIX defaults)."""
        text = os.strerror(err)
        if err == errno.EPERM:
            return self.permission_error(op, err, requested, "this process may not lock memory",
                                         self.permission_hint(self.needed_total(op, requested)))
        if err == errno.ENOSYS:
            return UnsupportedOperation(f"{op} is not implemented on {self.name}")
        if err == errno.EAGAIN:
            return self.limit_error(op, err, requested, "a system limit on locked memory")
        return MemlockError(err, f"{op}: {text}", requested=requested)

    # --- secrets: guarded, locked, undumpable mappings ---
    #
    # A guarded mapping is one reservation (an mmap object owns it): a PROT_NONE page,
    # the data pages, a PROT_NONE page. The secrets package (memlock._secrets) makes and
    # fills them only through these operations; each raises the exception map_error()
    # gives for a refusal, so every OS translates its errno in one place.

    #: mmap(2) protections: the same values on every OS memlock knows.
    PROT_NONE: ClassVar[int] = 0
    PROT_READ: ClassVar[int] = 1
    PROT_RW: ClassVar[int] = 3
    #: madvise advice (value, name) keeping pages out of core dumps (Linux MADV_DONTDUMP,
    #: FreeBSD MADV_NOCORE); None where the OS has none.
    no_dump_advice: ClassVar[tuple[int, str] | None] = None
    #: madvise advice (value, name) handing a forked child zero pages (Linux
    #: MADV_WIPEONFORK); None: memlock zeroes the child's copies at fork (wipe_inherited).
    wipe_on_fork_advice: ClassVar[tuple[int, str] | None] = None

    def secret_calls(self) -> tuple[Callable[[int, int, int], int], Callable[[int, int], None],
                                    Callable[[int, int], ctypes.Array[ctypes.c_ubyte]]]:
        """The hot calls, to bind once: ``mprotect`` (returns 0 or errno), ``wipe`` (a
        memset no compiler elides) and ``exporter`` (a ctypes array over an address)."""
        libc: SecretsLibc = self.libc  # type: ignore[assignment]
        return libc.mprotect, libc.wipe, libc.exporter

    def reserve_guarded(self, total: int) -> tuple[mmap.mmap, int]:
        """A new reservation of ``total`` bytes, PROT_NONE and undumpable: (owner, address).

        The mmap object owns it from the moment the kernel made it: if anything after
        that fails (or is interrupted), dropping the object unmaps it.
        """
        libc: SecretsLibc = self.libc  # type: ignore[assignment]
        try:
            region, addr = libc.reserve(total)
        except OSError as exc:
            raise self.map_error("mmap", exc.errno or errno.ENOMEM, total) from None
        err = libc.mprotect(addr, total, self.PROT_NONE)
        if err:
            raise self.map_error("mprotect", err, total)
        self._advise(addr, total, self.no_dump_advice)
        return region, addr

    def release_guarded(self, region: mmap.mmap) -> None:
        """Unmap a reservation (idempotent; its data must be wiped and unlocked)."""
        libc: SecretsLibc = self.libc  # type: ignore[assignment]
        libc.release(region)

    def open_anonymous(self, base: int, size: int) -> None:
        """Make the data pages of a reservation readable and writable, kept from children."""
        libc: SecretsLibc = self.libc  # type: ignore[assignment]
        err = libc.mprotect(base, size, self.PROT_RW)
        if err:
            raise self.map_error("mprotect", err, size)
        self._advise(base, size, self.wipe_on_fork_advice)

    def _advise(self, addr: int, length: int, advice: tuple[int, str] | None) -> None:
        """madvise(2) with ``advice`` (value, name), if the OS has it; raises a refusal."""
        if advice is not None:
            libc: SecretsLibc = self.libc  # type: ignore[assignment]
            err = libc.madvise(addr, length, advice[0])
            if err:
                raise self.map_error(f"madvise({advice[1]})", err, length)

    def secret_memory_errno(self) -> int:
        """0 where memfd_secret(2) memory can be made here, else the errno of the refusal."""
        return errno.ENOSYS

    def map_secret_memory(self, base: int, size: int) -> None:
        """Map ``size`` bytes of memfd_secret memory over the data pages at ``base``."""
        raise UnsupportedOperation(f"memfd_secret is not available on {self.name}")

    def protect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2) of a secret's mapping; raises the MemlockError of a refusal."""
        libc: SecretsLibc = self.libc  # type: ignore[assignment]
        err = libc.mprotect(addr, length, prot)
        if err:
            raise self.map_count_error("mprotect", err, length) or MemlockError(
                err, f"mprotect: {os.strerror(err)}", requested=length)

    def wipe_inherited(self, base: int, size: int, secret_memory: bool) -> None:
        """In a forked child: make the parent's secrets at ``base`` unreadable here.

        Where the kernel does not (no :attr:`wipe_on_fork_advice`), zero this process's
        copy of anonymous pages (copy-on-write: the parent keeps its own).
        """
        if self.wipe_on_fork_advice is None and not secret_memory:
            libc: SecretsLibc = self.libc  # type: ignore[assignment]
            if libc.mprotect(base, size, self.PROT_RW) == 0:
                libc.wipe(base, size)

    # --- end of secrets ---

    # -- probes ------------------------------------------------------------------------

    def secret_memory_error(self) -> MemlockError | None:
        """Why no memfd_secret page can be mapped now; None when one can (Linux only)."""
        return UnsupportedOperation(f"memfd_secret is not available on {self.name}")

    def process_memory(self) -> dict[str, int]:
        """This process's memory figures in bytes, by the OS's names (Linux: VmSize, VmLck,
        VmRSS ... of /proc/self/status); empty where the OS has no such report."""
        return {}

    def vm_usage(self) -> tuple[int | None, int | None]:
        """(VmSize, VmData) of this process in bytes, where the OS tells."""
        return None, None

    def allocation_refusal(self, nbytes: int) -> tuple[str | None, str]:
        """Whether the kernel must refuse ``nbytes`` more private memory, and the facts.

        Returns (why it must fail, or None where nothing known forbids it; the numbers
        that bear on it: limits, usage, free memory).
        """
        vm_size, vm_data = self.vm_usage()
        facts, why = [], None
        fmt = _hints.format_size
        for name, ulimit, used in (("RLIMIT_AS", "-v", vm_size), ("RLIMIT_DATA", "-d", vm_data)):
            limit = getattr(resource, name, None)
            if limit is None:
                continue
            soft = resource.getrlimit(limit)[0]
            if soft == resource.RLIM_INFINITY:
                facts.append(f"{name} unlimited")
                continue
            usage = "" if used is None else f", {fmt(used)} in use"
            facts.append(f"{name} {fmt(soft)}{usage}")
            if why is None and (used or 0) + nbytes > soft:
                why = f"over {name} (`ulimit {ulimit}`): {fmt(soft)}{usage}"
        return why, ", ".join(facts)

    # -- real-time process settings (lock_process) -----------------------------------------

    def set_thp_disabled(self, disabled: bool) -> None:
        """Turn transparent huge pages off (or back to the system policy) for this process.

        Availability: Linux (prctl PR_SET_THP_DISABLE); elsewhere UnsupportedOperation.
        """
        raise UnsupportedOperation(f"transparent huge pages cannot be disabled on {self.name}")

    def set_malloc_arena_max(self, count: int) -> None:
        """glibc: let malloc make at most ``count`` arenas (mallopt M_ARENA_MAX).

        Threads that need an arena past that share the existing ones (with 1: the main
        arena, the brk heap). Arenas made before stay. Does nothing with another C library
        (musl has one heap; FreeBSD's jemalloc reads its arena count at start-up only).

        Availability: glibc (Linux); elsewhere a documented no-op.

        Raises:
            MemlockError: mallopt(3) refused.
        """
        if self.uses_glibc() and not self.libc.mallopt(M_ARENA_MAX, count):
            raise MemlockError(errno.EINVAL, f"mallopt(M_ARENA_MAX, {count}) failed")

    def default_thread_stack(self) -> int | None:
        """Bytes of stack a new thread gets by default (the C library's default attributes).

        Availability: glibc (pthread_getattr_default_np); None where the C library cannot
        tell.
        """
        return self.libc.default_thread_stack_size() or None

    def new_mapping_refused(self, nbytes: int) -> int:
        """The errno with which the kernel refuses a new ``nbytes`` mapping now, 0 if it
        maps it (then it is unmapped at once).

        An inaccessible private anonymous mapping, as a thread stack starts: no memory is
        committed or touched, so under mlockall(MCL_FUTURE) only the lock limit can refuse
        it (EAGAIN on Linux).
        """
        import mmap

        try:
            probe = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=0)
        except OSError as exc:
            return exc.errno or errno.ENOMEM
        probe.close()
        return 0

    # -- time ----------------------------------------------------------------------------

    def deadline_sleeper(self) -> tuple[Callable[[int], object], str]:
        """``(sleep_until, how)``: sleep until an absolute deadline of ``time.monotonic_ns()``.

        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) where the OS has it (as cyclictest
        does): a late wake-up does not shift the next deadline. Elsewhere a relative
        ``time.sleep`` of what is left, which ``how`` says.

        Availability: Linux (verified), FreeBSD and illumos (clock_nanosleep, simulated
        only); macOS: the relative sleep.

        Raises:
            MemlockError: clock_nanosleep refused (from ``sleep_until``).
        """
        clock = self.monotonic_abstime
        call = None if clock is None else self.libc.deadline_sleep_call(*clock)
        if call is None:
            import time

            monotonic_ns, sleep = time.monotonic_ns, time.sleep

            def relative(deadline_ns: int) -> None:
                left = deadline_ns - monotonic_ns()
                if left > 0:
                    sleep(left / 1e9)

            return relative, "time.sleep (relative: no clock_nanosleep here)"
        raw = call

        def absolute(deadline_ns: int) -> None:
            err = raw(deadline_ns)
            if err:
                raise MemlockError(err, f"clock_nanosleep: {os.strerror(err)}")

        return absolute, "clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)"


def _errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))
