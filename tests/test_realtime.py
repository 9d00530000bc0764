"""lock_process() and page_faults(): proved with the kernel's own accounting.

Everything that calls mlockall runs in a child process. Facts come from getrusage fault
counters, /proc/self/smaps (``lo``/``lf`` in VmFlags, ``Locked:``) and /proc/self/status.
"""

from __future__ import annotations

import mmap
import re
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import memlock
from memlock._realtime import PageFaults, find_mapping, parse_syscall_sp

from .kernel import PAGE, last_json, run_child, run_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")

MiB = 2**20

# Helpers pasted into every child: the kernel's view of the child itself.
PRELUDE = textwrap.dedent(r"""
    import ctypes, json, re, resource, sys
    import memlock
    from tests.kernel import address_of, mappings, status_bytes, vma

    def mapping(path):
        return mappings(path=path)[0]

    def dumps(obj):
        return json.dumps(obj, default=sorted)  # sets (VmFlags) as sorted lists

    def loop(n):
        # allocate, touch (write one byte per page) and free a 64 MiB block, n times
        per, addrs = [], set()
        for _ in range(n):
            with memlock.page_faults() as pf:
                b = bytearray(64 << 20)
                b[::4096] = b"\1" * (len(b) // 4096)
                addrs.add(address_of(b))
                del b
            per.append((pf.minor, pf.major))
        return per, addrs
""")


def child(code: str, **options: Any) -> dict:
    """Run ``code`` (after PRELUDE) in a fresh interpreter; it prints one JSON line.

    ``options`` are those of tests.kernel.run_cmd (unprivileged, prefix, ...).
    """
    out: dict = last_json(run_child(code, prelude=PRELUDE, **options))
    return out


# -- the hot loop ---------------------------------------------------------------------------


def test_hot_loop_faults_without_memlock() -> None:
    # glibc maps a 64 MiB block fresh each time (above its mmap threshold) and unmaps it
    # on free, so every iteration faults in all 16384 pages again. 20 iterations suffice.
    r = child("""
        per, addrs = loop(20)
        heap = mapping("[heap]")
        in_heap = [heap["start"] <= a < heap["end"] for a in addrs]
        print(dumps({"per": per, "in_heap": in_heap}))
    """)
    minors = [m for m, _ in r["per"]]
    print(f"without memlock: minor faults per iteration {min(minors)}..{max(minors)}")
    assert min(minors) > 64 * MiB // PAGE // 2  # thousands: ~16385 here
    assert not any(r["in_heap"])  # mmap'd, not from the heap


def test_hot_loop_takes_no_faults_after_lock_process() -> None:
    r = child("""
        memlock.lock_process(prefault_heap=128 << 20)
        heap = mapping("[heap]")
        with memlock.page_faults() as total:
            per, addrs = loop(200)
        heap_after = mapping("[heap]")
        print(dumps({
            "total": [total.minor, total.major], "per": per,
            "heap": heap, "heap_after": heap_after,
            "in_heap": [heap["start"] <= a < heap["end"] for a in addrs],
            "vmlck": status_bytes("VmLck"), "vmsize": status_bytes("VmSize"),
        }))
    """)
    print(f"after lock_process(prefault_heap=128 MiB): 200 iterations took "
          f"{r['total'][0]} minor, {r['total'][1]} major faults")
    assert r["total"] == [0, 0]
    assert all(p == [0, 0] for p in r["per"])
    heap = r["heap"]
    assert heap["end"] - heap["start"] >= 128 * MiB  # the prefault grew the brk heap...
    assert "lo" in heap["flags"] and heap["Locked"] == heap["Rss"] >= 128 * MiB  # ...locked
    assert r["heap_after"]["end"] == heap["end"]  # and freeing never trimmed it
    assert all(r["in_heap"])  # the 64 MiB blocks came from that heap, not from mmap
    assert r["vmlck"] >= r["vmsize"] - 64 * 1024  # all but [vvar]/[vdso] is locked


