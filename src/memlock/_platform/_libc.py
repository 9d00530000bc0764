"""The only module that binds the C library with ctypes.

Each method makes one call and returns ``0`` on success or the ``errno`` of the failure:
no exceptions here, so each backend translates errno in one place. ``errno`` is read only
when the call returned -1 (ctypes' saved errno is stale after a success).

The :class:`Libc` protocol is everything a backend needs, fully typed; :class:`RealLibc`
implements it with ctypes (each C function bound once, in ``__init__``, to a typed
attribute) and tests substitute a simulated libc that follows another OS's manual page.
Hot paths take pre-bound callables (:meth:`Libc.serial_lock_calls`,
:meth:`Libc.advice_call`, :meth:`Libc.cachestat_counter`), never a method per call.
"""

from __future__ import annotations

import ctypes
import errno
import io
import mmap
import os
import sys

TYPE_CHECKING = False  # typing costs ~12 ms at import; mypy reads the first branch
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol
else:
    Protocol = object

__all__ = ["CachestatCount", "Libc", "RealLibc", "SecretsLibc", "real_libc"]

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t
_int = ctypes.c_int
_long = ctypes.c_long
#: A C function taking ctypes arguments as they are (no per-call conversion), int result.
_NO_ARGTYPES = ctypes.CFUNCTYPE(_int, use_errno=True)
#: cachestat(2)'s system call number (Linux 6.5+, the same on every architecture).
_NR_CACHESTAT = 451
#: memfd_secret(2)'s system call number (Linux 5.14+).
_NR_MEMFD_SECRET = 447


class CachestatCount(Protocol):
    """``count(fd)`` of :meth:`Libc.cachestat_counter`."""

    def __call__(self, fd: int, /) -> int: ...


class Libc(Protocol):
    """What the backends need from the C library. Each call returns 0 or an errno.

    A call the C library lacks answers ENOSYS (or the documented "absent" value).
    """

    def has(self, name: str) -> bool: ...
    # -- locking
    def mlock(self, addr: int, length: int) -> int: ...
    def munlock(self, addr: int, length: int) -> int: ...
    def mlockall(self, flags: int) -> int: ...
    def munlockall(self) -> int: ...
    def mlock2(self, addr: int, length: int, flags: int, syscall_nr: int) -> int: ...
    def serial_lock_calls(self) -> tuple[Callable[[int, int], int], Callable[[int, int], int]]:
        ...
    # -- paging
    def madvise(self, addr: int, length: int, advice: int) -> int: ...
    def advice_call(self, advice: int) -> Callable[[int, int], int]: ...
    def mincore_into(self, addr: int, length: int, out: bytearray) -> int: ...
    def cachestat_pages(self, fd: int, offset: int, length: int) -> tuple[int, int]: ...
    def cachestat_counter(self) -> CachestatCount: ...
    def peek(self, addr: int) -> int: ...
    # -- process
    def mallopt(self, param: int, value: int) -> bool: ...
    def prctl(self, option: int, arg: int) -> int: ...
    def syscall(self, number: int, *args: int) -> int: ...
    def syscall_long(self, number: int, *args: int) -> tuple[int, int]: ...
    def priv_ineffect(self, name: str) -> bool | None: ...
    def sysctl_int(self, name: str) -> int | None: ...
    def address_of(self, buffer: memoryview) -> int: ...
    # -- threads
    def default_thread_stack_size(self) -> int: ...
    # -- time
    def deadline_sleep_call(self, clock_id: int, flags: int) -> Callable[[int], int] | None: ...


def _absent(name: str) -> Callable[..., int]:
    """Stands for a C function the library lacks: fails with ENOSYS, as a kernel would."""

    def call(*_args: object) -> int:
        ctypes.set_errno(errno.ENOSYS)
        return -1

    call.__name__ = name
    return call


# --- secrets: guarded, locked, undumpable mappings ---


class SecretsLibc(Libc, Protocol):
    """What the secrets need from the C library (RealLibc; the simulations of tests)."""

    def reserve(self, length: int) -> tuple[mmap.mmap, int]: ...
    def release(self, region: mmap.mmap) -> None: ...
    def mprotect(self, addr: int, length: int, prot: int) -> int: ...
    def madvise(self, addr: int, length: int, advice: int) -> int: ...
    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1
             ) -> tuple[int, int]: ...
    def memfd_secret_file(self, flags: int = 0) -> io.FileIO: ...
    def wipe(self, addr: int, length: int) -> None: ...
    def exporter(self, addr: int, length: int) -> ctypes.Array[ctypes.c_ubyte]: ...


