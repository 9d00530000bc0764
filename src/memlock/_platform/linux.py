"""Linux backend: mlock/mlock2/mlockall, /proc accounting, CAP_IPC_LOCK.

Kernel facts this relies on are in DESIGN.md §3: ENOMEM means either "over
RLIMIT_MEMLOCK" or "not mapped"; the limit is checked first and only when the process
lacks CAP_IPC_LOCK, so the two are told apart by redoing the kernel's arithmetic.
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
    from typing import ClassVar

    from .._records import ProcessStatus, SystemStatus

__all__ = ["LinuxBackend"]

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
MLOCK_ONFAULT = 1
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
CAP_IPC_LOCK = 14

# mlock2 syscall numbers where glibc lacks the wrapper (< 2.27).
_MLOCK2_NR = {"x86_64": 325, "aarch64": 284, "i686": 376, "armv7l": 390, "ppc64le": 378,
              "s390x": 374, "riscv64": 284}


def capability_effective(status_text: str, cap: int) -> bool:
    """Whether ``cap`` is in the CapEff mask of a /proc/PID/status text."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


class LinuxBackend(Backend):
    """Linux, verified on a real kernel."""

    name = "linux"
    constants: ClassVar[dict[str, int]] = {
        "MCL_CURRENT": MCL_CURRENT,
        "MCL_FUTURE": MCL_FUTURE,
        "MCL_ONFAULT": MCL_ONFAULT,
        "MLOCK_ONFAULT": MLOCK_ONFAULT,
    }
    supports_onfault = True

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
            return _procfs.parse_maps(_procfs.read_text("/proc/self/maps"))
        except OSError:
            return None

    def explain_range(self, start: int, end: int) -> str | None:
        """Holes, PROT_NONE pages and memfd_secret memory in [start, end), from /proc/self/maps."""
        maps = self._maps()
        if maps is None:
            return None
        reasons, pos = [], start
        for lo, hi, perms, path in maps:
            if hi <= start or lo >= end:
                continue
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

    def populate_plan(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """MADV_POPULATE_WRITE where mlock would write-fault (private writable), else READ.

        Mirrors the kernel's own choice in mlock (populate_vma_page_range), so populating
        never dirties a shared file page or breaks copy-on-write where mlock would not.
        """
        return [
            (max(lo, start), min(hi, end),
             MADV_POPULATE_WRITE if perms[1] == "w" and perms[3] == "p" else MADV_POPULATE_READ)
            for lo, hi, perms, _ in self._maps() or ()
            if hi > start and lo < end
        ]

    def populate(self, start: int, end: int, advice: int) -> None:
        """madvise(MADV_POPULATE_*) (Linux 5.14+): faults in without SIGBUS; errors ignored."""
        self.libc.madvise(start, end - start, advice)  # type: ignore[attr-defined]

    # -- facts ---------------------------------------------------------------------

    def privileged(self) -> bool:
        """CAP_IPC_LOCK in the effective set (not uid 0: root without it is limited)."""
        try:
            return capability_effective(_procfs.read_text("/proc/self/status"), CAP_IPC_LOCK)
        except OSError:
            return False

    def locked_bytes(self) -> int | None:
        """VmLck of this process."""
        return _procfs.status_fields().get("VmLck")

    def vm_size(self) -> int | None:
        """VmSize of this process: what mlockall(MCL_CURRENT) is charged."""
        return _procfs.status_fields().get("VmSize")

    def process_status(self, pid: int) -> ProcessStatus:
        """Locked mappings of ``pid`` from its smaps, VmLck from its status."""
        try:
            smaps = _procfs.read_text(f"/proc/{pid}/smaps")
            status = _procfs.read_text(f"/proc/{pid}/status")
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
        return status_from_texts(pid, smaps, status)

    def system_status(self) -> SystemStatus:
        """/proc/meminfo and vm.max_map_count."""
        try:
            meminfo = _procfs.read_text("/proc/meminfo")
        except OSError:
            meminfo = ""
        try:
            max_map: int | None = int(_procfs.read_text("/proc/sys/vm/max_map_count"))
        except (OSError, ValueError):
            max_map = None
        return system_status_from_meminfo(meminfo, max_map)

    # -- errors ----------------------------------------------------------------------

    def lock_error(self, op: str, err: int, requested: int | None) -> MemlockError:
        """ENOMEM is a limit error only when the kernel's limit check could have failed."""
        if err == errno.ENOMEM and op in ("mlock", "mlock2") and requested is not None:
            soft, _ = self.rlimit()
            locked = self.locked_bytes() or 0
            if soft is not None and not self.privileged() and locked + requested > soft:
                return self.limit_error(op, err, requested)
            return MemlockError(
                err, f"{op}: {os.strerror(err)}: part of the range is not mapped (or is "
                "PROT_NONE / beyond the end of a mapped file)", requested=requested,
            )
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
            perm_exc = super().lock_error(op, err, requested)
            perm_exc.strerror = (
                f"{op}: {os.strerror(err)}: RLIMIT_MEMLOCK is 0 and the process lacks "
                "CAP_IPC_LOCK"
            )
            return perm_exc
        if err == errno.ENOSYS:
            return UnsupportedOperation(f"{op} is not implemented by this kernel")
        return super().lock_error(op, err, requested)


def status_from_texts(pid: int, smaps_text: str, status_text: str) -> ProcessStatus:
    """A ProcessStatus from the texts of /proc/PID/smaps and /proc/PID/status."""
    from .._records import LockedRegion, ProcessStatus

    regions = tuple(
        LockedRegion(
            start=e.start,
            end=e.end,
            path=e.path,
            size=e.end - e.start,
            locked_bytes=e.fields.get("Locked"),
            onfault=e.onfault,
        )
        for e in _procfs.parse_smaps(smaps_text)
        if e.locked
    )
    return ProcessStatus(pid, _procfs.parse_kib_fields(status_text).get("VmLck"), regions)


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
