"""SecureBuffer in this process: views and close, canaries, protection, pool, read_secret.

Effects are checked through the kernel (/proc/self/smaps VmFlags, VmLck, /proc/self/mem)
and through raw reads of the addresses (ctypes, test side only). Anything that may crash
or changes limits is in test_secure_process.py.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import hmac
import itertools
import os
import pickle
import sys
import threading
import warnings

import pytest

import memlock
from memlock import SecureBuffer
from memlock._secrets import _pool as _securemem

from .kernel import PAGE, address_of, vma, vmlck

BACKENDS = ["anonymous"]
if _securemem.probe_memfd_secret():
    BACKENDS.append("memfd_secret")


def addr(sb: SecureBuffer) -> int:
    with sb.view() as v:
        return address_of(v)


def fill_random(sb: SecureBuffer) -> bytes:
    """Fill with random bytes (read straight in) and return a copy for the test."""
    with sb.view() as v:
        fd = os.open("/dev/urandom", os.O_RDONLY)
        try:
            os.readv(fd, [v])
        finally:
            os.close(fd)
        return bytes(v)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- creation, kinds, kernel flags ------------------------------------------------------------


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.parametrize("size", [1, 16, 17, 32, 2048, 2049, 3 * PAGE])
def test_zero_filled_locked_undumpable_unforkable(size: int, isolated: bool, backend: str) -> None:
    with SecureBuffer(size, isolated=isolated, backend=backend) as sb:
        assert len(sb) == size and sb.backend == backend and sb.isolated is isolated
        with sb.view() as v:
            assert v.format == "B" and v.nbytes == size and not v.readonly
            assert bytes(v) == bytes(size)
            a = address_of(v)
        mapping = vma(a)
        start, end, perms, flags = (mapping[k] for k in ("start", "end", "perms", "flags"))
        assert perms.startswith("rw")
        assert "lo" in flags, flags  # locked
        assert "dd" in flags, flags  # MADV_DONTDUMP
        if backend == "anonymous":
            assert "wf" in flags, flags  # MADV_WIPEONFORK
            assert perms.endswith("p")
        else:
            assert "dc" in flags, flags  # MADV_DONTFORK
            assert perms.endswith("s")
        # Guard pages: PROT_NONE mappings right before and after the data pages.
        assert vma(start - 1)["perms"] == "---p"
        assert vma(end)["perms"] == "---p"
        if isolated or size > 2048:
            assert a + size == end  # the secret ends at the guard page
            assert end - start == -(-(size + 8) // PAGE) * PAGE


def test_zero_size() -> None:
    with SecureBuffer(0) as sb:
        assert len(sb) == 0 and bytes(sb.view()) == b""
    with SecureBuffer(0, isolated=True) as sb:
        assert bytes(sb.view()) == b""


def test_auto_prefers_memfd_secret() -> None:
    with SecureBuffer(8) as sb:
        assert sb.backend == BACKENDS[-1]


def test_memfd_secret_unreadable_through_proc_mem(backend: str) -> None:
    with SecureBuffer(32, backend=backend) as sb:
        secret = fill_random(sb)
        a = addr(sb)
        with open(f"/proc/{os.getpid()}/mem", "rb", buffering=0) as mem:
            mem.seek(a)
            if backend == "memfd_secret":
                with pytest.raises(OSError):
                    mem.read(32)
            else:
                assert mem.read(32) == secret  # plain memory: root/ptrace can read it


def test_locked_charged_to_vmlck() -> None:
    _securemem.trim()
    before = vmlck()
    with SecureBuffer(5 * PAGE, backend="anonymous") as sb:
        assert vmlck() - before == -(-(5 * PAGE + 8) // PAGE) * PAGE
        del sb
    assert vmlck() == before


def test_repr_never_shows_contents(backend: str) -> None:
    for isolated in (False, True):
        with SecureBuffer(40, isolated=isolated, backend=backend) as sb:
            secret = os.urandom(20).hex().encode()
            sb.view()[:] = secret
            text = repr(sb) + str(sb)
            assert secret.decode() not in text and secret[:8].decode() not in text
            assert "size=40" in text


@pytest.mark.parametrize(
    ("args", "kwargs", "exc"),
    [
        ((-1,), {}, ValueError),
        (("32",), {}, TypeError),
        ((True,), {}, TypeError),
        ((3.0,), {}, TypeError),
        ((32,), {"backend": "nope"}, ValueError),
        ((32,), {"backend": 1}, TypeError),
        ((32,), {"isolated": 1}, TypeError),
    ],
)
def test_bad_arguments(args: tuple[object, ...], kwargs: dict[str, object],
                       exc: type[Exception]) -> None:
    with pytest.raises(exc):
        SecureBuffer(*args, **kwargs)  # type: ignore[arg-type]


def test_no_pickle_no_copy() -> None:
    with SecureBuffer(16) as sb:
        with pytest.raises(TypeError):
            pickle.dumps(sb)
        with pytest.raises(TypeError):
            copy.copy(sb)
        with pytest.raises(TypeError):
            copy.deepcopy(sb)


# -- views and close ----------------------------------------------------------------------------


def test_view_works_with_stdlib(backend: str) -> None:
    with SecureBuffer(32, backend=backend) as sb:
        r, w = os.pipe()
        try:
            os.write(w, b"k" * 32)
            with sb.view() as v:
                assert os.readv(r, [v]) == 32  # readinto
                assert hmac.compare_digest(v, b"k" * 32)
                v[:4] = b"abcd"
                v[4] = 0x41
                assert bytes(v[:5]) == b"abcdA"
                assert os.write(w, v[:5]) == 5
            assert os.read(r, 5) == b"abcdA"
        finally:
            os.close(r)
            os.close(w)


def test_close_refuses_while_any_derived_view_lives(backend: str) -> None:
    np = pytest.importorskip("numpy")
    sb = SecureBuffer(32, backend=backend)
    secret = fill_random(sb)

    v = sb.view()
    with pytest.raises(BufferError):
        sb.close()
    s = v[2:9]
    v.release()  # releasing the view does not release the slice cut from it
    with pytest.raises(BufferError):
        sb.close()
    m = memoryview(s)
    del s
    with pytest.raises(BufferError):
        sb.close()
    del m
    a = np.frombuffer(sb.view(), dtype=np.uint8)[4:]
    with pytest.raises(BufferError):
        sb.close()
    del a
    c = ctypes.c_char.from_buffer(sb.view())
    with pytest.raises(BufferError):
        sb.close()
    del c
    o = sb.view().obj  # the exporter itself
    with pytest.raises(BufferError):
        sb.close()
    del o
    assert bytes(sb.view()) == secret  # nothing was wiped by the refusals
    sb.close()
    assert sb.closed
    sb.close()  # idempotent
    with pytest.raises(ValueError):
        sb.view()


def test_view_keeps_buffer_alive() -> None:
    sb = SecureBuffer(16)
    v = sb.view()
    v[:] = b"x" * 16
    del sb
    gc.collect()
    assert bytes(v) == b"x" * 16  # still the secret, not wiped or reused memory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del v
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_reused_slot_starts_zeroed_and_closed_slot_is_wiped(backend: str) -> None:
    keep = SecureBuffer(32, backend=backend)  # keeps the chunk mapped
    sb = SecureBuffer(32, backend=backend)
    fill_random(sb)
    a = addr(sb)
    sb.close()
    assert ctypes.string_at(a, 32) == bytes(32)  # wiped (the canary after it stays)
    again = SecureBuffer(32, backend=backend)
    assert addr(again) == a  # the same slot came back (LIFO) ...
    assert bytes(again.view()) == bytes(32)  # ... zeroed
    again.close()
    keep.close()


def test_collected_open_buffer_warns_then_wipes(backend: str) -> None:
    keep = SecureBuffer(32, backend=backend)
    sb = SecureBuffer(32, backend=backend)
    fill_random(sb)
    a = addr(sb)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del sb
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert ctypes.string_at(a, 32) == bytes(32)
    again = SecureBuffer(32, backend=backend)  # the slot went back, intact
    assert addr(again) == a and bytes(again.view()) == bytes(32)
    again.close()
    keep.close()


def test_collected_open_buffer_is_wiped_even_when_its_warning_is_an_error(
        backend: str) -> None:
    keep = SecureBuffer(32, backend=backend)
    sb = SecureBuffer(32, backend=backend)
    fill_random(sb)
    a = addr(sb)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # as under -W error
        del sb
        gc.collect()
    assert ctypes.string_at(a, 32) == bytes(32)
    again = SecureBuffer(32, backend=backend)  # the slot went back, intact
    assert addr(again) == a and bytes(again.view()) == bytes(32)
    again.close()
    keep.close()


def test_canary_overrun_detected_at_close(backend: str) -> None:
    keep = SecureBuffer(24, backend=backend)
    sb = SecureBuffer(24, backend=backend)
    a = addr(sb)
    ctypes.memset(a + 24, 0x41, 1)  # one byte past the end
    with pytest.raises(RuntimeError, match="canary"):
        sb.close()
    assert sb.closed
    assert ctypes.string_at(a, 32) == bytes(32)  # wiped anyway
    fresh = SecureBuffer(24, backend=backend)
    assert addr(fresh) != a  # the damaged slot is retired
    fresh.close()
    keep.close()


def test_canary_overrun_by_a_collected_buffer_is_not_blamed_on_the_next(backend: str) -> None:
    keep = SecureBuffer(24, backend=backend)
    sb = SecureBuffer(24, backend=backend)
    a = addr(sb)
    ctypes.memset(a + 24, 0x41, 1)  # overrun by an owner that then leaks the buffer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del sb
        gc.collect()
    kinds = {w.category for w in caught}
    assert kinds == {ResourceWarning, RuntimeWarning}, caught
    assert any("past its end" in str(w.message) for w in caught), caught
    fresh = SecureBuffer(24, backend=backend)
    assert addr(fresh) != a  # the damaged slot is retired, not handed on
    fresh.close()  # and its new owner is not blamed
    keep.close()


def _flip(address: int) -> None:
    """Change one byte (whatever its value: the canary is random per process)."""
    ctypes.memset(address, ctypes.string_at(address, 1)[0] ^ 0xFF, 1)


def _neighbours(backend: str) -> tuple[SecureBuffer, SecureBuffer, list[SecureBuffer]]:
    """Two pooled 32-byte buffers in adjacent slots (32 bytes between two 8-byte canaries),
    and the others made on the way (to close)."""
    made = [SecureBuffer(32, backend=backend) for _ in range(8)]
    by_address = sorted(made, key=addr)
    for x, y in itertools.pairwise(by_address):
        if addr(y) - addr(x) == 48:
            return x, y, [z for z in made if z is not x and z is not y]
    raise AssertionError("no two adjacent slots among 8")


def test_pooled_underrun_is_blamed_on_the_underrun_buffer(backend: str) -> None:
    a_, b_, others = _neighbours(backend)
    pb = addr(b_)
    for i in range(1, 5):  # a 4-byte underrun of b
        _flip(pb - i)
    a_.close()  # a is intact: its neighbour's underrun is not its fault
    with pytest.raises(RuntimeError, match=r"before its start \(an underrun\)") as info:
        b_.close()
    assert "32-byte" in str(info.value) and "overrun of the slot before" not in str(info.value)
    assert b_.closed
    assert ctypes.string_at(pb - 8, 48) == bytes(48)  # wiped whole, retired
    for x in others:
        x.close()


def test_pooled_overrun_into_the_next_slot_names_both_neighbours(backend: str) -> None:
    a_, b_, others = _neighbours(backend)
    pa, pb = addr(a_), addr(b_)
    ctypes.memset(pa + 32, 0x41, 12)  # 12 bytes past a: a's canary, and 4 of b's
    with pytest.raises(RuntimeError) as info:
        a_.close()
    text = str(info.value)
    assert "past its end (an overrun, or an underrun of the slot after it" in text, text
    with pytest.raises(RuntimeError) as info:
        b_.close()
    text = str(info.value)
    assert "before its start (an underrun, or an overrun of the slot before it" in text, text
    assert ctypes.string_at(pb, 32) == bytes(32)
    for x in others:
        x.close()


def test_canary_underrun_detected_isolated(backend: str) -> None:
    sb = SecureBuffer(24, isolated=True, backend=backend)
    before = addr(sb) - 1  # the canary's last byte: random per process, so change it
    ctypes.memset(before, ctypes.string_at(before, 1)[0] ^ 0xFF, 1)  # (0x41 was 1 in 256)
    with pytest.raises(RuntimeError, match="canary"):
        sb.close()


# -- protection -------------------------------------------------------------------------------


def test_protection_toggling(backend: str) -> None:
    sb = SecureBuffer(32, isolated=True, backend=backend)
    assert sb.protection == "readwrite"
    start = vma(addr(sb))["start"]
    sb.view()[:3] = b"abc"
    sb.readonly()
    assert vma(start)["perms"].startswith("r-")
    with sb.view() as v:
        assert v.readonly and bytes(v[:3]) == b"abc"
        with pytest.raises(TypeError):
            v[0] = 1
    sb.noaccess()
    assert vma(start)["perms"].startswith("---")
    assert sb.protection == "none" and "protection=none" in repr(sb)
    with pytest.raises(ValueError):
        sb.view()
    with sb.access() as v:
        assert vma(start)["perms"].startswith("r-")
        assert v.readonly and bytes(v[:3]) == b"abc"
    assert vma(start)["perms"].startswith("---")
    with sb.access(write=True) as v:
        v[:3] = b"xyz"
    assert sb.protection == "none"
    sb.readwrite()
    v = sb.view()
    with pytest.raises(BufferError):
        sb.noaccess()  # a live view would fault
    with pytest.raises(BufferError):
        sb.readonly()
    del v
    sb.noaccess()
    sb.close()  # closes from noaccess (canary checked after reopening)


def test_access_escape_is_reported() -> None:
    sb = SecureBuffer(8, isolated=True)
    sb.noaccess()
    kept = []
    with pytest.raises(BufferError), sb.access() as v:
        kept.append(v[:4])
    assert sb.protection == "read"  # stays open while the slice lives
    kept.clear()
    sb.noaccess()
    sb.close()


def test_pooled_has_no_protection_toggling() -> None:
    with SecureBuffer(32) as sb:
        with pytest.raises(ValueError):
            sb.noaccess()
        with sb.access() as v:  # still usable for uniform code
            assert v.readonly
        with sb.access(write=True) as v:
            v[0] = 1


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 688 buffer protocol needs 3.12+")
def test_buffer_protocol_312() -> None:  # pragma: no cover - 3.11 here
    with SecureBuffer(4) as sb:
        m = memoryview(sb)  # type: ignore[arg-type,unused-ignore]
        m[:] = b"abcd"
        assert hmac.compare_digest(sb, b"abcd")  # type: ignore[arg-type,unused-ignore]
        with pytest.raises(BufferError):
            sb.close()
        m.release()


# -- pool ---------------------------------------------------------------------------------------


def test_threads_keep_the_pool_consistent(backend: str) -> None:
    _securemem.trim()
    base_locked = vmlck()
    base_stats = _securemem.pool_stats().get(backend)
    errors: list[BaseException] = []
    live: dict[int, tuple[int, int]] = {}
    live_lock = threading.Lock()

    def work(tid: int) -> None:
        try:
            for i in range(400):
                size = (16, 24, 32, 100, 700, 3000)[(tid + i) % 6]
                sb = SecureBuffer(size, backend=backend)
                pattern = bytes([tid * 16 + i % 16]) * size
                with sb.view() as v:
                    assert bytes(v) == bytes(size)  # starts zeroed
                    a = address_of(v) if size else 0
                    v[:] = pattern
                with live_lock:  # no two live secrets share bytes
                    for other, (oa, on) in live.items():
                        assert a + size <= oa or oa + on <= a, (other, id(sb))
                    live[id(sb)] = (a, size)
                with sb.view() as v:
                    assert bytes(v) == pattern
                with live_lock:
                    del live[id(sb)]
                sb.close()  # reused slots start zeroed (checked above): closed ones wiped
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    stats = _securemem.pool_stats()[backend]
    if base_stats is not None:  # earlier tests may have retired slots (canary tests)
        assert [s[3] for s in stats] == [s[3] for s in base_stats]
        assert all(now[1] <= before[1] + 1 for now, before in zip(stats, base_stats,
                                                                   strict=True))
    else:
        assert all(live == 0 for _, _, _, live in stats)
        assert all(chunks <= 1 for _, chunks, _, _ in stats)  # empty chunks went back
    _securemem.trim()
    assert vmlck() == base_locked


def test_chunks_grow_and_go_back(backend: str) -> None:
    _securemem.trim()
    before = vmlck()
    # Size class 256: no other test retires a slot there (canary tests use class 32).
    base = _securemem.pool_stats().get(backend, [(0, 0, 0, 0)] * 8)[4]
    assert base[1:] == (0, 0, 0)
    bufs = [SecureBuffer(250, backend=backend) for _ in range(3000)]
    (_, chunks, nbytes, live) = _securemem.pool_stats()[backend][4]
    assert live == 3000 and 1 < chunks < 15 and nbytes >= 3000 * 264
    assert vmlck() - before == nbytes
    for sb in bufs:
        sb.close()
    (_, chunks, _, live) = _securemem.pool_stats()[backend][4]
    assert live == 0 and chunks == 1  # one empty chunk kept for reuse
    _securemem.trim()
    assert vmlck() == before


# -- read_secret ----------------------------------------------------------------------------------


def test_read_secret_from_pipe_and_file(tmp_path: os.PathLike[str]) -> None:
    data = os.urandom(3000)
    r, w = os.pipe()
    try:
        os.write(w, data)
        os.close(w)
        w = -1
        with memlock.read_secret(r) as sb:
            assert len(sb) == 3000 and bytes(sb.view()) == data
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    path = os.path.join(tmp_path, "key")
    with open(path, "wb") as f:
        f.write(b"hunter2\r\n")
    with memlock.read_secret(path) as sb:
        assert bytes(sb.view()) == b"hunter2\r\n"
    with memlock.read_secret(path, strip_newline=True, isolated=True) as sb:
        assert bytes(sb.view()) == b"hunter2" and sb.isolated
    with memlock.read_secret(path, 4) as sb:
        assert bytes(sb.view()) == b"hunt"
    with pytest.raises(EOFError):
        memlock.read_secret(path, 100)
    with pytest.raises(ValueError):
        memlock.read_secret(path, max_size=5)
    with pytest.raises(TypeError):
        memlock.read_secret(3.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        memlock.read_secret(True)  # type: ignore[arg-type]


def test_read_secret_grows_for_unknown_length() -> None:
    data = os.urandom(100_000)
    r, w = os.pipe()

    def writer() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    t = threading.Thread(target=writer)
    t.start()
    try:
        with memlock.read_secret(r) as sb:
            assert len(sb) == len(data) and bytes(sb.view()) == data
    finally:
        t.join()
        os.close(r)
