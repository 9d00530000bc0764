"""lock_process()'s tail-latency settings, proved by the kernel and the interpreter.

``gc_freeze`` (the collector's own view: gc.get_objects, gc.get_freeze_count), ``thp``
(/proc/PID/status ``THP_enabled``, smaps ``THPeligible``), ``arena_max`` (where a thread's
malloc lands in /proc/self/maps; its page faults by getrusage), ``thread_stack`` and
:func:`memlock.explain_thread_errors` (a thread refused under MCL_FUTURE, unprivileged;
VmLck and VmFlags of its stack). Everything that changes the process runs in a child.
"""

from __future__ import annotations

import gc
import sys
import textwrap
import threading
from typing import Any

import pytest

import memlock
from memlock._thread_stacks import stack_size_setting

from .kernel import REPO, last_json, run_child
from .test_platforms_files import run_on

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")

MiB = 2**20
KiB = 2**10

PRELUDE = textwrap.dedent(r"""
    import ctypes, gc, json, mmap, re, resource, sys, threading
    import memlock
    from tests.kernel import address_of, mappings, status_bytes, vma

    def status_line(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split(":", 1)[1].strip()
        return None

    def thread_stack_vma():
        # the mapping holding this thread's stack pointer, as the kernel reports it
        with open("/proc/thread-self/syscall") as f:
            sp = int(f.read().split()[-2], 16)
        return vma(sp)

    def dumps(obj):
        return json.dumps(obj, default=sorted)

    def stack_size():
        # threading.stack_size() without an argument also resets it to 0: put it back
        size = threading.stack_size()
        threading.stack_size(size)
        return size
""")


def child(code: str, **options: Any) -> dict:
    out: dict = last_json(run_child(code, prelude=PRELUDE, **options))
    return out


# -- gc_freeze -------------------------------------------------------------------------------


def test_gc_freeze_takes_long_lived_objects_out_of_the_collector() -> None:
    r = child("""
        state = [[i, str(i)] for i in range(200_000)]  # warm-up: long-lived lists
        tracked = len(gc.get_objects())
        memlock.lock_process(gc_freeze=True)
        frozen, left = gc.get_freeze_count(), len(gc.get_objects())
        seen = []
        gc.callbacks.append(lambda phase, info: seen.append((phase, info["collected"])))
        a = []; a.append(a); del a  # new cyclic garbage is still collected
        collected = gc.collect(2)
        print(dumps({"tracked": tracked, "frozen": frozen, "left": left,
                     "collected": collected, "seen": seen, "vmlck": status_bytes("VmLck")}))
    """)
    print(f"gc_freeze: {r['tracked']} tracked objects before, {r['left']} after; "
          f"{r['frozen']} frozen")
    assert r["tracked"] > 200_000
    assert r["frozen"] >= 200_000  # the warm-up state moved to the permanent generation
    assert r["left"] < r["tracked"] // 100  # a full collection walks almost nothing now
    assert r["collected"] >= 1 and ["stop", r["collected"]] in r["seen"]
    assert r["vmlck"] > 0  # and the process was locked as before


def test_without_gc_freeze_nothing_is_frozen() -> None:
    r = child("""
        state = [[i] for i in range(50_000)]
        memlock.lock_process()
        print(dumps({"frozen": gc.get_freeze_count(), "left": len(gc.get_objects())}))
    """)
    assert r["frozen"] == 0 and r["left"] > 50_000


# -- thp ---------------------------------------------------------------------------------


def _thp_policy() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return "absent"
    return text.split("[", 1)[1].split("]", 1)[0]


THP = r"""
    def hugepage_eligible(m):
        # smaps "THPeligible: 0|1" of the mapping (not a kB field: read it here)
        start = vma(address_of(m))["start"]
        with open("/proc/self/smaps") as f:
            text = f.read()
        block = text[text.index(f"{start:x}-"):]
        return int(re.search(r"^THPeligible:\s+(\d)", block, re.M)[1])

    def madvised():
        m = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(mmap.MADV_HUGEPAGE)  # asks for huge pages (VmFlags hg)
        return m

    import subprocess
    def in_a_child():
        return subprocess.run(["grep", "THP_enabled", "/proc/self/status"],
                              capture_output=True, text=True).stdout.split()[1]

    old = madvised()
    out = {"before": status_line("THP_enabled"), "old_before": hugepage_eligible(old)}
    memlock.lock_process(thp="disable")
    new = madvised()
    out.update(after=status_line("THP_enabled"), old_after=hugepage_eligible(old),
               new_after=hugepage_eligible(new), new_flags=vma(address_of(new))["flags"],
               child=in_a_child())
    memlock.lock_process(thp="system")
    out.update(system=status_line("THP_enabled"), old_system=hugepage_eligible(old))
    memlock.lock_process(thp=None)  # leaves it as it is
    out.update(none=status_line("THP_enabled"))
    print(dumps(out))
"""


