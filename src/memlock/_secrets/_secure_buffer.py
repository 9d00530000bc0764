"""SecureBuffer: a secret kept out of swap, core dumps and forked children.

Views on Python 3.11 (no PEP 688): each buffer exports its bytes through one ctypes array
(made by the platform layer's exporter on the first :meth:`SecureBuffer.view`), and hands out
``memoryview(arr).cast("B")``. Every view, slice, ``memoryview(view)``, ``numpy``
array or ctypes object derived from such a view keeps the view's managed buffer alive,
which holds a reference to ``arr``. :meth:`SecureBuffer.close` therefore reads
``sys.getrefcount(arr)``: above its baseline (the buffer's own slot; memlock's code keeps
no other reference, not even in a local variable, so that a frame an interrupt leaves in
a traceback cannot look like a view), some derived object can still reach the
memory, and close refuses with BufferError (as ``mmap.close`` does) instead of wiping or
reusing memory a view can still see. The array also references its SecureBuffer, so a
live view keeps the buffer from being collected. Nothing here writes into CPython's
private structures. What this cannot see: raw addresses taken with ctypes and used after
close.

Interrupts (Ctrl-C, a signal handler that raises) may land anywhere: what a buffer holds
is its lease (see memlock._secrets._pool), changed only under the pool's mutex and only by
single statements after the work they stand for. An interrupted close() leaves the buffer
open and wiped at worst, never closed and unwiped; calling close() again finishes it.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
import weakref
from collections.abc import Iterator
from typing import Protocol, final

from .._context import ReleasedOnExit
from .._critical import Reentered, try_under, under
from .._pages import PAGE_SIZE, as_size
from .._platform import BACKEND
from .._platform import SECRETS_SLOT as _SECRETS
from . import _pool as _mem

__all__ = ["SecureBuffer"]

_MPROTECT, _, _exporter = BACKEND.secret_calls()  # pre-bound at import
_wipe_secret = _mem.wipe_secret
_NONE, _READ, _RW = _mem.PROT_NONE, _mem.PROT_READ, _mem.PROT_RW
_PROT_NAMES = {_NONE: "none", _READ: "read", _RW: "readwrite"}
_CANARY = _mem.CANARY
_CSIZE = _mem.CANARY_SIZE
_MAX_CLASS = _mem.MAX_CLASS
_SIZE_MAX = 2**62
_caught_up = _mem.caught_up
_take_slot = _mem.take_slot
_give_back = _mem.give_back
_CLOSED = _mem.CLOSED
_Lease = _mem.Lease
_FORK_PAGE = _mem._FORK_PAGE
#: Backend names resolved once ("auto" probes the kernel on first use).
_RESOLVED: dict[str, str] = {}
#: sys.getrefcount(sb._arr) with no view alive: the buffer's own slot, and getrefcount's
#: argument.
_ARR_BASE_REFS = 2
_GETREFCOUNT = sys.getrefcount


class _Exportable(Protocol):
    """A buffer-protocol object (a ctypes array here)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...


class _InProgress:
    """A marker living exactly as long as an ``access()`` block (see _heal)."""

    __slots__ = ("__weakref__",)


def _heal(st: _mem._State) -> None:
    """Narrow the protection that interrupted ``access()`` blocks left open (mutex held).

    Each is put back once no view of its buffer is alive; until then it stays listed.
    """
    for lease, (prot, block) in list(st.reopened.items()):
        sb = lease()
        home = lease.home
        if sb is None or home is None or not isinstance(home, _mem.Mapping):
            st.reopened.pop(lease, None)
            continue
        if block() is not None:  # its access() block is still running: its own business
            continue
        if sb._arr is not None and _GETREFCOUNT(sb._arr) > _ARR_BASE_REFS:
            continue
        sb._prot = prot & sb._prot  # never wider than the kernel's (see _set_protection)
        if _MPROTECT(home.base, home.size, prot) == 0:
            sb._prot = prot
            st.reopened.pop(lease, None)


_mem.heal = _heal  # also run after garbage collections (_pool.drain_soon)