def test_without_tune_malloc_the_loop_still_faults() -> None:
    # The allocator tuning is what makes the difference, not mlockall alone: freed blocks
    # go back to the kernel and come back as fresh (locked, populated = faulted) mappings.
    r = child("""
        memlock.lock_process(prefault_heap=128 << 20, tune_malloc=False)
        per, _ = loop(5)
        print(dumps({"per": per}))
    """)
    assert min(m for m, _ in r["per"]) > 64 * MiB // PAGE // 2


def test_lock_process_locks_everything_and_unlock_all_undoes_it() -> None:
    r = child("""
        memlock.lock_process()
        special = {"[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"}
        unlocked = [m["path"] for m in mappings()
                    if "lo" not in m["flags"] and m["path"] not in special]
        locked = (status_bytes("VmLck"), status_bytes("VmSize"))
        b = bytearray(32 << 20)  # MCL_FUTURE: new memory is locked too
        after_alloc = status_bytes("VmLck") - locked[0]
        where = vma(address_of(b))
        memlock.unlock_all()
        print(dumps({"unlocked": unlocked, "locked": locked, "after_alloc": after_alloc,
                          "where": where,
                          "after_unlock": status_bytes("VmLck")}))
    """)
    assert r["unlocked"] == []
    vmlck, vmsize = r["locked"]
    assert vmsize - 64 * 1024 <= vmlck <= vmsize
    # the new block (part of it may reuse free heap) is locked and resident
    assert r["after_alloc"] >= 24 * MiB
    assert "lo" in r["where"]["flags"] and r["where"]["Locked"] == r["where"]["Rss"]
    assert r["after_unlock"] == 0


def test_future_false_and_onfault() -> None:
    r = child("""
        memlock.lock_process(future=False, prefault_heap=16 << 20)
        heap = mapping("[heap]")
        import mmap
        m = mmap.mmap(-1, 8 << 20)  # mapped after mlockall(MCL_CURRENT) only: not locked
        fresh = [x for x in mappings() if x["start"] == address_of(m)][0]
        memlock.unlock_all()
        memlock.lock_process(onfault=True, tune_malloc=False)
        heap_onfault = mapping("[heap]")
        print(dumps({"heap": heap, "fresh": fresh, "heap_onfault": heap_onfault}))
    """)
    assert "lo" in r["heap"]["flags"] and r["heap"]["Locked"] >= 16 * MiB  # prefault covered
    assert "lo" not in r["fresh"]["flags"]
    assert {"lo", "lf"} <= set(r["heap_onfault"]["flags"])


# -- unprivileged ---------------------------------------------------------------------------


def test_unprivileged_raises_naming_vmsize_and_limit() -> None:
    r = child(
        """
        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (8 << 20, hard))
        assert not memlock.limits().privileged
        import memlock._lock  # loaded on first use, with its C fast path: not what's measured
        before = status_bytes("VmSize")
        try:
            memlock.lock_process(prefault_heap=64 << 20)
        except memlock.LockLimitError as e:
            err = {"str": str(e), "strerror": e.strerror, "errno": e.errno, "hint": e.hint,
                   "requested": e.requested, "limit": e.limit}
        else:
            err = None
        print(dumps({"err": err, "before": before, "after": status_bytes("VmSize"),
                          "vmlck": status_bytes("VmLck")}))
        """,
        unprivileged=True,
    )
    err = r["err"]
    assert err is not None, "lock_process() did not raise"
    assert "VmSize" in err["strerror"] and "RLIMIT_MEMLOCK" in err["strerror"]
    assert str(8 * MiB) in err["strerror"] and err["limit"] == 8 * MiB
    vm_size = int(re.search(r"VmSize \S+ \S+ \((\d+) bytes\)", err["strerror"])[1])  # type: ignore[index]
    assert abs(vm_size - r["before"]) < 2 * MiB  # the child's real VmSize
    assert err["requested"] == vm_size + 64 * MiB
    assert err["errno"] == 12 and err["hint"].startswith("How to fix")
    # checked before anything changed: nothing locked, the heap was not grown
    assert r["vmlck"] == 0 and r["after"] < r["before"] + 64 * MiB


# -- a heap that cannot be allocated ---------------------------------------------------------

TiB = 2**40
AS_4G = ["prlimit", f"--as={4 << 30}", "--"]  # RLIMIT_AS 4 GiB: the refusal is certain


