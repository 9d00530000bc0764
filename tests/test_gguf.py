"""GGUF (llama.cpp's format) zero-copy with the gguf package's reader, judged by smaps.

``gguf.GGUFReader(path).data`` is a read-only numpy memmap (shared): ``memlock.lock`` of it
locks the file's page cache pages, with no copy; each tensor's data lie in that mapping.
The reader's copy-on-write mode ('c') is the one that copies, and memlock warns of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .kernel import CHILD_PRELUDE, output, run_child

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")
pytest.importorskip("gguf", reason="gguf is in requirements-models.txt")
MIB = 2**20

WRITE_AND_LOCK = """
import warnings
import numpy as np
from gguf import GGUFReader, GGUFWriter
path, mode = sys.argv[1], sys.argv[2]
w = GGUFWriter(path, "llama")
w.add_block_count(2)
w.add_tensor("token_embd.weight", np.arange(16 * 2**20, dtype=np.float32).reshape(4096, -1))
w.add_tensor("output.weight", np.full((4096, 4096), 3, dtype=np.float16))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
warm = bytearray(64 << 20)
memlock.lock(warm).unlock()  # first parallel lock: worker threads
del warm
reader = GGUFReader(path, mode)
before = status_bytes("RssAnon")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lk = memlock.lock(reader.data)
grew = status_bytes("RssAnon") - before
tensors = {t.name: t.data for t in reader.tensors}
print(json.dumps({
    "grew": grew, "warnings": [w.category.__name__ for w in caught],
    "holders": {n: {"path": vma(a.ctypes.data)["path"],
                    "locked": page_state(a.ctypes.data) == "full",
                    "perms": vma(a.ctypes.data)["perms"]} for n, a in tensors.items()},
    "values": [float(tensors["token_embd.weight"][4095, -1]),
               float(tensors["output.weight"].sum(dtype=np.float64))],
}))
lk.unlock()
"""


def _run(path: Path, mode: str) -> dict[str, object]:
    proc = run_child(WRITE_AND_LOCK, args=[str(path), mode], prelude=CHILD_PRELUDE, timeout=120)
    assert proc.returncode == 0, output(proc)
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_gguf_reader_data_locks_with_no_copy(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    got = _run(path, "r")
    assert got["warnings"] == []
    for name, h in got["holders"].items():  # type: ignore[union-attr]
        assert h == {"path": str(path), "locked": True, "perms": "r--s"}, name
    assert got["values"] == [16 * 2**20 - 1, 3.0 * 4096 * 4096]
    assert got["grew"] < MIB, got["grew"]  # 96 MiB locked, no anonymous copy


def test_gguf_reader_copy_on_write_mode_copies_and_warns(tmp_path: Path) -> None:
    got = _run(tmp_path / "model.gguf", "c")
    assert got["warnings"] == ["CopyOnWriteWarning"]
    assert got["grew"] > 90 * MIB  # type: ignore[operator]
