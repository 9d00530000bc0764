"""Files and real-time on the simulated FreeBSD, macOS and illumos C libraries.

``lock_file``, ``residency``, ``touch``, ``evict``, ``lock_process`` and ``page_faults`` run
in a child whose ``memlock._platform.BACKEND`` is the real backend of another OS built on a
simulated C library (``tests/simlibc.py``, ``host_memory=True``: the address space and the
files are this machine's, what is locked is the simulation's). The judges: the
simulation's own page accounting and call log (which calls the feature made, and which it
did not), and this kernel's accounting (VmLck stays 0: no real lock was taken; the page
cache, read independently with mincore, after touch and evict).

What is modelled, and from where (``shared/seeds``; where a seed is silent, the OS's own
manual page, as cited in simlibc.py):
- mlock/munlock/mlockall: the FreeBSD mlock(2)/mlockall(2) pages (seeds 000, 003), the BSD
  page and XNU's kern_mman.c for macOS (mlockall is ENOSYS), illumos munlock(3C) (seed 002).
- mincore(2): bit 0 is "resident" everywhere; FreeBSD's and macOS's pages add
  MINCORE_REFERENCED (0x2) for a page just read, so a resident page reads 0x3 there.
- No cachestat(2), no MADV_POPULATE_*, no prctl(2), no glibc on any of them: residency
  comes from mincore, touch reads with pread, malloc is not tuned.
- posix_fadvise(POSIX_FADV_DONTNEED): FreeBSD and illumos have it; macOS has none, so
  evict raises UnsupportedOperation there.
- getrusage: per-process counts (memlock claims RUSAGE_THREAD only on Linux).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .kernel import PAGE, drop_cache, file_resident_pages, output, run_child

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="simulations run on Linux")

OSES = ("freebsd", "darwin", "sunos")
#: Per OS: arguments for simlibc's constructor (root on FreeBSD, where
#: security.bsd.unprivileged_mlock may be 0; page size as this machine's).
SIM_ARGS = {"freebsd": {"euid": 0}, "darwin": {}, "sunos": {}}

#: Child prelude: the simulated backend replaces memlock's before any feature loads.
PRELUDE = """
import json, os, sys
from tests import simlibc
import memlock._platform as platform
SIM, BACKEND = getattr(simlibc, sys.argv[1])(
    page_size=os.sysconf("SC_PAGE_SIZE"), host_memory=True, **json.loads(sys.argv[2]))
platform.BACKEND = BACKEND
import memlock
from tests.kernel import file_resident_pages, vmlck

def calls():
    return [c[0] for c in SIM.calls]
"""


def run_on(os_name: str, code: str, *args: str) -> dict[str, object]:
    proc = run_child(code, prelude=PRELUDE, args=[os_name, json.dumps(SIM_ARGS[os_name]), *args],
                     env={"MEMLOCK_PURE_PYTHON": "1"})
    result: dict[str, object] = json.loads(output(proc).splitlines()[-1])
    return result


def make(tmp_path: Path, size: int) -> str:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return str(path)


LOCK_FILE = """
path = sys.argv[3]
with memlock.lock_file(path) as lf:
    held = SIM.is_locked(lf.address, lf.nbytes)
    pages = len(SIM.locked)
    kernel = vmlck()
print(json.dumps({"held": held, "pages": pages, "kernel_locked": kernel,
                  "after": len(SIM.locked), "calls": calls()}))
"""


@pytest.mark.parametrize("os_name", OSES)
def test_lock_file_locks_through_the_simulated_os(tmp_path: Path, os_name: str) -> None:
    size = 5 * PAGE + 100
    r = run_on(os_name, LOCK_FILE, make(tmp_path, size))
    assert r["held"] and r["pages"] == 6, r
    assert r["after"] == 0, r  # unlocked through the simulation too
    assert r["kernel_locked"] == 0, r  # and no real mlock was made
    assert "mlock" in r["calls"] and "munlock" in r["calls"], r


RESIDENCY = """
path = sys.argv[3]
out = {"before": memlock.residency(path).resident_pages,
       "kernel_before": file_resident_pages(path)}
