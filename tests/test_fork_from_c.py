"""A fork made from C (a C library calling fork(), here ctypes) runs no os.register_at_fork
hook: memlock must still know, in the child, that it holds no lock and no secret."""

from __future__ import annotations

import json

from .kernel import run_child

CHILD = """
import ctypes, json, os, sys
import memlock
from memlock._lock import REGISTRY
from tests.kernel import PAGE, address_of, anon, page_states, vmlck

buf = anon(4)
lk = memlock.lock(buf, 0, 2 * PAGE)
sb = memlock.SecureBuffer(32)
with sb.view() as v:
    v[:] = b"s" * 32
r, w = os.pipe()
pid = ctypes.CDLL(None).fork()  # no Python at-fork hook runs
if pid == 0:
    os.close(r)
    a = address_of(buf)
    out = {"vmlck_at_start": vmlck(), "inherited_lock": lk.locked,
           "inherited_secret_closed": sb.closed}
    try:
        sb.view()
        out["view"] = "allowed"
    except ValueError:
        out["view"] = "refused"
    fresh = memlock.lock(buf, 0, 2 * PAGE)  # the parent's count must not stop this mlock
    out["fresh"] = [fresh.locked, vmlck(), page_states([a, a + PAGE])]
    fresh.unlock()
    out["after"] = [vmlck(), page_states([a, a + PAGE])]
    lk.unlock()  # the parent's: a no-op here
    with memlock.SecureBuffer(32) as mine:
        out["new_secret"] = bytes(mine.view()) == bytes(32)
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.close(w)
data = b""
while chunk := os.read(r, 65536):
    data += chunk
_, status = os.waitpid(pid, 0)
print(json.dumps({"status": status, "child": json.loads(data or b"null"),
                  "parent": [lk.locked, vmlck(), bytes(sb.view())[:1].decode()]}))
lk.unlock()
sb.close()
"""


def test_a_fork_made_from_c_is_noticed(lock_path: str) -> None:
    proc = run_child(CHILD)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["status"] == 0, out
    child = out["child"]
    assert child["vmlck_at_start"] == 0  # the kernel: locks are not inherited
    assert child["inherited_lock"] is False
    assert child["inherited_secret_closed"] is True and child["view"] == "refused"
    assert child["fresh"] == [True, 2 * 4096, ["full", "full"]]
    assert child["after"] == [0, ["none", "none"]]
    assert child["new_secret"] is True
    assert out["parent"][0] is True and out["parent"][2] == "s"  # the parent is untouched