@pytest.mark.skipif(_thp_policy() in ("absent", "never"), reason="no transparent huge pages")
def test_thp_disable_is_the_kernels_and_system_clears_it() -> None:
    r = child(THP)
    if r["before"] is None:
        pytest.skip("kernel before 5.0: no THP_enabled in /proc/PID/status")
    assert r["before"] == "1" and r["old_before"] == 1  # smaps: "THPeligible: 1"
    assert r["after"] == "0"  # the kernel's per-process switch (PR_SET_THP_DISABLE)
    assert r["old_after"] == 0 and r["new_after"] == 0  # no mapping may get huge pages...
    assert "hg" in r["new_flags"]  # ...even one that asked for them
    assert r["child"] == "0"  # inherited by children (and kept across exec)
    assert r["system"] == "1" and r["old_system"] == 1
    assert r["none"] == "1"


# -- arena_max -------------------------------------------------------------------------------

ARENAS = """
    def arena_mappings():
        # glibc's thread arenas: anonymous mappings at 64 MiB-aligned addresses
        return sorted(m["start"] for m in mappings()
                      if m["path"] == "" and m["start"] % (64 << 20) == 0)

    SETUP
    heap = mappings(path="[heap]")[0]
    before = arena_mappings()
    addrs, faults, go = [], [], threading.Event()

    def worker():
        per = []
        for i in range(6):  # a few MiB per period, as a worker of a real-time loop
            with memlock.page_faults() as pf:
                b = bytearray(4 << 20)
                b[::4096] = b"\\1" * (len(b) // 4096)
                addrs.append(address_of(b))
                del b
            per.append(pf.minor + pf.major)
        faults.append(per)
        go.wait()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    while len(faults) < 3:
        threading.Event().wait(0.01)
    heap = mappings(path="[heap]")[0]
    print(dumps({"new_arenas": [a for a in arena_mappings() if a not in before],
                 "in_heap": [heap["start"] <= a < heap["end"] for a in addrs],
                 "faults": faults}))
    go.set()
    for t in threads:
        t.join()
"""


