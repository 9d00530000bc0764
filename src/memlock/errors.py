"""The public exception types.

Every failure of a memory-locking system call is a :class:`MemlockError`, which is an
:class:`OSError`: ``e.errno`` and ``except OSError`` keep working. Bad arguments are never
a MemlockError: they raise :class:`TypeError` or :class:`ValueError` before any system call.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "CopyOnWriteWarning",
    "LockLimitError",
    "LockPermissionError",
    "MemlockError",
    "UnsupportedOperation",
]


class MemlockError(OSError):
    """Base class: a memory-locking call failed in the kernel.

    Raised directly for failures that are neither a limit nor a permission problem, e.g.
    ENOMEM for a range that is not mapped, ENOMEM for a process at ``vm.max_map_count``
    (the message names its mapping count and the maximum, ``hint`` the sysctl: raising
    RLIMIT_MEMLOCK would not help), or EINVAL from the kernel. Never raised for bad Python
    arguments.

    Attributes:
        hint: What to do about it in this environment, or None.
        requested: Bytes the failed call asked to lock, where known.
        limit: The limit that applied (bytes), None if unknown or unlimited.
        locked: Bytes this process had locked before the call, where known.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    def __init__(
        self,
        errno: int,
        strerror: str,
        *,
        hint: str | None = None,
        requested: int | None = None,
        limit: int | None = None,
        locked: int | None = None,
    ) -> None:
        """Make the error; the keywords set the attributes of the same names."""
        super().__init__(errno, strerror)
        self.hint = hint
        self.requested = requested
        self.limit = limit
        self.locked = locked

    def __str__(self) -> str:
        """The message, then the hint on a line of its own."""
        text = super().__str__()
        if self.hint:
            text += "\n" + self.hint
        return text


class LockLimitError(MemlockError):
    """The lock would exceed RLIMIT_MEMLOCK or a system-wide wired-memory limit.

    Unlike :class:`LockPermissionError`, some memory may be locked here, just not this much
    more. ``requested``, ``limit`` and ``locked`` carry the numbers; ``hint`` says how to
    raise the limit; when the need is above a hard limit the process cannot raise, it says so
    and gives the fixes that raise the hard limit. Never surfaced as
    :class:`BlockingIOError`, even for EAGAIN.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)


class LockPermissionError(MemlockError, PermissionError):
    """This process may not lock memory at all.

    Examples: RLIMIT_MEMLOCK is 0 and the process lacks CAP_IPC_LOCK (Linux),
    ``security.bsd.unprivileged_mlock=0`` (FreeBSD), the process lacks
    PRIV_PROC_LOCK_MEMORY (illumos). Also a :class:`PermissionError`. Unlike
    :class:`LockLimitError`, no lock of any size can succeed. ``errno`` is EPERM whatever
    the kernel answered (a zero limit makes an mmap of memfd_secret memory fail with
    EAGAIN, mlock on FreeBSD with ENOMEM); the message names the kernel's answer.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)


class UnsupportedOperation(MemlockError):
    """The operating system does not implement this call (ENOSYS), e.g. mlockall on macOS.

    Unlike the other errors, retrying with more privilege or a higher limit cannot help.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    def __init__(self, strerror: str, *, hint: str | None = None) -> None:
        """Make the error, with errno ENOSYS."""
        super().__init__(_errno.ENOSYS, strerror, hint=hint)


class CopyOnWriteWarning(RuntimeWarning):
    """Locking memory of a private, writable file mapping copies it.

    ``mmap.ACCESS_COPY``, ``numpy.load(mmap_mode="c")`` and ``torch.load(mmap=True)`` map a
    file private and writable: mlock then breaks copy-on-write and the kernel copies every
    page into anonymous memory (RAM counted to the process, no longer the page cache's).
    :func:`memlock.lock` warns, naming the file and the bytes; map the file read-only
    and shared instead (:meth:`memlock.LockedFile.view`, ``numpy.load(mmap_mode="r")``,
    :func:`memlock.safetensors.load`) for a lock with no copy.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)
