"""memlock.safetensors.load: real files written by the safetensors package, judged by smaps.

The arrays must view the locked, read-only, shared mapping of the file (their data
pointers lie in a mapping of that path with ``lo`` set), RssAnon must not grow, a budget
must leave exactly the tensors that do not fit unlocked, and hostile headers must be
refused with the tensor named and nothing left locked or mapped.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlock
import memlock.safetensors as mst

from .kernel import CHILD_PRELUDE, mappings, output, page_state, run_child, vma, vmlck

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
MIB = 2**20

NUMPY_DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                "int64", "float16", "float32", "float64"]


def _arrays(n: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for i, name in enumerate(NUMPY_DTYPES):
        raw = rng.integers(0, 255, size=(n + i) * np.dtype(name).itemsize, dtype=np.uint8)
        arr = raw.view(name) if name != "bool" else raw.astype(bool)
        out[f"layer.{i}.{name}"] = arr.reshape(-1, 1) if i % 2 else arr
    out["scalar"] = np.array(2.5, dtype=np.float32)
    out["empty"] = np.zeros((0, 3), dtype=np.float32)
    return out


def _assert_views_locked_file(arrays: Any, path: Path, addresses: list[int]) -> None:
    for a in addresses:
        v = vma(a)
        assert v["path"] == str(path) and v["perms"].startswith("r--s"), v
        assert "lo" in v["flags"] and v["Locked"] == v["Size"], v


def test_numpy_files_of_the_safetensors_package_load_zero_copy(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    want = _arrays()
    safetensors_numpy.save_file(want, str(path), metadata={"format": "np"})
    before = vmlck()
    with mst.load(path) as got:
        assert set(got) == set(want) and got.metadata == {"format": "np"}
        for name, arr in want.items():
            assert got[name].dtype == arr.dtype and got[name].shape == arr.shape, name
            assert got[name].tobytes() == arr.tobytes(), name  # (random floats: NaNs)
            assert not got[name].flags.writeable
        assert got.unlocked == () and got.locked_bytes == path.stat().st_size
        _assert_views_locked_file(got, path, [got[n].ctypes.data for n in want if got[n].size])
        assert vmlck() - before >= path.stat().st_size
    assert vmlck() == before
    del got  # the arrays keep the file mapped (unlocked) while they live
    assert not mappings(path=str(path))


def test_torch_files_with_dtypes_numpy_lacks(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch 2.13 CPU is in requirements-models.txt")
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    g = torch.Generator().manual_seed(0)
    want = {
        "bf16": torch.randn(64, 33, generator=g).to(torch.bfloat16),
        "f16": torch.randn(7, generator=g).half(),
        "f32": torch.randn(3, 5, 2, generator=g),
        "f64": torch.randn(9, generator=g).double(),
        "fp8_e4m3": torch.randn(100, generator=g).to(torch.float8_e4m3fn),
        "fp8_e5m2": torch.randn(101, generator=g).to(torch.float8_e5m2),
        "i64": torch.arange(11), "i32": torch.arange(5, dtype=torch.int32),
        "i16": torch.arange(5, dtype=torch.int16), "i8": torch.arange(5, dtype=torch.int8),
        "u8": torch.arange(5, dtype=torch.uint8), "bool": torch.tensor([True, False]),
    }
    save_file(want, str(path))
    with mst.load(path, framework="torch") as got:
        for name, t in want.items():
            assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
            assert torch.equal(got[name].view(torch.uint8), t.view(torch.uint8)), name
        _assert_views_locked_file(got, path, [got[n].data_ptr() for n in want])
    del got
    # numpy has no bfloat16 or float8: a clear error naming a tensor, and nothing held.
    before = vmlck()
    with pytest.raises(ValueError, match=r"tensor '(bf16|fp8_e4m3|fp8_e5m2)'.*framework='torch'"):
        mst.load(path)
    assert vmlck() == before and not mappings(path=str(path))


def test_loading_a_file_adds_no_anonymous_memory(tmp_path: Path) -> None:
    proc = run_child("""
        import numpy as np, memlock.safetensors as mst
        from safetensors.numpy import save_file
        path = sys.argv[1]
        save_file({f"w{i}": np.full((16, 2**20), i, dtype=np.uint8) for i in range(16)}, path)
        with mst.load(path) as warm:  # first calls: threads, imports
            pass
        before = status_bytes("RssAnon")
        t = mst.load(path)
        total = sum(int(a.sum(dtype=np.uint64)) for a in t.values())  # every page read
        grew = status_bytes("RssAnon") - before
        print(json.dumps({"grew": grew, "total": total, "locked": vmlck(),
                          "size": os.path.getsize(path)}))
        t.unlock()
    """, args=[str(tmp_path / "big.safetensors")], prelude=CHILD_PRELUDE, timeout=120)
    assert proc.returncode == 0, output(proc)
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["total"] == sum(i * 16 * MIB for i in range(16))
    assert got["locked"] >= got["size"] > 256 * MIB
    assert got["grew"] < MIB, got


def test_budget_locks_priority_first_and_lists_what_did_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    tensors = {name: np.full(4 * MIB, i, dtype=np.uint8)
               for i, name in enumerate(["embed", "layer.0", "layer.1", "lm_head"])}
    safetensors_numpy.save_file(tensors, str(path))
    with mst.load(path, budget="8M", priority=["lm_*", "layer.1"]) as got:
        assert got.unlocked == ("embed", "layer.0")
        assert got.locked_bytes == 8 * MIB
        middle = {n: got[n].ctypes.data + 2 * MIB for n in tensors}
        assert page_state(middle["lm_head"]) == page_state(middle["layer.1"]) == "full"
        assert page_state(middle["embed"]) == page_state(middle["layer.0"]) == "none"
        assert int(got["embed"][0]) == 0 and int(got["lm_head"][-1]) == 3  # mapped all the same
    with mst.load(path, budget=0) as got:
        assert got.unlocked == tuple(got) and got.locked_bytes == 0 and not got.locked
    with mst.load(path, lock=False, names=["layer.0"]) as got:
        assert list(got) == ["layer.0"] and got.locked_bytes == 0
        assert page_state(got["layer.0"].ctypes.data) == "none"


def test_sharded_checkpoint_loads_as_one_mapping(tmp_path: Path) -> None:
    shards = {"model-00001-of-00002.safetensors": {"a": np.arange(10.0), "b": np.ones(3)},
              "model-00002-of-00002.safetensors": {"c": np.arange(4, dtype=np.int32)}}
    weight_map = {}
    for f, tensors in shards.items():
        safetensors_numpy.save_file(tensors, str(tmp_path / f))
        weight_map.update(dict.fromkeys(tensors, f))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    for where in (index, tmp_path):
        with mst.load(where) as got:
            assert sorted(got) == ["a", "b", "c"]
            assert np.array_equal(got["c"], np.arange(4, dtype=np.int32))
            assert {vma(got[n].ctypes.data)["path"] for n in got} == {
                str(tmp_path / f) for f in shards}
    weight_map["d"] = "model-00002-of-00002.safetensors"
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=r"'d'.*listed in the index"):
        mst.load(index)


def _header_file(path: Path, header: object, data: bytes = b"\0" * 64,
                 length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _t(dtype: str = "F32", shape: list[int] | None = None,
       offsets: list[int] | None = None) -> dict[str, object]:
    return {"dtype": dtype, "shape": [4] if shape is None else shape,
            "data_offsets": [0, 16] if offsets is None else offsets}


HOSTILE: dict[str, tuple[object, int | None, str]] = {
    "huge length": ({"x": _t()}, 2**63, "length 9223372036854775808 is more"),
    "length past the end": ({"x": _t()}, 4096, "is more than the file"),
    "not JSON": (b"{not json", None, "not JSON"),
    "not an object": (b"[1, 2]", None, "not a JSON object"),
    "nested too deep": (b"[" * 100_000 + b"]" * 100_000, None, "not JSON"),
    "not UTF-8": (b'{"\xff": 1}', None, "not JSON"),
    "unknown dtype": ({"x": _t("F128")}, None, "tensor 'x': unknown dtype 'F128'"),
    "offsets past the end": ({"x": _t(offsets=[48, 80], shape=[8])}, None,
                             "tensor 'x': data_offsets \\[48, 80\\] are outside"),
    "negative offset": ({"x": _t(offsets=[-16, 0])}, None, "tensor 'x': data_offsets"),
    "begin after end": ({"x": _t(offsets=[16, 0])}, None, "tensor 'x': data_offsets"),
    "overlap": ({"x": _t(), "y": _t(offsets=[8, 24])}, None, "tensor 'y': data overlap"),
    "shape mismatch": ({"x": _t(shape=[5])}, None, "tensor 'x': shape \\[5\\] of F32 is 20"),
    "negative shape": ({"x": _t(shape=[-4])}, None, "tensor 'x': corrupt header: shape"),
    "offsets not ints": ({"x": _t(offsets=["0", 16])}, None, "tensor 'x': corrupt"),
    "tensor not object": ({"x": 3}, None, "tensor 'x': corrupt header"),
    "bad metadata": ({"__metadata__": {"a": 1}}, None, "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_refused_naming_the_tensor(tmp_path: Path, case: str) -> None:
    header, length, message = HOSTILE[case]
    path = _header_file(tmp_path / "bad.safetensors", header, length=length)
    before = vmlck()
    with pytest.raises(ValueError, match=message) as caught:
        mst.load(path)
    assert str(path) in str(caught.value)
    assert vmlck() == before and not mappings(path=str(path))


def test_short_file_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ValueError, match="shorter than the 8-byte"):
        mst.load(tmp_path / "short")
    good = tmp_path / "good.safetensors"
    safetensors_numpy.save_file({"x": np.zeros(4, np.float32)}, str(good))
    with pytest.raises(ValueError, match="framework"):
        mst.load(good, framework="jax")
    with pytest.raises(ValueError, match="no tensor named 'y'"):
        mst.load(good, names=["y"])
    with pytest.raises(TypeError, match="priority"):
        mst.load(good, priority="x*")
    with pytest.raises(TypeError, match="budget"):
        mst.load(good, budget=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a size"):
        mst.load(good, budget="lots")
    with pytest.raises(FileNotFoundError):
        mst.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("when", ["before mapping", "after locking"])
def test_a_file_changed_while_loading_is_a_clear_error(tmp_path: Path, when: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    safetensors_numpy.save_file({"x": np.zeros(MIB, np.uint8)}, str(path))

    def rewrite() -> None:  # another writer: same size, new bytes and mtime
        st = path.stat()
        safetensors_numpy.save_file({"x": np.ones(MIB, np.uint8)}, str(path))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    target = "_map_checked" if when == "before mapping" else "lock_memory"
    real = getattr(mst, target)

    def changing(*args: Any) -> Any:
        if when == "before mapping":
            rewrite()
            return real(*args)
        held = real(*args)
        rewrite()
        return held

    monkeypatch.setattr(mst, target, changing)
    before = vmlck()
    with pytest.raises(OSError, match="changed while it was loaded") as caught:
        mst.load(path)
    assert caught.value.errno == errno.ESTALE
    assert vmlck() == before and not mappings(path=str(path))


def test_arrays_outlive_unlock_and_a_leak_warns(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    safetensors_numpy.save_file({"x": np.arange(MIB, dtype=np.uint8)}, str(path))
    got = mst.load(path)
    x = got["x"]
    got.unlock()
    assert not got.locked and page_state(x.ctypes.data) == "none"
    assert int(x[1000]) == 1000 % 256  # still mapped while the array lives
    leaked = mst.load(path)
    with pytest.warns(ResourceWarning, match="unreleased"):
        del leaked
    del x, got
    assert not mappings(path=str(path))
    assert memlock.CopyOnWriteWarning  # loading warned of no copy (warnings are errors)