def test_arena_max_1_threads_allocate_from_the_prefaulted_main_heap() -> None:
    shared = child(ARENAS.replace(
        "SETUP", "memlock.lock_process(prefault_heap=64 << 20, arena_max=1)"))
    own = child(ARENAS.replace("SETUP", "memlock.lock_process(prefault_heap=64 << 20)"))
    print(f"worker faults per period: arena_max=1 {shared['faults']}; default {own['faults']}")
    # Without it, each thread gets an arena of its own: a new 64 MiB-aligned mapping...
    assert len(own["new_arenas"]) == 3 and not any(own["in_heap"])
    # ...whose memory each faults in when it first allocates (~1000 faults for 4 MiB)
    assert all(per[0] > 4 * MiB // 4096 // 2 for per in own["faults"])
    # With arena_max=1 they share the main arena: their blocks lie in the brk heap.
    assert shared["new_arenas"] == [] and all(shared["in_heap"])
    assert all(per == [0] * 6 for per in shared["faults"])  # prefaulted: not one fault


# -- thread stacks under MCL_FUTURE ----------------------------------------------------------

THREAD_STACKS = """
    memlock.lock_all(current=False, future=True)  # VmSize is over the limit: future only
    def start(stack=None):
        out = {}
        def run():
            out["vmlck"] = status_bytes("VmLck")
            out["stack"] = thread_stack_vma()
        t = threading.Thread(target=run)
        try:
            t.start()
        except RuntimeError as e:
            return {"error": str(e), "type": type(e).__name__}
        t.join()
        return out
    bare = start()
    memlock.explain_thread_errors()
    explained = start()
    threading.stack_size(16 << 20)
    explained_set = start()
    kept = stack_size()  # explaining did not reset the size the program set
    threading.stack_size(256 << 10)
    small = start()
    memlock.explain_thread_errors(False)
    restored = threading.Thread.start is memlock._thread_stacks._wrapped
    print(dumps({"bare": bare, "explained": explained, "small": small, "restored": restored,
                 "explained_set": explained_set, "kept": kept,
                 "limit": resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]}))
"""


def test_a_thread_refused_under_mcl_future_is_explained_unprivileged() -> None:
    r = child(THREAD_STACKS, unprivileged=True, limit=8 * MiB)
    assert r["limit"] == 8 * MiB
    assert r["bare"] == {"error": "can't start new thread", "type": "RuntimeError"}
    msg = r["explained"]["error"]
    assert r["explained"]["type"] == "RuntimeError" and msg.startswith("can't start new thread: ")
    assert "8.0 MiB (8388608 bytes, the default)" in msg, msg  # the stack size...
    assert "RLIMIT_MEMLOCK 8.0 MiB (8388608 bytes)" in msg, msg  # ...the limit...
    assert "room for 0 threads of this stack size" in msg, msg
    assert "threading.stack_size(262144)" in msg and "thread_stack=" in msg, msg  # ...the fix
    assert "16.0 MiB (16777216 bytes, threading.stack_size())" in r["explained_set"]["error"]
    assert r["kept"] == 16 * MiB
    # the fix works: a 256 KiB stack fits, and the kernel shows it locked
    small = r["small"]
    assert "error" not in small, small
    assert "lo" in small["stack"]["flags"]
    assert small["stack"]["end"] - small["stack"]["start"] <= 256 * KiB + 8 * KiB
    assert 256 * KiB <= small["vmlck"] < 8 * MiB
    assert r["restored"]


def test_explain_thread_errors_leaves_other_failures_alone() -> None:
    # Privileged, nothing is refused for the lock limit: a start that fails for another
    # reason (a stack larger than the address space allows) keeps its own error.
    r = child("""
        memlock.explain_thread_errors()
        resource.setrlimit(resource.RLIMIT_AS, (1 << 34, resource.RLIM_INFINITY))
        threading.stack_size(1 << 35)
        try:
            threading.Thread(target=print).start()
            err = None
        except RuntimeError as e:
            err = str(e)
        print(dumps({"err": err}))
    """)
    assert r["err"] == "can't start new thread"


def test_explain_thread_errors_leaves_misuse_alone_under_the_limit() -> None:
    # Unprivileged under MCL_FUTURE with the next stack over the limit: starting a thread
    # twice is the program's mistake, not the stack's, and keeps threading's own message.
    r = child("""
        threading.stack_size(256 << 10)
        memlock.lock_all(current=False, future=True)
        memlock.explain_thread_errors()
        t = threading.Thread(target=print); t.start(); t.join()
        threading.stack_size(16 << 20)  # a new thread would be refused now
        errors = []
        for thread in (t, threading.Thread(target=print)):
            try:
                thread.start()
            except RuntimeError as e:
                errors.append(str(e))
        print(dumps({"errors": errors}))
    """, unprivileged=True, limit=8 * MiB)
    assert r["errors"][0] == "threads can only be started once", r
    assert r["errors"][1].startswith("can't start new thread: the new thread's stack"), r


def test_lock_process_thread_stack_sets_the_stack_of_later_threads() -> None:
    code = """
        memlock.lock_process(arena_max=1, SETUP)  # arena_max: no 64 MiB arena in VmLck
        out = {"stack_size": stack_size(), "before": status_bytes("VmLck")}
        def run():
            out["in_thread"] = status_bytes("VmLck")
            out["stack"] = thread_stack_vma()
        t = threading.Thread(target=run); t.start(); t.join()
        print(dumps(out))
    """
    small = child(code.replace("SETUP", "thread_stack=256 << 10"))
    default = child(code.replace("SETUP", "thread_stack=None"))
    grew = small["in_thread"] - small["before"]
    print(f"VmLck growth for one thread: {grew} bytes with thread_stack=256 KiB, "
          f"{default['in_thread'] - default['before']} with the default")
    assert small["stack_size"] == 256 * KiB and default["stack_size"] == 0
    stack = small["stack"]
    assert "lo" in stack["flags"] and stack["Locked"] == stack["Rss"]  # locked, populated
    assert 256 * KiB <= grew < 1 * MiB  # its stack (and guard page), not 8 MiB
    assert default["in_thread"] - default["before"] >= 8 * MiB


def test_explain_thread_errors_refuses_a_non_bool() -> None:
    with pytest.raises(TypeError, match="enable must be a bool"):
        memlock.explain_thread_errors("yes")  # type: ignore[arg-type]
    assert threading.Thread.start.__module__ == "threading"


def test_explain_thread_errors_enabled_again_under_another_wrapper() -> None:
    # A tracing library wraps Thread.start after memlock did (calling memlock's through);
    # enabling again (idempotent, documented) must not wrap that wrapper: a loop.
    r = child("""
        memlock.explain_thread_errors()
        inner = threading.Thread.start
        def traced(self):
            out["traced"] += 1
            return inner(self)
        threading.Thread.start = traced
        out = {"traced": 0}
        for enable in (True, False, True):
            memlock.explain_thread_errors(enable)
            try:
                t = threading.Thread(target=print); t.start(); t.join()
            except RecursionError:
                out["error"] = enable
        out["still_traced"] = threading.Thread.start is traced
        print(dumps(out))
    """)
    assert r == {"traced": 3, "still_traced": True}, r


# -- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"gc_freeze": 1}, TypeError, "gc_freeze must be a bool"),
        ({"thp": "never"}, ValueError, "thp must be None, 'disable' or 'system'"),
        ({"thp": True}, TypeError, "thp must be None or a str"),
        ({"arena_max": 0}, ValueError, "arena_max must be None or from 1"),
        ({"arena_max": 2**31}, ValueError, "arena_max must be None or from 1"),
        ({"arena_max": True}, TypeError, "arena_max must be an integer"),
        ({"arena_max": 1.0}, TypeError, "arena_max must be an integer"),
        ({"thread_stack": 1000}, ValueError, "thread_stack must be 0 .* at least 32768"),
        ({"thread_stack": -1}, ValueError, "thread_stack must be >= 0"),
        ({"thread_stack": "1M"}, TypeError, "thread_stack must be an integer"),
        # a bad argument after good ones: still nothing changes
        ({"gc_freeze": True, "thp": "disable", "thread_stack": 1 << 20, "arena_max": -1},
         ValueError, "arena_max must be >= 0"),
    ],
)
def test_bad_arguments_change_nothing(kwargs: dict, exc: type, match: str) -> None:
    def state() -> tuple[Any, ...]:
        with open("/proc/self/status") as f:
            thp = [ln for ln in f if ln.startswith("THP_enabled")]
        return (memlock.limits().locked_bytes, gc.get_freeze_count(), stack_size_setting(),
                thp)

    before = state()
    with pytest.raises(exc, match=match):
        memlock.lock_process(**kwargs)
    assert state() == before


