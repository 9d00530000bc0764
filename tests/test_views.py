"""Zero-copy views of locked files and the copy-on-write warning, judged by the kernel.

A view of a LockedFile must be the locked, shared file mapping itself: arrays built on it
have their data inside that mapping (smaps: the file's path, ``lo``, ``Locked:``) and the
process's anonymous memory (RssAnon) does not grow. Locking a private writable file
mapping makes the kernel copy its pages: RssAnon grows by what the warning says.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import memlock

from .kernel import CHILD_PRELUDE, mappings, output, page_state, run_child

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")
np = pytest.importorskip("numpy")  # (the other CPythons of scripts/test may lack a wheel)
MIB = 2**20

# Child code: a sparse file whose bytes are known at a few offsets (fast to make, and its
# pages are page cache pages when mapped shared).
MAKE_FILE = """
def make(path, size, marks=(0, 4097, 123456789 % (1 << 30))):
    with open(path, "wb") as f:
        f.truncate(size)
        for off in marks:
            if off < size:
                f.seek(off)
                f.write(bytes([off % 251 + 1]))
    return [m for m in marks if m < size]

def rss_anon():
    return status_bytes("RssAnon")

def holder(addr, path):
    v = vma(addr)
    return {"path": v["path"], "locked": "lo" in v["flags"], "Locked": v.get("Locked", 0),
            "Size": v["Size"], "start": v["start"], "end": v["end"]}