def _heal_soon(_block: object) -> None:
    """When an ``access()`` block's frame is gone, narrow what it left open.

    Only if the mutex is free now: it never waits; otherwise the next call or collection
    does.
    """
    _mem.drain_soon()


def _exporter_of(sb: SecureBuffer, address: int, size: int) -> _Exportable:
    """The ctypes array through which ``sb`` exports ``size`` bytes at ``address``.

    It refers to ``sb``, so a live view keeps the buffer from being collected.
    """
    arr = _exporter(address, size)
    arr._owner = sb  # type: ignore[attr-defined]
    return arr


@final
class SecureBuffer(ReleasedOnExit):
    """Fixed-size memory for a secret: locked, kept out of core dumps and forked children.

    Zero-filled at creation, readable and writable until restricted. The memory is locked
    in RAM (a failure raises LockLimitError with the numbers and a hint, never ignored),
    excluded from core dumps (MADV_DONTDUMP), and never readable by a forked child
    (MADV_WIPEONFORK: the child sees zeros; memfd_secret: MADV_DONTFORK, the child has no
    mapping). In a child, inherited buffers read as closed.

    Small secrets (up to 2048 bytes) share locked pages from a pool, each between two
    canaries; larger ones, and ``isolated=True``, get a mapping of their own between two
    PROT_NONE guard pages, ending exactly at the second guard (one byte past the end
    faults), with a canary before the secret. Isolated buffers can change protection
    (:meth:`noaccess`, :meth:`readonly`, :meth:`readwrite`, :meth:`access`).

    Args:
        size: Bytes of the secret (0 allowed).
        isolated: Give the secret its own guarded mapping (a page or more of locked memory
            each, tens of µs to create: several system calls) instead of a pool slot.
        backend: ``"memfd_secret"`` (Linux 5.14+: pages leave the kernel's direct map and
            /proc/PID/mem cannot read them; an error where the kernel refuses it),
            ``"anonymous"`` (locked private anonymous memory) or ``"auto"`` (the first
            that works here).

    Raises:
        TypeError / ValueError: Bad arguments (before any system call).
        LockPermissionError: RLIMIT_MEMLOCK is 0 and the process lacks the privilege.
        LockLimitError: RLIMIT_MEMLOCK does not allow the memory.
        MemlockError: Another refusal, e.g. the process is at vm.max_map_count (named,
            with the fix).
        UnsupportedOperation: ``backend="memfd_secret"`` where the kernel refuses it.

    Availability: Linux (verified). Elsewhere: locking and guard pages, FreeBSD
    MADV_NOCORE, fork protection by an at-fork wipe; no memfd_secret. Not verified there.
    """

    __module__ = "memlock"  # its public name (tests/test_exports.py)

    __slots__ = ("__weakref__", "_arr", "_backend", "_gen", "_isolated", "_lease", "_prot",
                 "_size")

    _lease: _mem.Lease
    _arr: _Exportable | None

    def __init__(self, size: int, *, isolated: bool = False, backend: str = "auto") -> None:
        # The hot path (a pooled secret) is kept short: creation + close is a few µs.
        n = size
        if type(n) is not int or n < 0 or n > _SIZE_MAX:
            n = as_size(size, "size")
            if n > _SIZE_MAX:
                raise ValueError(f"size {n} is too large")
        if isolated is not False and isolated is not True:
            raise TypeError(f"isolated must be a bool, not {type(isolated).__name__}")
        name = _RESOLVED.get(backend) if type(backend) is str else None
        if name is None:
            name = _mem.resolve_backend(backend)
            _RESOLVED[backend] = name
        st = _mem.state if _FORK_PAGE is not None and _FORK_PAGE[_SECRETS] else _caught_up()
        self._size = n
        self._arr = None
        self._backend = name
        self._isolated = isolated
        self._prot = _RW
        self._gen = st.gen
        (lease := _Lease(self, st.queue)).home = None  # one line: never without a home
        lease.size = n
        self._lease = lease
        st.live[lease] = None
        if not isolated and n <= _MAX_CLASS:
            while True:
                with st.mutex: outcome = _take_slot(lease, name)  # noqa: E701 (_critical)
                if outcome is None:
                    return
                if type(outcome) is int:  # every chunk is full: grow, without the mutex
                    _mem.grow(name, outcome)
                    continue
                try:
                    raise outcome  # type: ignore[misc]
                finally:
                    del outcome  # no cycle through this frame
        pages = -(-(n + _CSIZE) // PAGE_SIZE) * PAGE_SIZE
        m = _mem.map_pages(pages, name)  # no mutex needed: nothing shared yet
        off = pages - n
        m.view[off - _CSIZE:off] = _CANARY
        under(st.mutex, _mem.adopt, lease, m, off)

    # -- state ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        """True after close (and in a forked child for buffers inherited from the parent)."""
        return self._lease.home is None or self._gen != _caught_up().gen

    @property
    def backend(self) -> str:
        """The memory backend in use: ``"memfd_secret"`` or ``"anonymous"``."""
        return self._backend

    @property
    def isolated(self) -> bool:
        """The secret has its own guarded mapping and can change protection."""
        return self._isolated

    @property
    def protection(self) -> str:
        """``"readwrite"``, ``"read"`` or ``"none"`` (only isolated buffers change it)."""
        return _PROT_NAMES[self._prot]

    def __repr__(self) -> str:
        kind = "isolated" if self._isolated else (
            "pooled" if self._size <= _MAX_CLASS else "own mapping")
        st = "closed" if self.closed else "open"
        prot = "" if self._prot == _RW else f" protection={self.protection}"
        return (f"<memlock.SecureBuffer {st} size={self._size} {kind} "
                f"backend={self._backend}{prot}>")

    def _home(self, st: _mem._State) -> _mem.Chunk | _mem.Mapping:
        """Where the secret lives (mutex held). Raises ValueError when closed or inherited."""
        home = self._lease.home
        if home is None:
            raise ValueError("operation on a closed SecureBuffer")
        if self._gen != st.gen:
            raise ValueError(
                "this SecureBuffer belongs to the parent process: its memory is not "
                "available in a forked child")
        return home

    # -- access --------------------------------------------------------------------------

    def view(self) -> memoryview:
        """A memoryview (format "B") of exactly the secret's bytes; read-only if restricted.

        While this view or anything derived from it (slices, memoryviews, numpy arrays)
        is alive, :meth:`close` and narrowing the protection raise BufferError. Release
        it with ``del``, ``view.release()`` or ``with sb.view() as v:``.

        Raises:
            ValueError: Closed, inherited across fork, or protection ``"none"``.
        """
        st = _mem.state if _FORK_PAGE is not None and _FORK_PAGE[_SECRETS] else _caught_up()
        with st.mutex: v = self._view(st)  # noqa: E701  (see _critical.under)
        if type(v) is not memoryview:
            try:
                raise v
            finally:
                del v  # no cycle through this frame
        return v if self._prot == _RW else v.toreadonly()

    def _view(self, st: _mem._State) -> memoryview | BaseException:
        """A view (mutex held), or what refused it (returned: see _critical.under)."""
        if (self._arr is not None and self._prot == _RW and self._gen == st.gen
                and self._lease.home is not None):
            return memoryview(self._arr).cast("B")  # open: the exporter goes at close
        try:
            if st.pending or st.reopened:
                _mem.settle()
            return self._new_view(st)
        except BaseException as exc:
            return exc

    def _new_view(self, st: _mem._State) -> memoryview:
        home = self._home(st)
        if self._prot == _NONE:
            raise ValueError(
                "SecureBuffer protection is 'none'; call readonly() or readwrite(), "
                "or use access()")
        if self._arr is None:
            self._arr = _exporter_of(self, home.base + self._lease.off, self._size)
        return memoryview(self._arr).cast("B")

    @contextlib.contextmanager
    def access(self, write: bool = False) -> Iterator[memoryview]:
        """Context manager: a view valid inside the ``with`` block only.

        For an isolated buffer, protection is opened to at least what ``write`` asks for
        and put back on exit (``noaccess()`` buffers are readable only inside the block).
        The view is released on exit; a slice or copy of it that escapes the block makes
        the exit raise BufferError (protection then stays open).

        Args:
            write: Whether the view must be writable. False gives a read-only view.
        """
        prev = self._prot
        want = _RW if write else _READ
        changed = self._isolated and prev & want != want
        v: memoryview | None = None
        handed = False
        reopened = _caught_up().reopened
        alive = _InProgress()  # dies with this frame: then _heal may act on the entry
        try:  # everything inside: an interrupt anywhere still puts the protection back
            if changed:
                # Recorded first: if the way out is interrupted, the next call of this
                # module narrows it again once this block is gone (_heal).
                reopened[self._lease] = (prev, weakref.ref(alive, _heal_soon))
                self._protect(prev | want)
            v = self.view()
            if not write and not v.readonly:
                ro = v.toreadonly()
                v.release()
                v = ro
            handed = True
            yield v
        finally:
            if v is not None:
                with contextlib.suppress(BufferError):
                    v.release()
            del v
            if changed:
                # Before the view was handed out (an interrupt), no view made here can be
                # in use: views in the interrupted frames do not count. Views from before
                # the call were fine with ``prev`` already.
                self._protect(prev, check_views=handed)
                reopened.pop(self._lease, None)

    def _protect(self, prot: int, check_views: bool = True) -> None:
        if not self._isolated:
            raise ValueError("protection can change only for isolated=True buffers")
        st = _caught_up()
        under(st.mutex, self._set_protection, st, prot, check_views)

    def _set_protection(self, st: _mem._State, prot: int, check_views: bool) -> None:
        m = self._home(st)
        assert isinstance(m, _mem.Mapping)
        old = self._prot
        if (check_views and prot & old != old and self._arr is not None
                and _GETREFCOUNT(self._arr) > _ARR_BASE_REFS):
            raise BufferError(
                "cannot restrict protection while a view of the SecureBuffer (or a "
                "slice/array made from one) is alive")
        # The recorded protection is never wider than the kernel's: narrow it before the
        # call, widen it after (an interrupt in between leaves the two safely apart).
        if prot & old != old:
            self._prot = prot & old
        BACKEND.protect(m.base, m.size, prot)
        self._prot = prot

    def noaccess(self) -> None:
        """Make the secret unreadable (PROT_NONE): touching it kills the process.

        Raises:
            ValueError: Not isolated, or closed.
            BufferError: A view is alive.
        """
        self._protect(_NONE)

    def readonly(self) -> None:
        """Make the secret read-only (PROT_READ); views from now on are read-only.

        Raises:
            ValueError: Not isolated, or closed.
            BufferError: Narrowing from read-write while a view is alive.
        """
        self._protect(_READ)

    def readwrite(self) -> None:
        """Make the secret readable and writable again (the initial protection)."""
        self._protect(_RW)

    if sys.version_info >= (3, 12):

        def __buffer__(self, flags: int, /) -> memoryview:
            """PEP 688: ``memoryview(sb)``, ``hmac.compare_digest(sb, other)`` ..."""
            v = self.view()
            if flags & 1 and v.readonly:  # PyBUF_WRITABLE
                v.release()
                raise BufferError("SecureBuffer is read-only")
            return v

        def __release_buffer__(self, view: memoryview, /) -> None:
            view.release()

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Wipe the secret (a memset the compiler cannot elide) and release its memory.

        Idempotent. A reused pool slot always starts zeroed. If close() is interrupted
        (Ctrl-C), the buffer is either still open (call close() again) or closed and
        wiped.

        Raises:
            BufferError: A view (or a slice/array derived from one) is alive; nothing is
                wiped then.
            RuntimeError: A canary next to the secret was overwritten (a write ran before
                its start or past its end): the message says which. The secret is wiped
                and its slot retired.
        """
        st = _mem.state if _FORK_PAGE is not None and _FORK_PAGE[_SECRETS] else _caught_up()
        try:
            with st.mutex: outcome = self._close(st, True)  # noqa: E701  (_critical.under)
        except Reentered:  # a signal handler or finalizer interrupted memlock in this thread
            outcome = self._close_later(True)
        else:
            _mem.release_unmapped()  # a mapping goes back after the mutex (lock order)
        if outcome is not None:
            try:
                raise outcome if isinstance(outcome, BaseException) else RuntimeError(outcome)
            finally:
                del outcome  # no cycle through this frame

    def _discard(self) -> None:
        """close() for a buffer memlock made and has not handed out (its own cleanup).

        Views memlock's code made of it may still be alive in the frames an interrupt left
        in a traceback, where nobody can use them: the secret is wiped anyway, and
        nothing here raises over the exception being handled.
        """
        st = _caught_up()
        try:
            with st.mutex: self._close(st, False)  # noqa: E701  (_critical.under)
        except Reentered:
            self._close_later(False)
        else:
            _mem.release_unmapped()

    def _close(self, st: _mem._State, check_views: bool) -> str | BaseException | None:
        """Close (mutex held): None, a damaged canary's story, or what refused.

        What refused is returned, not raised: see _critical.under.
        """
        try:
            if st.pending or st.reopened:
                _mem.settle()
            return self._close_locked(st, check_views)
        except BaseException as exc:
            return exc

    def _close_locked(self, st: _mem._State, check_views: bool) -> str | None:
        lease = self._lease
        if lease.home is None:
            return None
        if self._gen != st.gen:  # inherited: never touch the parent's memory
            self._lease = _CLOSED
            return None
        if self._arr is not None:
            if check_views and _GETREFCOUNT(self._arr) > _ARR_BASE_REFS:
                raise BufferError(
                    "cannot close a SecureBuffer while a view of it (or a slice, "
                    "memoryview or array made from one) is alive")
            self._arr._owner = None  # type: ignore[attr-defined]
            self._arr = None
        note = _give_back(lease, self._prot)
        self._lease = _CLOSED  # its own lease is done: nothing to queue when we die
        return note

    def _close_later(self, check_views: bool) -> BaseException | None:
        """close() from code that interrupted this module in the same thread.

        Wipe now (the secret's own bytes need no lock), give the memory back at the
        module's next SecureBuffer call or garbage collection.
        """
        lease = self._lease
        home = lease.home
        if home is None or self._gen != _mem.state.gen:
            return None
        if self._arr is not None:
            if check_views and _GETREFCOUNT(self._arr) > _ARR_BASE_REFS:
                return BufferError("cannot close a SecureBuffer while a view of it is alive")
            self._arr._owner = None  # type: ignore[attr-defined]
            self._arr = None  # no view is ever handed out again
        _wipe_secret(lease, self._prot)
        _mem.state.queue(lease)  # wiped again and given back by the next call (a drain)
        self._lease = _CLOSED
        return None

    def _release_on_exit(self) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            lease = self._lease
        except AttributeError:  # never filled in
            return
        home = lease.home
        if home is None or _mem.forked() or self._gen != _mem.state.gen:
            return  # closed, or inherited across a fork (by Python or C): not ours
        # Last resort: wipe now (the secret's own bytes: no lock needed), then give the
        # memory back if the mutex is free (a finalizer may run with it held); if not, or
        # if this is interrupted, this buffer's death queues its lease for the next
        # operation of the module (see memlock._secrets._pool: Leases).
        notes: list[str | None] = []
        unclosed = f"unclosed {self!r}: close it or use a with block; wiped by the finalizer"
        try:
            _wipe_secret(lease, self._prot)  # the secret only: canaries stay
            try_under(_mem.state.mutex, lambda: notes.append(_give_back(lease, _RW)))
            _mem.release_unmapped(wait=False)
        finally:
            try:  # the warnings may raise (-W error): the memory went back already
                warnings.warn(unclosed, ResourceWarning, stacklevel=2, source=self)
                for note in notes:  # never blamed on the slot's next owner
                    if note:
                        warnings.warn(note, RuntimeWarning, stacklevel=2)
            except Exception:
                pass

    # -- no copies -------------------------------------------------------------------------

    def __reduce_ex__(self, protocol: object) -> tuple[object, ...]:
        raise TypeError("a SecureBuffer cannot be pickled")

    def __copy__(self) -> SecureBuffer:
        raise TypeError("a SecureBuffer cannot be copied; copy its view into a new one")

    def __deepcopy__(self, memo: object) -> SecureBuffer:
        raise TypeError("a SecureBuffer cannot be copied; copy its view into a new one")