def _heap_refusal(prefix: list[str]) -> dict:
    return child(
        """
        from memlock import _lock, _realtime  # loaded first: imports map memory too
        before = status_bytes("VmSize")
        try:
            memlock.lock_process(prefault_heap=1 << 40)
            msg = None
        except MemoryError as e:
            msg = str(e)
        print(dumps({"msg": msg, "vmlck": status_bytes("VmLck"),
                          "grew": status_bytes("VmSize") - before}))
        """,
        prefix=prefix,
    )


def test_prefault_heap_over_rlimit_as_says_how_much_and_why() -> None:
    r = _heap_refusal(AS_4G)
    msg = r["msg"]
    assert msg is not None, "lock_process() did not raise MemoryError"
    assert "prefault the heap" in msg and f"1.0 TiB ({TiB} bytes)" in msg, msg
    assert "over RLIMIT_AS (`ulimit -v`): 4.0 GiB" in msg, msg
    assert "vm.overcommit_memory" in msg and "MemAvailable" in msg, msg
    assert r["vmlck"] == 0 and r["grew"] < 2 * MiB  # refused before anything changed


def _overcommit_refuses_1_tib() -> bool:
    """vm.overcommit_memory is 0 and RAM + swap is under 1 TiB: the kernel refuses 1 TiB."""
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            mode = int(f.read())
        with open("/proc/meminfo") as f:
            kib = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.endswith("kB\n")}
    except OSError:
        return False
    return mode == 0 and (kib["MemTotal"] + kib["SwapTotal"]) * 1024 < TiB


@pytest.mark.skipif(not _overcommit_refuses_1_tib(),
                    reason="needs vm.overcommit_memory 0 and less than 1 TiB of RAM + swap")
def test_prefault_heap_larger_than_ram_and_swap_says_so() -> None:
    r = _heap_refusal([])
    msg = r["msg"]
    assert msg is not None and f"({TiB} bytes)" in msg
    assert "larger than RAM + swap" in msg and "vm.overcommit_memory 0" in msg, msg
    assert r["vmlck"] == 0


def test_memlock_run_prefault_heap_1t_says_why_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("print('ran')\n")
    proc = run_cli("run", "--prefault-heap", "1T", "x.py", prefix=AS_4G, cwd=tmp_path)
    assert proc.returncode == 1 and "ran" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"1.0 TiB ({TiB} bytes)" in lines[0] and "RLIMIT_AS" in lines[0], lines[0]


# -- the stack ------------------------------------------------------------------------------


def test_prefault_stack_maps_and_locks_below_the_stack_pointer() -> None:
    r = child("""
        small = mapping("[stack]")
        memlock.lock_process(prefault_stack=4 << 20)
        sp = int(open("/proc/thread-self/syscall").read().split()[-2], 16)
        big = mapping("[stack]")
        print(dumps({"small": small, "big": big, "sp": sp}))
    """)
    big = r["big"]
    assert r["small"]["end"] - r["small"]["start"] < 4 * MiB
    assert big["start"] <= r["sp"] - 4 * MiB + 64 * 1024  # ~4 MiB below this sp
    assert "lo" in big["flags"]
    assert big["Locked"] == big["Rss"] == big["end"] - big["start"]  # every page present


def test_prefault_stack_too_big_is_a_value_error_never_a_crash() -> None:
    r = child("""
        hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
        resource.setrlimit(resource.RLIMIT_STACK, (2 << 20, hard))
        try:
            memlock.lock_process(prefault_stack=3 << 20)
        except ValueError as e:
            msg = str(e)
        room = int(re.search(r"at most (\\d+) bytes", msg)[1])
        vmlck = status_bytes("VmLck")
        memlock.lock_process(prefault_stack=room)  # right up to the limit: no SIGSEGV
        st = mapping("[stack]")
        size = st["end"] - st["start"]
        print(dumps({"msg": msg, "room": room, "vmlck": vmlck, "size": size}))
    """)
    assert "RLIMIT_STACK" in r["msg"]
    assert r["vmlck"] == 0  # refused before locking anything
    assert 1 * MiB < r["room"] < 2 * MiB and r["size"] <= 2 * MiB