memlock.touch(path)
r = memlock.residency(path)
out.update(touched=r.resident_pages, pages=r.pages, exact=r.exact,
           kernel_touched=file_resident_pages(path))
try:
    memlock.evict(path)
    out["evict"] = "done"
except memlock.UnsupportedOperation as exc:
    out["evict"] = str(exc)
out.update(evicted=memlock.residency(path).resident_pages,
           kernel_evicted=file_resident_pages(path), calls=calls())
print(json.dumps(out))
"""


@pytest.mark.parametrize("os_name", OSES)
def test_residency_touch_evict_on_the_simulated_os(tmp_path: Path, os_name: str) -> None:
    size = 64 * PAGE + 1
    path = make(tmp_path, size)
    drop_cache(path)
    assert file_resident_pages(path) == 0, "this file system keeps pages: cannot judge"
    r = run_on(os_name, RESIDENCY, path)
    pages = 65
    assert r["kernel_before"] == 0 and r["before"] == 0, r
    # mincore's 0x3 (FreeBSD, macOS) counts one page each, as the kernel's own count says.
    assert r["kernel_touched"] == pages and r["touched"] == pages == r["pages"], r
    assert r["exact"] is True, r
    calls = r["calls"]
    assert "mincore" in calls, r  # residency came from mincore ...
    assert "madvise" not in calls, r  # ... touch read the file (no MADV_POPULATE_READ)
    assert calls.count("cachestat") <= 1, r  # asked once, remembered as missing
    if os_name == "darwin":
        assert "posix_fadvise" in str(r["evict"]), r
        assert r["kernel_evicted"] == pages and r["evicted"] == pages, r  # nothing dropped
    else:
        assert r["evict"] == "done", r
        assert r["kernel_evicted"] == 0 and r["evicted"] == 0, r


LOCK_PROCESS = """
out = {}
try:
    memlock.lock_process(prefault_stack=4096)
except memlock.UnsupportedOperation as exc:
    out["stack"] = str(exc)
out["calls_before"] = calls()
try:
    memlock.lock_process(prefault_heap=1 << 20)
    out.update(locked=len(SIM.locked), future=SIM.future, kernel_locked=vmlck())
    import mmap
    page = os.sysconf("SC_PAGE_SIZE")
    fresh = mmap.mmap(-1, 64 * page)  # not locked by the simulation: faults for real
    with memlock.page_faults() as pf:
        for i in range(0, 64 * page, page):
            fresh[i] = 1
    out.update(per_thread=pf.per_thread, minor=pf.minor)
    memlock.unlock_all()
    out.update(after=len(SIM.locked), future_after=SIM.future)
except memlock.UnsupportedOperation as exc:
    out["lock_process"] = str(exc)
out["calls"] = [list(c) for c in SIM.calls if c[0] in ("mlockall", "munlockall", "mallopt")]
print(json.dumps(out))
"""


@pytest.mark.parametrize("os_name", OSES)
def test_lock_process_and_page_faults_on_the_simulated_os(os_name: str) -> None:
    r = run_on(os_name, LOCK_PROCESS)
    assert r["calls_before"] == [], r  # prefault_stack is refused before any call
    if os_name == "darwin":  # no mlockall on macOS: refused, no system call made
        assert "not implemented on macOS" in str(r["lock_process"]), r
        assert r["calls"] == [], r
        return
    assert "prefault_stack" in str(r["stack"]), r
    assert r["calls"] == [["mlockall", 3], ["munlockall"]], r  # no mallopt: not glibc
    assert r["locked"] > 0 and r["future"] is True and r["kernel_locked"] == 0, r
    assert r["per_thread"] is False and r["minor"] >= 64, r  # the process's own count
    assert r["after"] == 0 and r["future_after"] is False, r
