"""The optional C fast path of lock()/unlock() (memlock/_speedups.c), judged by smaps.

The lock and process tests run through both paths already (the ``lock_path`` fixture);
these check what is particular to the C one: that it is built, that it takes exactly the
common case, and that it shares the registry's mutex with the Python path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading

import pytest

import memlock
from memlock import _lock
from memlock._lock import REGISTRY

from .conftest import c_path_built, require_c_path
from .kernel import PAGE, REPO, address_of, anon, page_state, page_states, run_child, vmlck


def test_c_fast_path_is_built_where_it_can_be() -> None:
    headers = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        assert not c_path_built()  # setup.py builds no C for free-threaded Pythons
    elif shutil.which("cc") or shutil.which("gcc"):
        assert c_path_built() or not headers, "a compiler and Python.h, but no _speedups"


def test_c_fast_path_takes_fresh_pages_and_hands_the_rest_to_python(lock_path: str) -> None:
    if lock_path == "python":
        assert _lock._fast_lock is None
        return
    fast = _lock._fast_lock
    assert fast is not None
    m = anon(4)
    addr = address_of(m)
    held = fast(m, PAGE, 2 * PAGE)
    assert isinstance(held, memlock.Lock) and held.locked
    assert (held.address, held.nbytes) == (addr + PAGE, 2 * PAGE)
    assert page_state(addr + PAGE) == "full" and page_state(addr) == "none"
    # Not the fast case: nested pages, other argument types, read-only strides, onfault.
    assert fast(m, 2 * PAGE, PAGE) is None
    assert fast(m, True, None) is None
    assert fast(m, 0, 10.0) is None
    assert fast(memoryview(m)[::2], 0, None) is None
    assert fast(m, 5 * PAGE, None) is None  # out of range: Python raises the error
    assert fast(object(), 0, None) is None
    assert REGISTRY.counts(addr, addr + 4 * PAGE) == [
        (addr, addr + PAGE, 0, 0), (addr + PAGE, addr + 3 * PAGE, 1, 0),
        (addr + 3 * PAGE, addr + 4 * PAGE, 0, 0),
    ]
    held.unlock()
    assert page_state(addr + PAGE) == "none"
    assert REGISTRY.counts(addr, addr + 4 * PAGE) == [(addr, addr + 4 * PAGE, 0, 0)]


def test_c_and_python_paths_share_one_registry_across_threads(lock_path: str) -> None:
    """Threads lock and unlock their own pages (the fast path) while another keeps locking
    a range that covers them all (the general path, which releases the GIL in each system
    call): no page is ever unlocked under a lock, and the counts end at zero."""
    m = anon(16)
    addr = address_of(m)
    before = vmlck()
    base = memlock.lock(m, 0, PAGE)  # keeps the covering range off the fast path
    stop = threading.Event()
    errors: list[BaseException] = []

    def own_page(k: int) -> None:
        try:
            for _ in range(3000):
                with memlock.lock(m, k * PAGE, PAGE):
                    pass
        except BaseException as exc:
            errors.append(exc)

    def covering() -> None:
        try:
            n = 0
            while not stop.is_set():
                with memlock.lock(m, 0, 8 * PAGE):
                    n += 1
                    if n % 8 == 0:  # reading smaps is slow: sample it
                        assert set(page_states([addr + k * PAGE for k in range(8)])) == {"full"}
        except BaseException as exc:
            errors.append(exc)

    cover = threading.Thread(target=covering)
    cover.start()
    workers = [threading.Thread(target=own_page, args=(k,)) for k in (2, 4, 6, 9)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    cover.join()
    base.unlock()
    assert not errors, errors
    assert vmlck() == before
    assert all(page_state(addr + i * PAGE) == "none" for i in range(16))
    assert REGISTRY.counts(addr, addr + 16 * PAGE) == [(addr, addr + 16 * PAGE, 0, 0)]


def test_c_fast_path_compiles_without_warnings(tmp_path: os.PathLike[str]) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    include = sysconfig.get_paths()["include"]
    if cc is None or not os.path.exists(os.path.join(include, "Python.h")):
        pytest.skip("no C compiler or Python headers here")
    out = os.path.join(tmp_path, "speedups.so")
    proc = subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Werror",
         "-fPIC", "-shared", f"-I{include}", "-o", out,
         str(REPO / "src" / "memlock" / "_speedups.c")],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_c_fast_path_keeps_no_reference_on_the_way_back_to_python() -> None:
    require_c_path()
    was_c = _lock._fast_lock is not None
    _lock._use_c(True)
    fast = _lock._fast_lock
    assert fast is not None
    m = anon(4)
    outer = memlock.lock(m)
    try:
        for case in ((m, 5 * PAGE, None), (m, 0, PAGE), (m, 0, 0), (object(), 0, None)):
            nones, blocks = sys.getrefcount(None), sys.getallocatedblocks()
            for _ in range(20_000):
                assert fast(*case) is None
            assert abs(sys.getrefcount(None) - nones) < 100, case
            assert abs(sys.getallocatedblocks() - blocks) < 100, case
    finally:
        outer.unlock()
        _lock._use_c(was_c)


def test_uninitialised_c_fast_path_raises_instead_of_crashing() -> None:
    if not c_path_built():
        pytest.skip("the C fast path is not built here (no C compiler or Python headers)")
    proc = run_child("""
        from memlock._speedups import FastPath
        from memlock._lock import REGISTRY
        bare = FastPath.__new__(FastPath)
        for call in (lambda: bare.release(object()), lambda: bare.lock(b"x", 0, None)):
            try:
                call()
            except TypeError as e:
                print(e)
        class Other:
            pass
        for cls in (type, Other):  # Locks are made from their slots: only Lock will do
            try:
                FastPath(REGISTRY, cls, (0, 0), (1, 0), 4096, 1 << 26)
            except TypeError as e:
                print(e)
    """)
    assert proc.returncode == 0, proc.stderr  # a crash is a signal: -11, -8
    assert proc.stdout.count("__init__") == 2, proc.stdout
    assert proc.stdout.count("must be memlock.Lock") == 2, proc.stdout


# A child whose buffer's pages are served by a Python thread through userfaultfd: each page
# fault taken by mlock needs that thread to run, so lock() must not hold the GIL meanwhile.
# With SIGINT=1, the thread also interrupts the main thread at the first fault, while its
# mlock is in the kernel.
USERFAULTFD_CHILD = """
import ctypes, gc, mmap, os, signal, struct, sys, threading
import memlock
from memlock._lock import REGISTRY
from tests.kernel import PAGE, page_state
NPAGES, SIGINT = int(sys.argv[1]), sys.argv[2] == "1"
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
uffd = libc.syscall(323, os.O_CLOEXEC)  # userfaultfd(2), x86_64
if uffd < 0:
    print("SKIP userfaultfd:", os.strerror(ctypes.get_errno())); sys.exit(0)
