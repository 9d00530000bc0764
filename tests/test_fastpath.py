"""The optional C fast path of lock()/unlock() (memlock/_speedups.c), judged by smaps.

The lock and process tests run through both paths already (the ``lock_path`` fixture);
these check what is particular to the C one: that it is built, that it takes exactly the
common case, and that it shares the registry's mutex with the Python path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import threading

import pytest

import memlock
from memlock import _lock
from memlock._lock import REGISTRY

from .conftest import c_path_built
from .kernel import PAGE, REPO, address_of, anon, page_state, page_states, vmlck


def test_c_fast_path_is_built_where_it_can_be() -> None:
    headers = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    if shutil.which("cc") or shutil.which("gcc"):
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