def test_prefault_stack_in_a_thread() -> None:
    r = child("""
        import threading
        threading.stack_size(512 << 10)
        out = {}
        def run():
            try:
                memlock.lock_process(prefault_stack=1 << 20)
            except ValueError as e:
                out["err"] = str(e)
            memlock.lock_process(prefault_stack=256 << 10)
            out["ok"] = True
        t = threading.Thread(target=run); t.start(); t.join()
        print(dumps(out))
    """)
    assert "thread's stack" in r["err"] and r["ok"]


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"prefault_heap": "1M"}, TypeError),
        ({"prefault_heap": -1}, ValueError),
        ({"prefault_stack": 1.5}, TypeError),
        ({"prefault_stack": True}, TypeError),
        ({"future": 1}, TypeError),
        ({"onfault": None}, TypeError),
        ({"tune_malloc": "yes"}, TypeError),
    ],
)
def test_bad_arguments_raise_before_any_syscall(kwargs: dict, exc: type) -> None:
    # Bad input raises before anything is locked, so this runs in the test process.
    before = memlock.limits().locked_bytes
    with pytest.raises(exc):
        memlock.lock_process(**kwargs)
    assert memlock.limits().locked_bytes == before


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        memlock.lock_process(True)  # type: ignore[misc]


# -- page_faults ----------------------------------------------------------------------------


def test_page_faults_counts_first_touches() -> None:
    m = mmap.mmap(-1, 8 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with memlock.page_faults() as pf:
        assert (pf.minor, pf.major) == (0, 0)  # filled at exit
        for off in range(0, len(m), PAGE):
            m[off] = 1
    pages = 8 * MiB // PAGE
    assert pages <= pf.minor < pages + 200
    assert pf.major == 0
    with memlock.page_faults() as again:  # the pages are mapped now
        for off in range(0, len(m), PAGE):
            m[off] = 2
    assert again.minor < 50
    assert isinstance(pf, PageFaults) and "minor=" in repr(pf)
    m.close()


def test_page_faults_are_per_thread_on_linux() -> None:
    done = threading.Event()

    def other() -> None:
        m = mmap.mmap(-1, 16 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for off in range(0, len(m), PAGE):
            m[off] = 1
        m.close()
        done.set()

    with memlock.page_faults() as pf:
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert done.is_set()
    assert pf.per_thread
    assert pf.minor < 1000  # the other thread's 4096 faults are not ours


# -- /proc parsers ----------------------------------------------------------------------------


def test_parse_syscall_sp() -> None:
    assert parse_syscall_sp("0 0x3 0x5 0x2000 0x0 0x0 0x0 0x7ffc87cd06a8 0x7fe2b03162ad\n") == (
        0x7FFC87CD06A8
    )
    assert parse_syscall_sp("-1 0x7ffc87cd06a8 0x7fe2b03162ad") == 0x7FFC87CD06A8
    assert parse_syscall_sp("running\n") is None
    assert parse_syscall_sp("") is None
    with open("/proc/thread-self/syscall") as f:
        assert parse_syscall_sp(f.read()) is not None


def test_find_mapping() -> None:
    text = (
        "55d0-55f0 rw-p 00000000 00:00 0                          [heap]\n"
        "7f00-7f10 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6\n"
        "7ffc0000-7ffc2000 rw-p 00000000 00:00 0                  [stack]\n"
        "7ffd0000-7ffd1000 rw-p 00000000 00:00 0 \n"
    )
    m = find_mapping(text, 0x7FFC1000)
    assert m is not None and m.path == "[stack]" and m.prev_end == 0x7F10
    assert (m.start, m.end) == (0x7FFC0000, 0x7FFC2000)
    assert find_mapping(text, 0x7F05) is not None
    assert find_mapping(text, 0x7F05).path == "/usr/lib/libc.so.6"  # type: ignore[union-attr]
    assert find_mapping(text, 0x7FFD0000).path == ""  # type: ignore[union-attr]
    assert find_mapping(text, 0x7FFC2000) is None
    with open("/proc/self/maps") as f:
        assert find_mapping(f.read(), id(text)) is not None


def test_lock_process_is_exported() -> None:
    assert {"lock_process", "page_faults", "PageFaults"} <= set(memlock.__all__)
