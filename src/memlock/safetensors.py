"""Load safetensors checkpoints as arrays on a locked, read-only, shared mapping.

``memlock.safetensors.load(path)`` maps each file read-only and shared, locks it (all of
it, or the tensors that fit a budget, the ``priority`` globs first) and returns
:class:`LockedTensors`: tensor name → numpy array (or torch.Tensor) whose data are the
mapping itself, so locking adds no copy (a private mapping would be copied page by page:
see :class:`memlock.CopyOnWriteWarning`).

The format, parsed here with the standard library only: 8 bytes, a little-endian unsigned
header length N; N bytes of JSON, an object mapping each tensor name to ``{"dtype",
"shape", "data_offsets": [begin, end]}`` (offsets relative to the data after the header)
and an optional ``"__metadata__"`` object of strings; then the data. numpy and torch are
imported only when ``framework`` asks for them.

Hazards and how they are met:

* A hostile header (a huge length, offsets past the end, overlapping tensors, a shape that
  does not match the bytes) must not make us read or map what is not there: the header is
  checked whole, against the file's size, before anything is mapped; each error names the
  file and the tensor.
* A file changed while loading: its identity (device, inode, size, mtime) after locking must
  be the one it had when the header was read, and the header in the mapping must be the
  bytes parsed; otherwise the load fails with ESTALE and nothing stays locked.
* Reading an array whose file was truncated afterwards raises SIGBUS, as for any mapped
  file: lock it, and do not truncate files that are being served.
"""

from __future__ import annotations

import errno
import itertools
import json
import mmap
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping

from ._context import ReleasedOnExit
from ._files import StrPath, open_regular
from ._lock import Lock
from ._lock import lock as lock_memory
from ._units import parse_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DTYPES", "LockedTensors", "load"]

#: safetensors dtype → (bytes per element, numpy dtype name or None where numpy has none,
#: torch dtype name).
DTYPES: dict[str, tuple[int, str | None, str]] = {
    "BOOL": (1, "bool", "bool"),
    "U8": (1, "uint8", "uint8"),
    "I8": (1, "int8", "int8"),
    "U16": (2, "uint16", "uint16"),
    "I16": (2, "int16", "int16"),
    "U32": (4, "uint32", "uint32"),
    "I32": (4, "int32", "int32"),
    "U64": (8, "uint64", "uint64"),
    "I64": (8, "int64", "int64"),
    "F16": (2, "float16", "float16"),
    "BF16": (2, None, "bfloat16"),
    "F32": (4, "float32", "float32"),
    "F64": (8, "float64", "float64"),
    "F8_E4M3": (1, None, "float8_e4m3fn"),
    "F8_E5M2": (1, None, "float8_e5m2"),
    "C64": (8, "complex64", "complex64"),
}
#: The safetensors package's own limit on the JSON header.
MAX_HEADER_BYTES = 100_000_000
_FRAMEWORKS = ("numpy", "torch")


class _Tensor:
    """One tensor of a header: where its bytes are in the file."""

    __slots__ = ("begin", "dtype", "end", "name", "shape", "shard")

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int,
                 shard: _Shard) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape
        self.begin, self.end, self.shard = begin, end, shard  # absolute file offsets


class _Shard:
    """One safetensors file: its header, descriptor-free identity, and (later) mapping."""

    __slots__ = ("header", "identity", "metadata", "path", "size", "tensors")

    def __init__(self, path: str, fd: int, st: os.stat_result) -> None:
        self.path = path
        self.size = st.st_size
        self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self.metadata: dict[str, str] = {}
        self.header, self.tensors = _read_header(path, fd, st.st_size, self)


def _bad(path: str, what: str, name: str | None = None) -> ValueError:
    where = f"{path}: tensor {name!r}: " if name is not None else f"{path}: "
    return ValueError(where + what)