# -- other systems (simulated) ---------------------------------------------------------------

SIMULATED = """
out = {}
try:
    memlock.lock_process(thp="disable")
except memlock.UnsupportedOperation as exc:
    out["thp"] = str(exc)
out["calls_before"] = calls()
import gc
try:
    memlock.lock_process(arena_max=1, gc_freeze=True)
    out["frozen"] = gc.get_freeze_count() > 0
    memlock.unlock_all()
except memlock.UnsupportedOperation as exc:
    out["lock_process"] = str(exc)
out["calls"] = calls()
print(json.dumps(out))
"""


@pytest.mark.parametrize("os_name", ["freebsd", "darwin", "sunos"])
def test_tail_settings_on_the_simulated_os(os_name: str) -> None:
    r = run_on(os_name, SIMULATED)
    assert r["calls_before"] == [], r  # refused before any call
    assert "mallopt" not in r["calls"], r  # arena_max: glibc only, nothing to call
    if os_name == "darwin":  # no mlockall: that comes first
        assert "not implemented on macOS" in str(r["thp"]), r
        assert "not implemented on macOS" in str(r["lock_process"]), r
    else:
        assert f"thp='disable' is not available on {os_name}" in str(r["thp"]), r
        assert r["frozen"] is True and r["calls"] == ["mlockall", "munlockall"], r


# -- interrupted anywhere ----------------------------------------------------------------------


def test_lock_process_interrupted_anywhere_leaves_a_prefix_of_its_steps_done() -> None:
    # The documented state: the steps run in order (thread stack size, THP, malloc,
    # locking, gc freeze); an interrupt leaves those before it done and none after.
    code = f"""
        import sys; sys.path.insert(0, {str(REPO)!r})
        import gc, threading
        import memlock
        from memlock._platform import BACKEND
        from tests.interrupts import every_interrupt
        from tests.kernel import vmlck

        def thp_disabled():
            with open("/proc/self/status") as f:
                return any(ln.split() == ["THP_enabled:", "0"] for ln in f)

        seen = []

        def op():
            memlock.lock_process(gc_freeze=True, thp="disable", arena_max=1,
                                 thread_stack=1 << 20)

        def undo(n):
            seen.append([threading.stack_size(0) == 1 << 20, thp_disabled(), vmlck() > 0,
                         gc.get_freeze_count() > 0])
            memlock.unlock_all(); gc.unfreeze()
            BACKEND.set_thp_disabled(False)

        def check(n, where):
            steps = seen[-1]
            assert steps == sorted(steps, reverse=True), (n, where, steps)  # a prefix

        n = every_interrupt(op, undo, check)
        assert seen[-1] == [True] * 4, seen[-1]  # the last run completed every step
        states = {{tuple(s) for s in seen}}
        print("events", n, "states", sorted(states))
        assert len(states) == 5, states  # interrupted between each pair of steps
    """
    proc = run_child(code, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(proc.stdout.strip().splitlines()[-1])