class SecretMappings:
    """RealLibc's calls for the secrets that are not one C function each."""

    @staticmethod
    def reserve(length: int) -> tuple[mmap.mmap, int]:
        """A private mapping of ``length`` bytes owned by an mmap object, and its address.

        Readable and writable for Python (mmap objects remember their protection): the
        caller narrows it in the kernel at once. Dropping or closing the object unmaps it,
        whatever interrupts the caller.

        Raises:
            OSError: The kernel refused the mapping.
        """
        region = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
        export = ctypes.c_char.from_buffer(region)  # pins the mapping while it lives
        addr = ctypes.addressof(export)
        del export
        return region, addr

    @staticmethod
    def release(region: mmap.mmap) -> None:
        """Unmap what :meth:`reserve` made (idempotent)."""
        region.close()


# --- end of secrets ---


class RealLibc(SecretMappings):
    """The C library of this process, through ctypes."""

    def __init__(self) -> None:
        path = None
        if sys.platform != "linux":
            from ctypes.util import find_library

            path = find_library("c")
        self._dll = ctypes.CDLL(path, use_errno=True)
        self._missing: set[str] = set()
        bind = self._bind
        # Addresses as size_t: same ABI as a pointer, and ctypes converts it faster.
        self._mlock = bind("mlock", [_sz, _sz])
        self._munlock = bind("munlock", [_sz, _sz])
        self._mlockall = bind("mlockall", [_int])
        self._munlockall = bind("munlockall", [])
        self._madvise = bind("madvise", [_vp, _sz, _int])
        self._mprotect = bind("mprotect", [_vp, _sz, _int])
        self._mincore = bind("mincore", [_vp, _sz, _vp])
        self._mallopt = bind("mallopt", [_int, _int])
        self._mlock2 = bind("mlock2", [_vp, _sz, ctypes.c_uint])
        self._prctl = bind("prctl", [_int, _long, _long, _long, _long])
        self._syscall = bind("syscall", None, restype=_long)
        self._sysctlbyname = bind("sysctlbyname",
                                  [ctypes.c_char_p, _vp, ctypes.POINTER(_sz), _vp, _sz])
        self._priv_ineffect = bind("priv_ineffect", [ctypes.c_char_p])
        self._cachestat_tls: Any = None  # threading.local() on first use (no import cost)

    def _bind(self, name: str, argtypes: list[type[Any]] | None,
              restype: type[Any] = _int) -> Callable[..., Any]:
        """The C function ``name`` with its signature; ENOSYS where the library lacks it."""
        fn = getattr(self._dll, name, None)
        if fn is None:
            self._missing.add(name)
            return _absent(name)
        if argtypes is not None:
            fn.argtypes = argtypes
        fn.restype = restype
        bound: Callable[..., Any] = fn
        return bound

    def has(self, name: str) -> bool:
        """Whether the C library exports ``name`` (of the functions bound here)."""
        return name not in self._missing

    @staticmethod
    def _result(rc: int) -> int:
        return ctypes.get_errno() if rc == -1 else 0

    # -- locking -------------------------------------------------------------------------

    def mlock(self, addr: int, length: int) -> int:
        """mlock(2)."""
        if self._mlock(addr, length):
            return ctypes.get_errno()
        return 0

    def munlock(self, addr: int, length: int) -> int:
        """munlock(2)."""
        if self._munlock(addr, length):
            return ctypes.get_errno()
        return 0

    def serial_lock_calls(self) -> tuple[Callable[[int, int], int], Callable[[int, int], int]]:
        """mlock and munlock for one caller that never runs two calls at once.

        The pair shares two preallocated size_t arguments, which ctypes passes without
        converting: each call costs about a third less than :meth:`mlock`. The caller must
        serialise every call of the pair (the page registry holds its mutex).
        """
        addr, length = _sz(), _sz()
        get_errno = ctypes.get_errno

        def serial(name: str) -> Callable[[int, int], int]:
            raw = _NO_ARGTYPES((name, self._dll))

            def call(start: int, nbytes: int) -> int:
                addr.value = start
                length.value = nbytes
                return get_errno() if raw(addr, length) else 0

            return call

        return serial("mlock"), serial("munlock")

    def mlock2(self, addr: int, length: int, flags: int, syscall_nr: int) -> int:
        """mlock2(2): the libc wrapper where present, else the raw system call."""
        if self.has("mlock2"):
            return self._result(self._mlock2(addr, length, flags))
        return self.syscall(syscall_nr, addr, length, flags)

    def mlockall(self, flags: int) -> int:
        """mlockall(2)."""
        return self._result(self._mlockall(flags))

    def munlockall(self) -> int:
        """munlockall(2)."""
        return self._result(self._munlockall())

    # -- paging --------------------------------------------------------------------------

    def madvise(self, addr: int, length: int, advice: int) -> int:
        """madvise(2)."""
        return self._result(self._madvise(addr, length, advice))

    def advice_call(self, advice: int) -> Callable[[int, int], int]:
        """``call(addr, length)``: madvise(2) with ``advice``, bound once for a loop."""
        raw, get_errno = self._madvise, ctypes.get_errno

        def call(addr: int, length: int) -> int:
            return get_errno() if raw(addr, length, advice) == -1 else 0

        return call

    def mincore_into(self, addr: int, length: int, out: bytearray) -> int:
        """mincore(2) of ``length`` bytes at page-aligned ``addr`` into ``out`` (a byte a page)."""
        if not out:
            return 0
        vec = (ctypes.c_ubyte * len(out)).from_buffer(out)
        return self._result(self._mincore(addr, length, ctypes.addressof(vec)))

    def cachestat(self, fd: int, offset: int, length: int) -> tuple[dict[str, int] | None, int]:
        """cachestat(2) (Linux 6.5+, syscall 451): page-cache counts of a file range.

        Returns ``(counts, 0)`` with keys nr_cache, nr_dirty, nr_writeback, nr_evicted,
        nr_recently_evicted (pages), or ``(None, errno)``. ``length`` 0 means to EOF.
        """
        rng = (ctypes.c_uint64 * 2)(offset, length)
        out = (ctypes.c_uint64 * 5)()
        _, err = self.syscall_long(_NR_CACHESTAT, fd, ctypes.addressof(rng),
                                   ctypes.addressof(out), 0)
        if err:
            return None, err
        names = ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
        return dict(zip(names, (int(v) for v in out), strict=True)), 0

    def cachestat_pages(self, fd: int, offset: int, length: int) -> tuple[int, int]:
        """cachestat(2) (Linux 6.5+): ``(cached pages, 0)`` or ``(-1, errno)``; fast path.

        ``length`` 0 means to EOF. Used per file over large trees: no dict, no allocation
        (each thread keeps its own argument buffers).
        """
        try:
            fn, rng, out, args = self._cachestat_tls.state
        except AttributeError:  # None, or a thread that has no state yet
            fn, rng, out, args = self._cachestat_setup()
        rng[0] = offset
        rng[1] = length
        if fn(_NR_CACHESTAT, fd, args[0], args[1], 0) == -1:
            return -1, ctypes.get_errno()
        return int(out[0]), 0

    def _cachestat_setup(self) -> tuple[
        ctypes._CDLLFuncPointer, ctypes.Array[ctypes.c_uint64], ctypes.Array[ctypes.c_uint64],
        tuple[int, int],
    ]:
        if self._cachestat_tls is None:
            import threading

            self._cachestat_tls = threading.local()
        fn = self._dll._FuncPtr(("syscall", self._dll))  # own argtypes, same symbol
        fn.argtypes = [_long, _int, _vp, _vp, ctypes.c_uint]
        fn.restype = _long
        rng = (ctypes.c_uint64 * 2)()
        out = (ctypes.c_uint64 * 5)()
        state = (fn, rng, out, (ctypes.addressof(rng), ctypes.addressof(out)))
        self._cachestat_tls.state = state
        return state

    def cachestat_counter(self) -> CachestatCount:
        """cachestat(2) of whole files for scans of big trees (Linux 6.5+, syscall 451).

        Returns ``count(fd)``: the file's pages in the page cache, or -1 on failure (ask
        :meth:`cachestat_pages` for the errno). Half the cost of :meth:`cachestat_pages`:
        no errno bookkeeping, arguments pre-converted. ``count`` owns its buffers: call it
        from one thread.
        """
        fn = ctypes.CFUNCTYPE(_long)(("syscall", self._dll))  # variadic: no argtypes
        nr, rng, out = _long(_NR_CACHESTAT), (ctypes.c_uint64 * 2)(0, 0), (ctypes.c_uint64 * 5)()

        def count(fd: int) -> int:
            return int(out[0]) if fn(nr, fd, rng, out, 0) == 0 else -1

        return count

    @staticmethod
    def peek(addr: int) -> int:
        """Read the byte at ``addr`` (a read fault: grows a stack mapping down to it).

        The caller must know ``addr`` is readable or a legal stack extension.
        """
        return int(ctypes.c_ubyte.from_address(addr).value)

    # -- process -------------------------------------------------------------------------

    def mallopt(self, param: int, value: int) -> bool:
        """glibc mallopt(3); True on success, False where it failed or is absent."""
        if not self.has("mallopt"):
            return False
        return bool(self._mallopt(param, value))

    def prctl(self, option: int, arg: int) -> int:
        """prctl(2) with one argument (Linux); 0 or errno (ENOSYS without prctl)."""
        return self._result(self._prctl(option, arg, 0, 0, 0))

    def syscall(self, number: int, *args: int) -> int:
        """A raw system call with integer arguments; returns 0 or errno (discards results)."""
        return self.syscall_long(number, *args)[1]

    def syscall_long(self, number: int, *args: int) -> tuple[int, int]:
        """A raw system call; returns ``(result, errno)`` (errno 0 on success)."""
        rc: int = self._syscall(_long(number), *(_long(a) for a in args))
        return (rc, ctypes.get_errno() if rc == -1 else 0)

    def sysctl_int(self, name: str) -> int | None:
        """sysctlbyname(3) for an integer value (BSD, macOS); None where unavailable."""
        if not self.has("sysctlbyname"):
            return None
        buf = ctypes.c_uint64(0)
        size = _sz(ctypes.sizeof(buf))
        if self._sysctlbyname(name.encode(), ctypes.byref(buf), ctypes.byref(size), None, 0):
            return None
        if size.value == 4:
            return int(ctypes.c_uint32.from_buffer(buf).value)
        return int(buf.value)

    def priv_ineffect(self, name: str) -> bool | None:
        """illumos/Solaris priv_ineffect(3C): ``name`` is in the effective privilege set.

        None where the C library has no priv_ineffect (every OS but illumos/Solaris).
        """
        if not self.has("priv_ineffect"):
            return None
        return bool(self._priv_ineffect(name.encode()))

    @staticmethod
    def address_of(buffer: memoryview) -> int:
        """Address of a writable, C-contiguous, non-empty buffer (e.g. an mmap's view)."""
        return ctypes.addressof(ctypes.c_char.from_buffer(buffer))

    # --- secrets: guarded, locked, undumpable mappings ---

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2) with ``mmap.PROT_*`` flags."""
        return self._result(self._mprotect(addr, length, prot))

    @staticmethod
    def wipe(addr: int, length: int) -> None:
        """Zero ``length`` bytes at ``addr`` through a foreign call no compiler can elide."""
        ctypes.memset(addr, 0, length)

    def memfd_secret(self, flags: int = 0) -> tuple[int, int]:
        """memfd_secret(2) (Linux 5.14+, syscall 447): ``(fd, 0)`` or ``(-1, errno)``."""
        return self.syscall_long(_NR_MEMFD_SECRET, flags)

    def memfd_secret_file(self, flags: int = 0) -> io.FileIO:
        """memfd_secret(2) as a file object that owns the descriptor (closes it when it dies).

        The system call and the wrapping are one line of C calls: no trace function can
        run between them, and a signal handler only right after (where Python checks
        for them, after any call); the descriptor cannot leak otherwise.

        Raises:
            OSError: The kernel refused (ENOSYS without CONFIG_SECRETMEM, ...).
        """
        try:
            return io.FileIO(self._syscall(_long(_NR_MEMFD_SECRET), _long(flags)), "r+",
                             closefd=True)
        except ValueError:  # -1: refused
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err)) from None

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1) -> tuple[int, int]:
        """mmap(2) at offset 0: ``(address, 0)`` or ``(0, errno)``. ``addr`` 0: kernel's choice."""
        fn = getattr(self, "_mmap_fn", None)
        if fn is None:
            fn = self._dll.mmap
            fn.argtypes = [_vp, _sz, _int, _int, _int, _long]
            fn.restype = _vp
            self._mmap_fn = fn
        rc = fn(addr or None, length, prot, flags, fd, 0)
        if rc is None or rc == ctypes.c_void_p(-1).value:
            return 0, ctypes.get_errno()
        return int(rc), 0

    def munmap(self, addr: int, length: int) -> int:
        """munmap(2)."""
        fn = getattr(self, "_munmap_fn", None)
        if fn is None:
            fn = self._dll.munmap
            fn.argtypes = [_vp, _sz]
            fn.restype = _int
            self._munmap_fn = fn
        return self._result(fn(addr, length))

    _array_types: dict[int, type[ctypes.Array[ctypes.c_ubyte]]] = {}  # noqa: RUF012

    @classmethod
    def exporter(cls, addr: int, length: int) -> ctypes.Array[ctypes.c_ubyte]:
        """A ctypes ``c_ubyte`` array over ``length`` bytes at ``addr`` (no copy, no owner).

        ``memoryview(arr).cast("B")`` is a writable byte view; every view, slice or
        numpy array derived from it holds a reference to ``arr`` (through the memoryview's
        managed buffer), which lets the owner of the memory count live views.
        """
        t = cls._array_types.get(length)
        if t is None:
            t = cls._array_types.setdefault(length, ctypes.c_ubyte * length)
        return t.from_address(addr)

    # -- threads -------------------------------------------------------------------------

    def default_thread_stack_size(self) -> int:
        """The stack size of a new thread's default attributes (pthread_getattr_default_np,
        glibc 2.18+, musl); 0 where the C library cannot tell.

        glibc takes it from RLIMIT_STACK at process start (2 MiB on x86-64 if unlimited):
        changing the limit later does not change it.
        """
        get_default = getattr(self._dll, "pthread_getattr_default_np", None)
        get_size = getattr(self._dll, "pthread_attr_getstacksize", None)
        destroy = getattr(self._dll, "pthread_attr_destroy", None)
        if get_default is None or get_size is None or destroy is None:
            return 0
        attr = ctypes.create_string_buffer(256)  # pthread_attr_t: 56 bytes on x86-64
        if get_default(attr) != 0:
            return 0
        size = _sz(0)
        try:
            ok = get_size(attr, ctypes.byref(size)) == 0
        finally:
            destroy(attr)
        return size.value if ok else 0

    # --- time: absolute-deadline sleeps (memlock latency) ---

    def deadline_sleep_call(self, clock_id: int, flags: int) -> Callable[[int], int] | None:
        """``sleep_until(deadline_ns)``: clock_nanosleep(2) until an absolute deadline.

        ``flags`` is the OS's TIMER_ABSTIME; the deadline is in nanoseconds of
        ``clock_id``. Returns 0 or the error number (clock_nanosleep returns it; it does
        not set errno); EINTR is retried, which an absolute deadline makes exact. Bound
        once for a periodic loop: one preallocated timespec, arguments pre-converted,
        no allocation per call. Call it from one thread. None where the C library has no
        clock_nanosleep (macOS).
        """
        if getattr(self._dll, "clock_nanosleep", None) is None:
            return None
        fn = _NO_ARGTYPES(("clock_nanosleep", self._dll))
        ts = _Timespec()
        when, cid, how = ctypes.pointer(ts), _int(clock_id), _int(flags)
        billion, eintr = 1_000_000_000, errno.EINTR

        def sleep_until(deadline_ns: int) -> int:
            ts.tv_sec = deadline_ns // billion
            ts.tv_nsec = deadline_ns % billion
            rc: int = fn(cid, how, when, None)
            while rc == eintr:
                rc = fn(cid, how, when, None)
            return rc

        return sleep_until


class _Timespec(ctypes.Structure):
    """struct timespec: time_t and long are both C long on every supported system."""

    _fields_ = (("tv_sec", _long), ("tv_nsec", _long))


_REAL: RealLibc | None = None


def real_libc() -> RealLibc:
    """The process's C library, bound once."""
    global _REAL
    if _REAL is None:
        _REAL = RealLibc()
    return _REAL


def strerror(err: int) -> str:
    """The C library's text for ``err``."""
    return os.strerror(err)