def _read_header(path: str, fd: int, size: int, shard: _Shard) -> tuple[bytes, list[_Tensor]]:
    """The header's bytes and its tensors, checked against a file of ``size`` bytes."""
    if size < 8:
        raise _bad(path, f"not a safetensors file: {size} bytes, shorter than the 8-byte "
                   "header length")
    n = int.from_bytes(os.pread(fd, 8, 0), "little")
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise _bad(path, f"corrupt header: its length {n} is more than the file's "
                   f"{size - 8} bytes after it (or than {MAX_HEADER_BYTES})")
    raw = os.pread(fd, n, 8)
    if len(raw) != n:
        raise OSError(errno.ESTALE, "the file shrank while it was read", path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, f"corrupt header: not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "corrupt header: not a JSON object")
    data_start, data_bytes = 8 + n, size - 8 - n
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(
                    isinstance(v, str) for v in info.values()):
                raise _bad(path, "corrupt header: __metadata__ is not an object of strings")
            shard.metadata = info
            continue
        tensors.append(_check_tensor(path, name, info, data_start, data_bytes, shard))
    tensors.sort(key=lambda t: (t.begin, t.end))
    for before, after in itertools.pairwise(tensors):
        if after.begin < before.end:
            raise _bad(path, f"data overlap tensor {before.name!r}", after.name)
    return raw, tensors


def _check_tensor(path: str, name: str, info: object, data_start: int, data_bytes: int,
                  shard: _Shard) -> _Tensor:
    if not isinstance(info, dict):
        raise _bad(path, "corrupt header: not an object", name)
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _bad(path, f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})", name)
    if not isinstance(shape, list) or not all(
            type(d) is int and d >= 0 for d in shape):
        raise _bad(path, f"corrupt header: shape {shape!r} is not a list of sizes", name)
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets)):
        raise _bad(path, f"corrupt header: data_offsets {offsets!r} is not [begin, end]", name)
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        raise _bad(path, f"data_offsets [{begin}, {end}] are outside the file's "
                   f"{data_bytes} bytes of data", name)
    count = 1
    for d in shape:
        count *= d
    if count * DTYPES[dtype][0] != end - begin:
        raise _bad(path, f"shape {shape} of {dtype} is {count * DTYPES[dtype][0]} bytes, "
                   f"but data_offsets [{begin}, {end}] hold {end - begin}", name)
    return _Tensor(name, dtype, tuple(shape), data_start + begin, data_start + end, shard)


def _shard_paths(path: str) -> tuple[list[str], dict[str, str] | None]:
    """The files to load, and the index's weight map (name → file) for a sharded one."""
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors.index.json"))
        if len(found) > 1:
            raise ValueError(f"{path}: more than one index ({', '.join(found)}): name one")
        if not found:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if len(files) != 1:
                raise ValueError(f"{path}: no *.safetensors.index.json and "
                                 f"{len(files)} .safetensors files: name the file")
            return [os.path.join(path, files[0])], None
        path = os.path.join(path, found[0])
    if not path.endswith(".json"):
        return [path], None
    with open(path, "rb") as f:
        try:
            index = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: corrupt index: not JSON ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{path}: corrupt index: no weight_map object of file names")
    base = os.path.dirname(path)
    files = sorted(set(weight_map.values()))
    for f_name in files:
        if os.path.isabs(f_name) or os.pardir in f_name.split("/"):
            raise ValueError(f"{path}: index names a file outside its folder: {f_name!r}")
    return [os.path.join(base, f) for f in files], {
        k: os.path.join(base, v) for k, v in weight_map.items()}


def _budget_bytes(budget: object) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, str):
        return parse_size(budget)
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be bytes (int) or a size string such as '8G', "
                        f"not {type(budget).__name__}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, not {budget}")
    return budget


def _globs(priority: object) -> list[str]:
    if isinstance(priority, (str, bytes)) or not isinstance(priority, Iterable):
        raise TypeError("priority must be a list of name globs, such as ['*.embed*']")
    globs = list(priority)
    if not all(isinstance(g, str) for g in globs):
        raise TypeError("priority must be a list of name globs (str)")
    return globs


def _choose(tensors: list[_Tensor], budget: int | None, globs: list[str]) -> \
        tuple[list[_Tensor], list[str]]:
    """The tensors to lock (priority first, then in file order, each while it fits)."""
    if budget is None:
        return tensors, []
    from fnmatch import fnmatchcase

    order: list[_Tensor] = []
    seen: set[int] = set()
    for g in [*globs, "*"]:
        for t in tensors:
            if id(t) not in seen and fnmatchcase(t.name, g):
                seen.add(id(t))
                order.append(t)
    chosen, left, used = [], [], 0
    for t in order:
        n = t.end - t.begin
        if used + n <= budget:
            chosen.append(t)
            used += n
        else:
            left.append(t.name)
    return chosen, left


def _runs(tensors: list[_Tensor]) -> list[tuple[int, int]]:
    """File ranges covering ``tensors`` (one shard), adjacent ones merged, in order."""
    out: list[tuple[int, int]] = []
    for t in sorted(tensors, key=lambda t: t.begin):
        if t.begin == t.end:
            continue
        if out and out[-1][1] >= t.begin:
            out[-1] = (out[-1][0], max(out[-1][1], t.end))
        else:
            out.append((t.begin, t.end))
    return out


