"""Whole-process behaviour, each in a child: fork, exec, lock_all/unlock_all."""

from __future__ import annotations

from typing import Any

import pytest

import memlock

from .kernel import CHILD_PRELUDE, output, run_child

# Every test here runs through lock()'s C fast path and through the pure-Python path.
pytestmark = pytest.mark.usefixtures("lock_path")


def child(code: str, **options: Any) -> str:
    """Run CHILD_PRELUDE + code in a child; its stdout, once it exited 0."""
    return output(run_child(code, prelude=CHILD_PRELUDE, **options))


# -- fork and exec -----------------------------------------------------------------------


def test_fork_child_inherits_no_locks_and_can_lock_anew() -> None:
    out = child("""
        m = anon(2); addr = address_of(m)
        lk = memlock.lock(m)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = (not lk.locked and page_state(addr) == "none" and vmlck() == 0)
            lk.unlock()  # a no-op in the child: no munlock, no error
            new = memlock.lock(m, PAGE)
            ok = ok and page_state(addr + PAGE) == "full" and new.locked
            new.unlock()
            ok = ok and page_state(addr + PAGE) == "none"
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.read(r, 1).decode(), lk.locked, page_state(addr), page_state(addr + PAGE))
        lk.unlock()
        print(page_state(addr))
    """)
    assert out.split() == ["1", "True", "full", "full", "none"]


def test_exec_clears_locks() -> None:
    out = child("""
        m = anon(4)
        lk = memlock.lock(m)
        assert vmlck() == 4 * PAGE
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-c",
                 "from tests.kernel import vmlck; print('after-exec', vmlck())"])
    """)
    assert out.split() == ["after-exec", "0"]


# -- lock_all / unlock_all ---------------------------------------------------------------


def test_lock_all_current_and_future() -> None:
    out = child("""
        memlock.lock_all()
        size = status_bytes("VmSize")
        fresh = mmap.mmap(-1, 64 * PAGE, flags=mmap.MAP_PRIVATE)  # locked by MCL_FUTURE
        print(page_state(address_of(fresh)), vmlck() >= size - 256 * 1024)
        memlock.unlock_all()
        print(page_state(address_of(fresh)), vmlck())
    """)
    assert out.split() == ["full", "True", "none", "0"]


def test_unlock_all_keeps_live_locks_and_release_under_lock_all_keeps_pages() -> None:
    out = child("""
        a, b = anon(2), anon(2)
        la = memlock.lock(a)
        memlock.lock_all(current=True, future=False)
        lb = memlock.lock(b)
        lb.unlock()  # lock_all still holds b's pages: must stay locked
        print(page_state(address_of(b)))
        memlock.unlock_all()
        print(page_state(address_of(a)), page_state(address_of(b)), vmlck() == 2 * PAGE)
        la.unlock()
        print(vmlck())
    """)
    assert out.split() == ["full", "full", "none", "True", "0"]


def test_lock_all_onfault() -> None:
    out = child("""
        memlock.lock_all(current=False, future=True, onfault=True)
        fresh = mmap.mmap(-1, 16 * PAGE, flags=mmap.MAP_PRIVATE)
        addr = address_of(fresh)
        print(page_state(addr), vma(addr)["Locked"])
        fresh[0] = 1
        print(vma(addr)["Locked"] == PAGE)
        memlock.unlock_all()
    """)
    assert out.split() == ["onfault", "0", "True"]


def test_lock_all_needs_current_or_future() -> None:
    with pytest.raises(ValueError):
        memlock.lock_all(current=False, future=False)


# -- lock_all without CAP_IPC_LOCK (limits: test_limits.py) ------------------------------


def test_unprivileged_lock_all_names_vmsize_and_the_limit() -> None:
    out = child("""
        try:
            memlock.lock_all()
        except memlock.LockLimitError as e:
            print("VmSize" in str(e), e.limit, e.requested > e.limit, vmlck())
    """, unprivileged=True, limit=8 * 2**20)
    assert out.split() == ["True", str(8 * 2**20), "True", "0"]


# -- finalizers and partial lock_all (regressions found in review) ---------------------


def test_lock_collected_inside_a_registry_call_cannot_deadlock() -> None:
    # A Lock in a reference cycle is finalized by the GC, which can run inside any
    # allocation, including one made while this thread holds the registry's mutex.
    out = child("""
        import faulthandler, gc, threading, warnings
        warnings.simplefilter("ignore")
        faulthandler.dump_traceback_later(40, exit=True)
        m = anon(64)
        keep = memlock.lock(m, 0, 8 * PAGE)
        stop = False
        def producer():
            class Holder: pass
            while not stop:
                h = Holder(); h.self = h; h.lk = memlock.lock(m, 20 * PAGE, PAGE); del h
        t = threading.Thread(target=producer, daemon=True); t.start()
        for i in range(40000):
            memlock.lock(m, 0, 16 * PAGE).unlock()
        stop = True
        t.join()
        gc.collect()
        memlock.lock(m, 0, PAGE).unlock()  # drains what finalizers queued
        print("done", page_state(address_of(m) + 20 * PAGE), page_state(address_of(m)))
    """, timeout=90)
    assert out.split() == ["done", "none", "full"]


def test_lock_all_future_only_does_not_keep_older_memory_locked() -> None:
    out = child("""
        m = anon(16)                      # mapped before lock_all: not kept by MCL_FUTURE
        memlock.lock_all(current=False, future=True)
        fresh = mmap.mmap(-1, 16 * PAGE, flags=mmap.MAP_PRIVATE)   # kept by MCL_FUTURE
        memlock.lock(m).unlock()
        memlock.lock(fresh).unlock()
        print(page_state(address_of(m)), page_state(address_of(fresh)))
    """)
    assert out.split() == ["none", "full"]


def test_lock_all_current_only_keeps_older_memory_only() -> None:
    out = child("""
        m = anon(16)                      # kept by MCL_CURRENT
        memlock.lock_all(current=True, future=False)
        fresh = mmap.mmap(-1, 16 * PAGE, flags=mmap.MAP_PRIVATE)   # not kept
        memlock.lock(m).unlock()
        memlock.lock(fresh).unlock()
        print(page_state(address_of(m)), page_state(address_of(fresh)))
    """)
    assert out.split() == ["full", "none"]


def test_failed_lock_under_future_only_lock_all_is_still_all_or_nothing() -> None:
    out = child("""
        import ctypes
        m = anon(8); a = address_of(m)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        assert libc.mprotect(a + 4 * PAGE, PAGE, 0) == 0
        memlock.lock_all(current=False, future=True)
        held = memlock.lock(m, 0, PAGE)
        try:
            memlock.lock(m)
        except memlock.MemlockError:
            pass
        print(" ".join(page_states([a + i * PAGE for i in range(8)])))
    """)
    # Every page of the range, not VmLck: under MCL_FUTURE the interpreter's own new
    # mappings (a pymalloc arena for the list above) are locked too, which VmLck counts.
    assert out.split() == ["full"] + ["none"] * 7