assert libc.ioctl(uffd, 0xC018AA3F, struct.pack("QQQ", 0xAA, 0, 0)) == 0  # UFFDIO_API
m = mmap.mmap(-1, NPAGES * PAGE)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
register = struct.pack("QQQQ", addr, NPAGES * PAGE, 1, 0)  # UFFDIO_REGISTER, MODE_MISSING
assert libc.ioctl(uffd, 0xC020AA00, register) == 0
page = ctypes.create_string_buffer(b"A" * PAGE)
main = threading.main_thread().ident
served = []
def serve():
    while True:
        fault = struct.unpack_from("Q", os.read(uffd, 32), 16)[0] & ~(PAGE - 1)
        if SIGINT and not served:
            signal.pthread_kill(main, signal.SIGINT)
        served.append(fault)  # needs the GIL
        copy = struct.pack("QQQQq", fault, ctypes.addressof(page), PAGE, 0, 0)
        libc.ioctl(uffd, 0xC028AA03, copy)  # UFFDIO_COPY
threading.Thread(target=serve, daemon=True).start()
try:
    with memlock.lock(m) as held:
        print("locked", held.nbytes, page_state(addr), m[:1] == b"A")
except KeyboardInterrupt:
    print("interrupted")
gc.collect()
print("after", REGISTRY.counts(addr, addr + NPAGES * PAGE)[0][2], page_state(addr), len(served))
"""


@pytest.mark.parametrize("npages", [4, 16])
def test_lock_runs_while_a_python_thread_serves_its_page_faults(
        lock_path: str, npages: int) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the userfaultfd syscall number used here is x86_64's")
    proc = run_child(USERFAULTFD_CHILD, args=[str(npages), "0"], timeout=30)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith("SKIP"):
        pytest.skip(proc.stdout.strip())
    assert proc.stdout.split("\n")[:2] == [
        f"locked {npages * PAGE} full True", f"after 0 none {npages}"]


def test_interrupt_while_mlock_is_in_the_kernel_leaves_nothing_locked(lock_path: str) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the userfaultfd syscall number used here is x86_64's")
    proc = run_child(USERFAULTFD_CHILD, args=["4", "1"], timeout=30)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith("SKIP"):
        pytest.skip(proc.stdout.strip())
    lines = proc.stdout.split("\n")
    assert lines[0] == "interrupted", proc.stdout
    assert lines[1].startswith("after 0 none "), proc.stdout  # not counted, not locked


def test_the_c_mutex_behaves_like_threading_lock() -> None:
    require_c_path()
    assert type(REGISTRY._mutex) is _lock._speedups.Mutex
    proc = run_child("""
        import signal, threading, time
        from memlock._speedups import Mutex
        m = Mutex()
        with m:
            print(m.locked(), m.acquire(False), m.acquire(blocking=False))
        print(m.locked(), m.acquire(), m.locked())
        m.release()
        try:
            m.release()
        except RuntimeError:
            print("unlocked release refused")
        # A waiter gets the mutex once another thread gives it up...
        m.acquire()
        got = []
        t = threading.Thread(target=lambda: got.append(m.acquire()))
        t.start(); time.sleep(0.2); print("waiting", got); m.release(); t.join()
        print("then", got)
        # ...and a signal handler runs while the main thread waits (Ctrl-C works).
        def alarm(*_):
            raise TimeoutError("interrupted")
        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        try:
            m.acquire()
        except TimeoutError as e:
            print(e)
    """, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:6] == [
        "True False False", "False True True", "unlocked release refused",
        "waiting []", "then [True]", "interrupted"], proc.stdout


def test_memlock_pure_python_keeps_every_c_part_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMLOCK_PURE_PYTHON", "1")
    proc = run_child("""
        import sys
        import memlock
        from memlock import _lock
        with memlock.lock(bytearray(10000)):
            pass
        print(type(_lock.REGISTRY._mutex).__module__, _lock._use_c(True),
              "memlock._speedups" in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["_thread", "False", "False"]


def test_interrupt_as_a_failed_mlock_returns_leaves_nothing_locked(
        lock_path: str, tmp_path: os.PathLike[str]) -> None:
    """mlock fails after locking part of the range (the last page of the mapping lies past
    the end of its file); an asynchronous exception raised meanwhile must not stop the
    undo: nothing counted, nothing locked."""
    path = os.path.join(tmp_path, "short")
    proc = run_child("""
        import ctypes, os, sys, threading, time
        import memlock
        from memlock._lock import REGISTRY
        from tests.kernel import PAGE, page_state
        N = 8192  # 32 MiB: under the C fast path's 64 MiB
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        os.ftruncate(fd, (N - 1) * PAGE)
        base = libc.mmap(None, N * PAGE, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        buf = (ctypes.c_char * (N * PAGE)).from_address(base)
        main = threading.get_ident()
        def interrupt():
            deadline = time.monotonic() + 10
            while not REGISTRY._mutex.locked() and time.monotonic() < deadline:
                pass
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main),
                                                       ctypes.py_object(KeyboardInterrupt))
        t = threading.Thread(target=interrupt)
        t.start()
        try:
            memlock.lock(buf)
        except BaseException as e:
            print(type(e).__name__)
        t.join()
        try:
            time.sleep(0.01)  # the interrupt, if it has not fired yet
        except KeyboardInterrupt:
            pass
        print(page_state(base), REGISTRY.counts(base, base + N * PAGE)[0][2:])
    """, args=[path], timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] in ("KeyboardInterrupt", "MemlockError"), proc.stdout
    assert lines[1] == "none (0, 0)", proc.stdout


def test_try_call_never_waits_and_always_gives_the_mutex_back() -> None:
    """Finalizers take the registry's and the secrets' mutex only through try_call: in C,
    so no signal handler runs between taking and giving back, and never a wait."""
    require_c_path()
    import threading

    from memlock import _speedups

    m = _speedups.Mutex()
    calls: list[int] = []
    assert _speedups.try_call(m, calls.append, 1) is True and not m.locked()
    held, go = threading.Event(), threading.Event()

    def holder() -> None:
        with m:
            held.set()
            go.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    assert _speedups.try_call(m, calls.append, 2) is False  # busy: at once, not a wait
    go.set()
    t.join()

    def boom() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _speedups.try_call(m, boom)
    assert not m.locked() and calls == [1]
    assert type(REGISTRY._mutex) is _speedups.Mutex
    from memlock._secrets import _pool as _securemem

    assert type(_securemem.state.mutex) is _speedups.Mutex