"""


def _child(code: str, *args: object, **options: object) -> dict[str, object]:
    proc = run_child(code, args=[str(a) for a in args], prelude=CHILD_PRELUDE + MAKE_FILE,
                     timeout=120, **options)
    assert proc.returncode == 0, output(proc)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_views_of_a_locked_gib_are_the_locked_mapping_with_no_copy(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch 2.13 CPU is in requirements-models.txt")
    del torch
    got = _child("""
        import numpy as np, torch
        import warnings
        path = sys.argv[1]

        def use(path):
            lf = memlock.lock_file(path)
            view = lf.view()
            arr = np.frombuffer(view, dtype=np.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch: "the buffer is not writable"
                ten = torch.frombuffer(view, dtype=torch.uint8)
            part_arr = np.frombuffer(view[4096:8192], dtype=np.uint8)
            total = int(arr.sum(dtype=np.uint64))  # reads every page
            return lf, view, arr, ten, part_arr, total

        make(path + ".warm", 256 << 20)
        use(path + ".warm")  # first calls: threads, numpy and torch buffers, imports
        marks = make(path, 1 << 30)
        before = rss_anon()
        lf, view, arr, ten, part_arr, total = use(path)
        grew = rss_anon() - before  # (torch's own first sums allocate: after this)
        total += int(ten[: 1 << 20].sum())
        addrs = {"numpy": arr.ctypes.data, "torch": ten.data_ptr(),
                 "slice": part_arr.ctypes.data, "last": arr[-1:].ctypes.data}
        print(json.dumps({"grew": grew, "readonly": view.readonly, "len": len(view),
                          "total": total, "expected": sum(m % 251 + 1 for m in marks)
                              + sum(m % 251 + 1 for m in marks if m < (1 << 20)),
                          "marks": [int(arr[m]) for m in marks],
                          "holders": {k: holder(a, path) for k, a in addrs.items()},
                          "offsets": {k: a - arr.ctypes.data for k, a in addrs.items()}}))
    """, tmp_path / "weights.bin")
    assert got["readonly"] is True and got["len"] == 1 << 30
    assert got["total"] == got["expected"] and got["marks"] == [1, 4097 % 251 + 1,
                                                                  123456789 % 251 + 1]
    assert got["offsets"] == {"numpy": 0, "torch": 0, "slice": 4096, "last": (1 << 30) - 1}
    for name, h in got["holders"].items():  # type: ignore[union-attr]
        assert h["path"] == str(tmp_path / "weights.bin"), name
        assert h["locked"] and h["Locked"] == h["Size"] == 1 << 30, (name, h)
    assert got["grew"] < MIB, got["grew"]


def test_unlock_refuses_while_a_view_or_anything_made_from_one_lives(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 64)
    lf = memlock.lock_file(path, offset=100)
    view = lf.view()
    assert view.readonly and len(view) == 256 * 64 - 100 and view[0] == 100
    address = np.frombuffer(view, dtype=np.uint8).ctypes.data
    derived: list[object] = [view, view[10:20], np.frombuffer(view, np.uint8)[5:],
                             memoryview(view)]
    del view
    while derived:
        with pytest.raises(BufferError, match="view"):
            lf.unlock()
        assert lf.locked and page_state(address) == "full"  # nothing changed
        derived.pop()
    lf.unlock()
    assert not lf.locked and not mappings(path=str(path))
    with pytest.raises(ValueError, match="unlocked"):
        lf.view()


def test_with_block_and_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with memlock.lock_file(tmp_path / "empty") as lf:
        assert lf.view().tobytes() == b""
    with memlock.lock_file(tmp_path / "empty") as lf:
        pass
    assert not lf.locked


def test_a_locked_file_collected_with_live_views_leaves_them_valid(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 5000)
    lf = memlock.lock_file(path)
    arr = np.frombuffer(lf.view(), dtype=np.uint8)
    with pytest.warns(ResourceWarning, match="unreleased"):
        del lf
    # The lock went with the LockedFile; the mapping lives as long as the array does.
    assert page_state(arr.ctypes.data) == "none"
    assert bytes(arr[:6]) == b"abcabc" and int(arr.sum()) == sum(b"abc") * 5000
    assert mappings(path=str(path))
    del arr
    assert not mappings(path=str(path))


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 688 (__buffer__) is 3.12+")
def test_memoryview_of_a_locked_file_is_its_view(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"xyz" * 2000)
    lf = memlock.lock_file(path)
    mv = memoryview(lf)  # type: ignore[arg-type]
    assert mv.readonly and mv.tobytes() == b"xyz" * 2000
    assert np.frombuffer(mv, np.uint8).ctypes.data == np.frombuffer(lf.view(), np.uint8).ctypes.data
    with pytest.raises(BufferError):
        lf.unlock()
    mv.release()
    lf.unlock()


# -- copy-on-write --------------------------------------------------------------------------

COPYING = {
    "mmap ACCESS_COPY": "m = mmap.mmap(fd, size, access=mmap.ACCESS_COPY); obj = m",
    "numpy mmap_mode c": "obj = np.load(npy, mmap_mode='c')",
    "torch.load mmap": "obj = torch.load(pt, mmap=True, weights_only=True).numpy()",
}
NOT_COPYING = {
    "anonymous": "obj = bytearray(size)",
    "MAP_SHARED writable": "m = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE); obj = m",
    "private read-only": ("m = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ);"
                          " obj = m"),
    "numpy mmap_mode r": "obj = np.load(npy, mmap_mode='r')",
    "LockedFile view": "lf = memlock.lock_file(raw); obj = lf.view()",
}
SETUP = """
import warnings
import numpy as np
try:
    import torch
except ImportError:
    torch = None
size = int(sys.argv[2])
d = sys.argv[1]
raw, npy, pt = f"{d}/raw.bin", f"{d}/a.npy", f"{d}/a.pt"
with open(raw, "wb") as f:
    f.write(os.urandom(size))
np.save(npy, np.frombuffer(os.urandom(size), dtype=np.uint8))
if torch is not None:
    torch.save(torch.frombuffer(bytearray(os.urandom(size)), dtype=torch.uint8), pt)
fd = os.open(raw, os.O_RDWR)
"""
MEASURE = """
warm = bytearray(size)
memlock.lock(warm).unlock()  # first parallel lock: worker threads, their malloc arenas
del warm
import memlock._units
before = rss_anon()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lk = memlock.lock(obj)
grew = rss_anon() - before
lk.unlock()
print(json.dumps({"grew": grew, "warnings": [(w.category.__name__, str(w.message))
                                                 for w in caught]}))
"""


@pytest.mark.parametrize("case", sorted(COPYING))
def test_locking_a_private_writable_file_mapping_warns_of_the_copy(
        tmp_path: Path, case: str) -> None:
    if case.startswith("torch"):
        pytest.importorskip("torch", reason="torch 2.13 CPU is in requirements-models.txt")
    size = 64 * MIB
    got = _child(SETUP + COPYING[case] + MEASURE, tmp_path, size)
    [(category, message)] = got["warnings"]  # type: ignore[misc]
    assert category == "CopyOnWriteWarning"
    assert str(tmp_path) in message and "lock_file" in message, message
    predicted = int(message.split(" bytes)")[0].rsplit("(", 1)[1])
    assert size <= predicted <= size + 2 * 4096 + 128, message
    # The kernel copied what the warning said: RssAnon grew by it (give or take a MiB).
    assert abs(got["grew"] - predicted) < MIB, (got["grew"], predicted)  # type: ignore[operator]


@pytest.mark.parametrize("case", sorted(NOT_COPYING))
def test_no_warning_where_locking_copies_nothing(tmp_path: Path, case: str) -> None:
    size = 64 * MIB
    got = _child(SETUP + NOT_COPYING[case] + MEASURE, tmp_path, size)
    assert got["warnings"] == []
    if case != "anonymous":
        assert got["grew"] < MIB  # type: ignore[operator]


def test_copy_on_write_warning_is_public() -> None:
    assert issubclass(memlock.CopyOnWriteWarning, RuntimeWarning)
    assert memlock.CopyOnWriteWarning.__module__ == "memlock"
    assert "CopyOnWriteWarning" in memlock.__all__
    assert memlock.errors.CopyOnWriteWarning is memlock.CopyOnWriteWarning