class LockedTensors(ReleasedOnExit, Mapping[str, "Any"]):
    """Tensor name → array viewing a locked, read-only, shared file mapping; a context manager.

    Returned by :func:`load`. Arrays stay valid after :meth:`unlock` (their memory is the
    page cache's, simply no longer locked); the files stay mapped while any array lives.

    Attributes:
        locked_bytes: Bytes of the files locked (whole files without a budget; with one,
            the chosen tensors' bytes; the kernel locks the whole pages holding them).
        unlocked: Names of the tensors left unlocked for lack of budget, in the order they
            were considered.
        metadata: The ``__metadata__`` of the (first) file's header, or an empty dict.
    """

    __module__ = "memlock.safetensors"

    __slots__ = ("_arrays", "_locks", "locked_bytes", "metadata", "unlocked")

    def __init__(self, arrays: dict[str, Any], locks: list[Lock], locked_bytes: int,
                 unlocked: tuple[str, ...], metadata: dict[str, str]) -> None:
        """Made by :func:`load`."""
        self._arrays, self._locks = arrays, locks
        self.locked_bytes, self.unlocked, self.metadata = locked_bytes, unlocked, metadata

    def __getitem__(self, name: str) -> Any:
        """The array of tensor ``name``."""
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        """Tensor names, in file order (shard by shard)."""
        return iter(self._arrays)

    def __len__(self) -> int:
        """How many tensors."""
        return len(self._arrays)

    @property
    def locked(self) -> bool:
        """True until :meth:`unlock` while something is locked."""
        return any(lk.locked for lk in self._locks)

    def unlock(self) -> None:
        """Release every lock (idempotent); the arrays stay valid, unlocked."""
        while self._locks:
            self._locks[-1].unlock()
            self._locks.pop()

    def _release_on_exit(self) -> None:
        self.unlock()

    def __del__(self) -> None:
        """Warn (ResourceWarning) and release what is still locked."""
        locks = getattr(self, "_locks", None)
        if not locks:
            return
        try:
            if any(lk.locked for lk in locks):
                warnings.warn(f"unreleased {self!r}; use unlock() or a with block",
                              ResourceWarning, stacklevel=2, source=self)
        finally:
            for lk in locks:
                lk._release_soon()

    def __repr__(self) -> str:
        """Counts, not arrays."""
        return (f"<memlock.safetensors.LockedTensors {len(self._arrays)} tensors "
                f"locked_bytes={self.locked_bytes} unlocked={len(self.unlocked)}>")


def _array_maker(framework: str, tensors: list[_Tensor]) -> Any:
    """``make(view, tensor)`` for ``framework``; ValueError for a dtype it lacks."""
    if framework == "numpy":
        for t in tensors:
            if DTYPES[t.dtype][1] is None:
                raise _bad(t.shard.path, f"dtype {t.dtype} has no numpy equivalent: load "
                           "with framework='torch'", t.name)
        import numpy as np

        def make_numpy(view: memoryview, t: _Tensor) -> Any:
            size, name, _ = DTYPES[t.dtype]
            if t.begin == t.end:
                empty = np.empty(t.shape, dtype=name)
                empty.flags.writeable = False
                return empty
            return np.frombuffer(view, dtype=name, count=(t.end - t.begin) // size,
                                 offset=t.begin).reshape(t.shape)

        return make_numpy
    import torch

    def make_torch(view: memoryview, t: _Tensor) -> Any:
        size, _, name = DTYPES[t.dtype]
        dtype = getattr(torch, name)
        if t.begin == t.end:
            return torch.empty(t.shape, dtype=dtype)
        with warnings.catch_warnings():  # "The given buffer is not writable": by design
            warnings.simplefilter("ignore", UserWarning)
            return torch.frombuffer(view, dtype=dtype, count=(t.end - t.begin) // size,
                                    offset=t.begin).reshape(t.shape)

    return make_torch


