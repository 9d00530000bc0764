"""Regressions found by the red-team reviews of the interrupt work, one per known point.

Each runs in a child (limits, signal handlers, threads that may hang) and judges through
the kernel (smaps, /proc/self/maps, VmLck) or by the exception the caller sees.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from .kernel import REPO, run_child

LIMIT = 512 * 1024


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return out


def test_a_range_that_cannot_be_relocked_is_refused_not_counted_on(lock_path: str) -> None:
    """An unlock interrupted after its munlock leaves the range unsure. If the limit is
    used up (outside memlock) before the next call, relocking it fails: a later lock() of
    those pages must raise LockLimitError, never return a Lock over unlocked pages."""
    out = _json(run_child("""
        import ctypes, gc, json, resource
        import memlock
        from tests.interrupts import Injected, interrupt_at
        from tests.kernel import PAGE, address_of, anon, page_states, vmlck

        LIMIT = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        gc.disable()  # no collection may repair the range in between
        buf = anon(32)
        pages = [address_of(buf) + i * PAGE for i in range(1, 32)]
        outer = memlock.lock(buf, 0, PAGE)      # the release below takes the Python path
        mine = memlock.lock(buf, 0, 32 * PAGE)
        try:
            with interrupt_at("_commit_released", "RELEASED"):  # right after its munlock
                mine.unlock()
        except Injected:
            pass
        libc = ctypes.CDLL(None, use_errno=True)
        other = anon((LIMIT - vmlck()) // PAGE - 8)  # spend the budget outside memlock
        libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        assert libc.mlock(address_of(other), len(other)) == 0, ctypes.get_errno()
        try:
            fresh = memlock.lock(buf, PAGE, 31 * PAGE)
            got = ["locked", fresh.locked, sorted(set(page_states(pages)))]
        except memlock.LockLimitError as exc:
            got = ["LockLimitError", exc.errno]
        print(json.dumps({"got": got}))
    """, cwd=REPO, unprivileged=True, limit=LIMIT))
    assert out["got"] in (["LockLimitError", 12], ["LockLimitError", 11]), out


def test_a_deferred_close_hands_out_no_more_views(lock_path: str) -> None:
    """close() called where memlock already holds the secrets' mutex in this thread (a
    signal handler) is deferred: wiped at once, and view() refuses from then on."""
    if lock_path == "python":
        pytest.skip("pure Python cannot tell a mutex its own thread holds (documented)")
    out = _json(run_child("""
        import ctypes, json
        import memlock
        from memlock._secrets import _pool as _securemem

        sb = memlock.SecureBuffer(32, backend="anonymous")
        with sb.view() as v:
            v[:] = b"s" * 32
            where = ctypes.addressof(ctypes.c_char.from_buffer(v))
        with _securemem.state.mutex:  # as a handler that interrupted memlock would be
            sb.close()
        wiped = ctypes.string_at(where, 32) == bytes(32)
        try:
            sb.view()
            view = "handed out"
        except ValueError:
            view = "refused"
        other = memlock.SecureBuffer(32, backend="anonymous")  # the slot comes back...
        with other.view() as v:
            v[:] = b"o" * 32
        print(json.dumps({"wiped": wiped, "closed": sb.closed, "view": view,
                          "reads_other": False}))
        other.close()
    """, cwd=REPO))
    assert out == {"wiped": True, "closed": True, "view": "refused", "reads_other": False}


def test_no_deadlock_between_the_two_mutexes(lock_path: str) -> None:
    """Thread A closes isolated secrets (secrets' mutex, then the registry's to unlock
    their pages); the main thread locks, and a signal handler there closes a secret. The
    secrets' mutex is never held while waiting for the registry's: no cycle."""
    if lock_path == "python":
        pytest.skip("pure Python: a handler that calls memlock inside memlock in the same "
                    "thread waits for itself (documented)")
    code = """
        import signal, threading, time
        import memlock

        buf = memlock.lock  # warm up the lazy imports
        from tests.kernel import PAGE, anon
        mem = anon(8)
        stop = time.monotonic() + 3
        def closer():
            while time.monotonic() < stop:
                memlock.SecureBuffer(40, isolated=True, backend="anonymous").close()
        spare = [memlock.SecureBuffer(24, backend="anonymous") for _ in range(4000)]
        def handler(signum, frame):
            if spare:
                spare.pop().close()
            signal.setitimer(signal.ITIMER_REAL, 50e-6)
        signal.signal(signal.SIGALRM, handler)
        t = threading.Thread(target=closer)
        t.start()
        signal.setitimer(signal.ITIMER_REAL, 50e-6)
        n = 0
        while time.monotonic() < stop:
            memlock.lock(mem, 0, 4 * PAGE, onfault=True).unlock()
            n += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        t.join()
        for sb in spare:
            sb.close()
        print('{"ops": %d}' % n)
    """
    try:
        out = _json(run_child(code, cwd=REPO, timeout=60))
    except subprocess.TimeoutExpired:
        pytest.fail("the two mutexes deadlocked")
    assert isinstance(out["ops"], int) and out["ops"] > 100


def test_an_interrupt_in_read_secret_reaches_the_caller_as_such(lock_path: str,
                                                                tmp_path: object) -> None:
    """memlock's own cleanup of a buffer it has not handed out never raises BufferError
    over the interrupt (a view of it may be alive in the interrupted frames)."""
    out = _json(run_child("""
        import json, os, sys, tempfile
        import memlock
        from tests.interrupts import Injected, interrupt_at

        fd, path = tempfile.mkstemp()
        os.write(fd, os.urandom(5000))
        os.close(fd)
        seen = []
        for nth in range(1, 6):
            try:
                with interrupt_at("view", "type(v)", nth):
                    memlock.read_secret(path).close()
                seen.append("completed")
            except Injected:
                seen.append("KeyboardInterrupt")
            except BaseException as exc:
                seen.append(type(exc).__name__)
        os.unlink(path)
        print(json.dumps({"seen": seen}))
    """, cwd=REPO))
    seen = out["seen"]
    assert isinstance(seen, list) and "BufferError" not in seen, seen
    assert "KeyboardInterrupt" in seen, seen


def test_an_interrupted_access_exit_is_narrowed_again(lock_path: str) -> None:
    """Ctrl-C while ``with sb.access():`` exits leaves a noaccess() secret readable only
    while the interrupted block's frame lives (in the traceback); once the exception is
    handled it is narrowed again at once, or, if memlock's mutex is busy at that moment,
    by the next secrets call or garbage collection."""
    out = _json(run_child("""
        import json
        import memlock
        from memlock._secrets import _pool as _securemem
        from tests.interrupts import Injected, interrupt_at

        def perms(address):
            with open("/proc/self/maps") as f:
                for line in f:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if lo <= address < hi:
                        return line.split()[1]

        def interrupted_exit(sb):
            try:
                with interrupt_at("access", "check_views=handed"):
                    with sb.access() as v:
                        pass
            except Injected as exc:
                return exc  # its traceback keeps the block's frame alive

        sb = memlock.SecureBuffer(64, isolated=True, backend="anonymous")
        sb.noaccess()
        base = sb._lease.home.base
        exc = interrupted_exit(sb)
        while_handled = perms(base)
        del exc
        right_after = perms(base)
        exc = interrupted_exit(sb)
        while_busy = perms(base)
        with _securemem.state.mutex:  # busy when the frame goes: left for the next call
            del exc
            busy_after = perms(base)
        other = memlock.SecureBuffer(8)  # any secrets call
        later = perms(base)
        print(json.dumps({"while_handled": while_handled, "right_after": right_after,
                          "while_busy": while_busy, "busy_after": busy_after,
                          "later": later, "protection": sb.protection}))
        other.close()
        sb.close()
    """, cwd=REPO))
    assert out == {"while_handled": "r--p", "right_after": "---p", "while_busy": "r--p",
                   "busy_after": "r--p", "later": "---p", "protection": "none"}, out
