"""The C module and the Python code agree on what the C code reads, or C stays off.

`_speedups.c` reads the registry's attributes and Lock's slots by name. A build left over
from another version (an old `.so` beside new Python code) must fall back to pure Python
with a warning, never run on the wrong fields: memlock/_critical.py compares the module's
LAYOUT with its C_LAYOUT, and memlock/_lock.py checks the names against the registry.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from memlock import _critical, _lock

from .kernel import REPO, SRC, child_env

C_SOURCE = SRC / "memlock" / "_speedups.c"

needs_c = pytest.mark.skipif(_critical.speedups is None,
                             reason="the C module is not built here (or MEMLOCK_PURE_PYTHON)")


def _names_read_by_c() -> set[str]:
    """Every attribute name _speedups.c reads from Python objects, from its source."""
    text = C_SOURCE.read_text()
    names = set(re.findall(r'intern\(&s_\w+, "(\w+)"\)', text))
    names |= set(re.findall(r'PyObject_CallMethod\([^,]+, "(\w+)"', text))
    names |= set(re.findall(r'PyObject_GetAttrString\([^,]+, "(\w+)"\)', text))
    return names - {"__slots__"}


@needs_c
def test_every_name_the_c_code_reads_is_in_the_handshake() -> None:
    c = _critical.speedups
    assert c is not None
    listed = set(c.REGISTRY_ATTRIBUTES) | set(c.LOCK_SLOTS)
    read = _names_read_by_c()
    assert len(read) >= 12, read  # the patterns still find what the C code reads
    assert read <= listed, sorted(read - listed)
    assert all(hasattr(_lock.REGISTRY, name) for name in c.REGISTRY_ATTRIBUTES)
    assert _lock.Lock.__slots__ == c.LOCK_SLOTS
    default = re.search(r"#define MEMLOCK_C_LAYOUT (\d+)", C_SOURCE.read_text())
    assert default is not None and int(default.group(1)) == _critical.C_LAYOUT == c.LAYOUT
    assert _lock._fast_lock is not None


def _build_copy(tmp: Path, layout: int | None) -> Path:
    """A copy of the package with _speedups built from this source, as a stale or a
    current build; returns the folder to put on PYTHONPATH."""
    root = tmp / f"layout-{layout}"
    shutil.copytree(SRC / "memlock", root / "memlock",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    target = root / "memlock" / ("_speedups" + sysconfig.get_config_var("EXT_SUFFIX"))
    define = [] if layout is None else [f"-DMEMLOCK_C_LAYOUT={layout}"]
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", *define,
                    f"-I{sysconfig.get_paths()['include']}", str(C_SOURCE), "-o", str(target)],
                   check=True, capture_output=True, timeout=120)
    return root


PROBE = r"""
import json, mmap, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import memlock
    from memlock import _critical, _lock
m = mmap.mmap(-1, 4096)
m[0] = 1
with memlock.lock(m):
    flags_locked = [l for l in open("/proc/self/smaps")
                    if l.startswith("VmFlags") and " lo" in l]
    vmlck = [l for l in open("/proc/self/status") if l.startswith("VmLck")][0].split()[1]
after = [l for l in open("/proc/self/status") if l.startswith("VmLck")][0].split()[1]
m.close()
print(json.dumps({
    "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning],
    "c_module": _critical.speedups is not None,
    "fast_path": _lock._fast_lock is not None,
    "vmlck_held": int(vmlck), "vmlck_after": int(after), "locked_vmas": len(flags_locked),
    "file": _critical.__file__,
}))
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the C module")
@pytest.mark.parametrize("layout", [None, 0], ids=["current-build", "stale-build"])
def test_a_stale_build_falls_back_to_pure_python_with_a_warning(tmp_path: Path,
                                                                layout: int | None) -> None:
    root = _build_copy(tmp_path, layout)
    env = child_env()
    env["PYTHONPATH"] = str(root)
    env.pop("MEMLOCK_PURE_PYTHON", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["file"].startswith(str(root))
    # Either way the kernel sees one page locked while held, nothing after.
    assert (out["vmlck_held"], out["vmlck_after"]) == (4, 0)
    assert out["locked_vmas"] >= 1
    if layout is None:
        assert out["warnings"] == [] and out["c_module"] and out["fast_path"]
    else:
        assert not out["c_module"] and not out["fast_path"]
        assert len(out["warnings"]) == 1, out["warnings"]
        assert "layout 0, this code needs" in out["warnings"][0]
        assert "pure-Python" in out["warnings"][0]


@needs_c
def test_a_registry_missing_a_name_keeps_the_fast_path_off() -> None:
    code = r"""
import json, warnings
from memlock import _lock
del _lock.REGISTRY._unsure  # what a registry changed without bumping the layout looks like
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    on = _lock._use_c(True)
print(json.dumps({"on": on, "fast": _lock._fast_lock is not None,
                  "warnings": [str(w.message) for w in caught]}))
"""
    env = child_env()
    env.pop("MEMLOCK_PURE_PYTHON", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["on"] is False and out["fast"] is False
    assert len(out["warnings"]) == 1 and "_unsure" in out["warnings"][0]