def load(path: StrPath, *, framework: str = "numpy", names: Iterable[str] | None = None,
         lock: bool = True, budget: int | str | None = None,
         priority: Iterable[str] = ()) -> LockedTensors:
    """Map a safetensors checkpoint read-only and shared, lock it, and view its tensors.

    Args:
        path: A ``.safetensors`` file, a sharded checkpoint's index
            (``model.safetensors.index.json``: its shards load as one mapping of names), or
            a folder holding one index or one ``.safetensors`` file.
        framework: ``"numpy"`` (read-only ndarrays) or ``"torch"`` (CPU tensors; the only
            one for BF16 and FP8, which numpy lacks).
        names: Load only these tensors (default: all).
        lock: Lock the tensors in RAM (False: only map them).
        budget: Lock at most this many bytes (an int, or a size such as ``"8G"``); the
            tensors that do not fit stay mapped, unlocked, and are listed in
            ``unlocked``. None locks everything, as one range per file.
        priority: Name globs (``fnmatch``) locked first, in this order; then the other
            tensors in file order, each if it still fits the budget.

    Returns:
        A :class:`LockedTensors`.

    Raises:
        ValueError: A corrupt header, offsets outside the file, overlapping tensors, an
            unknown dtype (or one numpy lacks), a shape that does not match the bytes (the
            message names the file and the tensor), or an unknown name in ``names``.
        OSError: The file cannot be read; ESTALE if it changed while it was loaded.
        LockPermissionError / LockLimitError / MemlockError: as :func:`memlock.lock`; on
            every failure nothing stays locked.
    """
    if framework not in _FRAMEWORKS:
        raise ValueError(f"framework must be 'numpy' or 'torch', not {framework!r}")
    if not isinstance(lock, bool):
        raise TypeError(f"lock must be a bool, not {type(lock).__name__}")
    limit, globs = _budget_bytes(budget), _globs(priority)
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be str, bytes or os.PathLike, not {type(path).__name__}")
    files, weight_map = _shard_paths(os.fsdecode(os.fspath(path)))
    shards: list[_Shard] = []
    for f_path in files:
        f, st = open_regular(f_path)
        with f:
            shards.append(_Shard(f_path, f.fileno(), st))
    tensors = _select(shards, weight_map, names)
    make = _array_maker(framework, tensors)
    chosen, left = _choose(tensors, limit, globs) if lock else ([], [])
    locks: list[Lock] = []
    arrays: dict[str, Any] = {}
    locked = 0
    opened: list[tuple[mmap.mmap, memoryview]] = []
    try:
        for shard in shards:
            mine = [t for t in tensors if t.shard is shard]
            if not mine:
                continue
            m = _map_checked(shard)
            view = memoryview(m)
            opened.append((m, view))
            runs = ([(0, shard.size)] if limit is None else
                    _runs([t for t in chosen if t.shard is shard])) if lock else []
            for begin, end in runs:
                locks.append(lock_memory(m, begin, end - begin))
                locked += end - begin
            _check_unchanged(shard, m)
            for t in mine:
                arrays[t.name] = make(view, t)
    except BaseException:
        for lk in reversed(locks):
            lk.unlock()
        arrays.clear()
        for m, view in opened:  # unmapped now, not when the traceback goes
            view.release()
            m.close()
        raise
    return LockedTensors(arrays, locks, locked, tuple(left), shards[0].metadata)


def _select(shards: list[_Shard], weight_map: dict[str, str] | None,
            names: Iterable[str] | None) -> list[_Tensor]:
    """The tensors asked for, in file order; names unique across shards."""
    every: dict[str, _Tensor] = {}
    for shard in shards:
        for t in shard.tensors:
            if t.name in every:
                raise _bad(shard.path, f"also in {every[t.name].shard.path}", t.name)
            every[t.name] = t
    if weight_map is not None:
        for name, f_path in weight_map.items():
            found = every.get(name)
            if found is None or found.shard.path != f_path:
                raise _bad(f_path, "listed in the index but not in this file", name)
    if names is None:
        return list(every.values())
    if isinstance(names, (str, bytes)):
        raise TypeError("names must be a list of tensor names, not one string")
    wanted = list(names)
    missing = [n for n in wanted if n not in every]
    if missing:
        raise ValueError(f"no tensor named {', '.join(map(repr, missing[:5]))} in "
                         f"{shards[0].path if len(shards) == 1 else 'the checkpoint'}")
    keep = set(wanted)
    return [t for t in every.values() if t.name in keep]


def _map_checked(shard: _Shard) -> mmap.mmap:
    """The whole file mapped read-only and shared; ESTALE if it is not the one parsed."""
    f, st = open_regular(shard.path)
    with f:
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != shard.identity:
            raise OSError(errno.ESTALE, "changed while it was loaded: load it again",
                          shard.path)
        return mmap.mmap(f.fileno(), shard.size, access=mmap.ACCESS_READ)


def _check_unchanged(shard: _Shard, m: mmap.mmap) -> None:
    """ESTALE if the file changed since its header was read (after it was locked)."""
    st = os.stat(shard.path)
    n = len(shard.header)
    if ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != shard.identity
            or m[8:8 + n] != shard.header):
        raise OSError(errno.ESTALE, "changed while it was loaded: load it again", shard.path)
