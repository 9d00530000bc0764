#!/usr/bin/env bash
# memlock's pure-Python path on a free-threaded CPython (3.13t, the GIL disabled).
#
# Outside CI: the first run builds CPython, ~15 minutes on 2 cores. No Debian release ships
# a free-threaded interpreter (trixie and sid have no python3.13-nogil package), so this
# script fetches trixie's python3.13 source package with apt-get (a private apt state under
# .freethreaded/, gitignored), builds it with --disable-gil into .freethreaded/python, makes
# a venv with the pinned test tools, and runs the suite there with MEMLOCK_PURE_PYTHON=1 and
# PYTHON_GIL=0. Later runs reuse the build. Extra arguments go to pytest (default: the whole
# suite less what is listed below).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
FT=$REPO/.freethreaded
PYFT=$FT/python/bin/python3.13t
if [ ! -x "$PYFT" ]; then
    mkdir -p "$FT/apt/lists/partial" "$FT/apt/cache" "$FT/src"
    echo "deb-src http://deb.debian.org/debian trixie main" > "$FT/apt/sources.list"
    apt=(apt-get -q -o "Dir::Etc::SourceList=$FT/apt/sources.list"
         -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$FT/apt/lists"
         -o "Dir::Cache=$FT/apt/cache")
    "${apt[@]}" update
    (cd "$FT/src" && "${apt[@]}" source --download-only python3.13)
    tar -xf "$FT"/src/python3.13_*.orig.tar.xz -C "$FT/src"
    (cd "$FT"/src/Python-3.13.*/ \
        && ./configure -q --disable-gil --prefix="$FT/python" \
        && nice make -s -j"$(nproc)" \
        && make -s install) > "$FT/build.log" 2>&1 \
        || { tail -30 "$FT/build.log"; exit 1; }
fi
"$PYFT" -c 'import sys; assert not sys._is_gil_enabled(), "the GIL is enabled"'
VENV=$FT/venv
if [ ! -x "$VENV/bin/python" ]; then
    "$PYFT" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "$(grep -E '^pytest==' requirements-dev.txt)"
    hypothesis_pin=$(grep -E '^hypothesis==' requirements-dev.txt)
    # Recent hypothesis releases build a Rust extension where no wheel fits (3.13t has none).
    "$VENV/bin/python" -m pip install -q --only-binary :all: "$hypothesis_pin" \
        || "$VENV/bin/python" -m pip install -q --only-binary :all: hypothesis
    numpy_pin=$(grep -E '^numpy==' requirements-dev.txt)
    "$VENV/bin/python" -m pip install -q --only-binary :all: "$numpy_pin" \
        || echo "freethreaded: no free-threaded wheel of $numpy_pin: numpy tests skipped"
fi
"$VENV/bin/python" -m pip install -q -e .  # pure Python: setup.py builds no C module here
export MEMLOCK_PURE_PYTHON=1 PYTHON_GIL=0
"$VENV/bin/python" -c '
import importlib.util, sys, sysconfig
import memlock
assert sysconfig.get_config_var("Py_GIL_DISABLED")
c_module = importlib.util.find_spec("memlock._speedups") is not None
print(f"freethreaded: CPython {sys.version.split()[0]} free-threaded; GIL disabled after"
      f" importing memlock: {not sys._is_gil_enabled()}; C module present: {c_module}")
'
if [ $# -eq 0 ]; then
    # Not run here: the memory-pressure tests (global swap and cgroups), the packaging and
    # mypy checks (tools of the main venv), and five real-time tests that assume glibc's
    # malloc serves Python objects: free-threaded CPython allocates them with mimalloc, so
    # the loop does not fault even without memlock and the prefaulted glibc heap stays
    # unused (see docs/realtime.md).
    set -- -k "not pressure" --ignore=tests/test_packaging.py \
        --deselect tests/test_availability.py::test_mypy_strict_passes_on_every_platform
    for name in test_hot_loop_faults_without_memlock \
                test_hot_loop_takes_no_faults_after_lock_process \
                test_without_tune_malloc_the_loop_still_faults \
                test_lock_process_locks_everything_and_unlock_all_undoes_it \
                test_future_false_and_onfault; do
        set -- "$@" --deselect "tests/test_realtime.py::$name"
    done
fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
