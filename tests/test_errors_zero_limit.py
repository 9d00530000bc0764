"""RLIMIT_MEMLOCK 0 without CAP_IPC_LOCK: LockPermissionError for every feature, whatever
errno the kernel gives (mlock/mlockall: EPERM; an mmap of memfd_secret memory: EAGAIN).

Each case runs in a child without CAP_IPC_LOCK (setpriv) under ``prlimit --memlock``; the
kernel's own accounting (VmLck, VmSize, smaps) shows that nothing was locked or grown.
"""

from __future__ import annotations

import errno
import sys

import pytest

from memlock._platform import BACKEND

from .kernel import have, last_json, run_child

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux"),
    pytest.mark.skipif(not (have("setpriv") and have("prlimit")), reason="needs util-linux"),
]

CHILD = """
    import errno, json, mmap, os, tempfile
    import memlock, memlock.lowlevel
    from memlock._platform import BACKEND
    from memlock._platform._libc import real_libc
    from tests.kernel import PAGE as P, anon, address_of, page_state, status_bytes, vmlck

    L = real_libc()

    def describe(exc):
        if exc is None:
            return None
        return [type(exc).__name__, exc.errno, exc.strerror, exc.hint, exc.limit]

    def outcome(call):
        try:
            call()
        except memlock.MemlockError as exc:
            return describe(exc)
        return None

    out = {}
    fd, err = L.memfd_secret(0)
    assert not err, err
    os.ftruncate(fd, P)
    addr, out["memfd_errno"] = L.mmap(0, P, 3, 0x01, fd)
    out["memfd"] = describe(BACKEND.map_error("mmap(memfd_secret)", out["memfd_errno"], P))
    out["probe"] = describe(BACKEND.secret_memory_error())
    buf = anon(4)
    out["lock"] = outcome(lambda: memlock.lock(buf))
    with tempfile.NamedTemporaryFile() as f:
        f.write(os.urandom(4 * P))
        f.flush()
        out["lock_file"] = outcome(lambda: memlock.lock_file(f.name))
    out["lock_all"] = outcome(lambda: memlock.lock_all())
    out["mlockall"] = outcome(lambda: memlock.lowlevel.mlockall(memlock.MCL_CURRENT))
    before = status_bytes("VmSize")
    out["lock_process"] = outcome(lambda: memlock.lock_process(prefault_heap=64 << 20))
    out["vm_size_grew"] = status_bytes("VmSize") - before
    out["vmlck"] = vmlck()
    out["buf"] = page_state(address_of(buf))
    print(json.dumps(out))
"""


@pytest.mark.parametrize("hard", [0, 8 << 20], ids=["hard_0", "hard_8M"])
def test_zero_limit_is_a_permission_error_for_every_feature(hard: int) -> None:
    # Without CAP_SYS_RESOURCE as well: the child cannot raise its hard limit either.
    out = last_json(run_child(CHILD, unprivileged=True, drop=["sys_resource"], limit=(0, hard)))
    assert out["memfd_errno"] == errno.EAGAIN  # what this kernel answers for memfd_secret
    for feature in ("memfd", "probe", "lock", "lock_file", "lock_all", "mlockall",
                    "lock_process"):
        kind, err, text, hint, limit = out[feature]
        assert kind == "LockPermissionError", (feature, out[feature])
        assert err == errno.EPERM and limit == 0, (feature, out[feature])
        assert "RLIMIT_MEMLOCK is 0 and the process lacks CAP_IPC_LOCK" in text, text
        assert hint.startswith("How to fix") and "IPC_LOCK" in hint, hint
    assert "(the kernel answered EAGAIN)" in out["memfd"][2]
    # nothing was locked, and lock_process refused before growing the heap
    assert out["vmlck"] == 0 and out["buf"] == "none"
    assert out["vm_size_grew"] < 64 << 20


def test_secret_memory_probe_succeeds_with_the_privilege() -> None:
    assert BACKEND.secret_memory_error() is None
