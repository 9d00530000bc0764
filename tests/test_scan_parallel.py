"""Scans shared among forked workers give exactly the serial scan's rows, errors and order."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memlock._fanout import fan_out
from memlock._walk import Share, WalkOptions, scan, scan_rows

from .kernel import child_env, output, python_cmd, run_as_nobody, run_child, run_cli, world_dir

Row = tuple[str, int, int, int]

#: Python source for a parent whose fan_out workers print their pids.
WORKERS_SAY_PIDS = (
    "import os, time\n"
    "from memlock._fanout import fan_out\n"
    "parent = os.getpid()\n"
    "def say_pid():  # one write: two workers' lines never mix\n"
    "    os.write(1, b'%d\\n' % os.getpid())\n"
)

#: Python source that prints whether this process still has a child to reap.
NO_CHILD_LEFT = (
    "try:\n"
    "    os.waitpid(-1, os.WNOHANG)\n"
    "    print('child left')\n"
    "except ChildProcessError:\n"
    "    print('none left')\n"
)


def measure(path: str, fd: int, st_: os.stat_result) -> Row | None:
    """A row that also proves the descriptor is the file's: its first byte."""
    if fd < 0:
        return None
    head = os.pread(fd, 1, 0)
    return (path, st_.st_size, st_.st_ino, head[0] if head else -1)


def rows_and_errors(paths: list[str], workers: int, options: WalkOptions | None = None,
                    ) -> tuple[list[Row], list[tuple[str, int | None, str]]]:
    errors: list[tuple[str, int | None, str]] = []

    def on_error(path: str, exc: OSError) -> None:
        errors.append((path, exc.errno, type(exc).__name__))

    rows = scan_rows(paths, options or WalkOptions(), on_error, measure, workers)
    return rows, errors


def interleaved_tree(root: Path) -> None:
    """Files before and after subdirectories, hard links across directories, empties."""
    for d in ("a", "a/b", "a/b/c", "a/e", "f", "g"):
        (root / d).mkdir()
    for i, rel in enumerate(["a/0", "a/b/1", "a/b/c/2", "a/b/z", "a/e/3", "a/z", "f/4",
                             "z"]):
        (root / rel).write_bytes(bytes([i]) * (i * 1000 + 1))
    os.link(root / "a/b/1", root / "f/link-to-1")    # later in scan order: dropped
    os.link(root / "a/e/3", root / "a/b/c/0-link")   # earlier in scan order: kept there


def test_the_parallel_scan_equals_the_serial_one(tmp_path: Path) -> None:
    interleaved_tree(tmp_path)
    serial, serial_errors = rows_and_errors([str(tmp_path)], 1)
    names = [os.path.relpath(r[0], tmp_path) for r in serial]
    assert names == ["a/0", "a/b/1", "a/b/c/0-link", "a/b/c/2", "a/b/z", "a/z", "f/4", "z"]
    assert serial_errors == []
    for workers in (2, 3, 5, 8):
        assert rows_and_errors([str(tmp_path)], workers) == (serial, [])


def test_every_worker_visits_only_its_share(tmp_path: Path) -> None:
    interleaved_tree(tmp_path)
    seen: list[list[str]] = []
    for index in range(3):
        mine: list[str] = []
        scan([str(tmp_path)], WalkOptions(), lambda p, e: None,
             lambda p, fd, s, mine=mine: mine.append(p) or True,  # type: ignore[misc]
             Share(index, 3))
        seen.append(mine)
    everything = sorted(p for part in seen for p in part)
    assert len(everything) == len(set(everything))           # no file in two shares
    serial = [r[0] for r in rows_and_errors([str(tmp_path)], 1)[0]]
    # every file once (the hard links may be visited by two workers: merged later)
    assert set(everything) >= set(serial)
    assert sum(1 for part in seen if part) >= 2               # the work is really split


def test_errors_are_reported_once_in_order(tmp_path: Path) -> None:
    interleaved_tree(tmp_path)
    os.symlink(tmp_path / "nowhere", tmp_path / "a" / "broken")
    (tmp_path / "g" / "x").write_bytes(b"x")
    paths = [str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "a" / "z"),
             str(tmp_path / "also-missing")]
    options = WalkOptions(follow_symlinks=True)
    serial = rows_and_errors(paths, 1, options)
    assert [e[0] for e in serial[1]] == [paths[0], str(tmp_path / "a" / "broken"), paths[3]]
    assert serial[1][0][2] == "FileNotFoundError"
    for workers in (2, 4):
        assert rows_and_errors(paths, workers, options) == serial
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:  # no fork while a thread runs: the same answer, from this process alone
        assert rows_and_errors(paths, 3, options) == serial
    finally:
        stop.set()
        t.join()


def test_a_path_given_twice_and_a_fifo_root(tmp_path: Path) -> None:
    interleaved_tree(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    paths = [str(fifo), str(tmp_path), str(tmp_path)]
    serial = rows_and_errors(paths, 1)
    assert [e[0] for e in serial[1]] == [str(fifo)]  # one error; the tree walked once
    assert rows_and_errors(paths, 3) == serial


def test_unreadable_directories_and_files_are_reported_once_unprivileged() -> None:
    """As uid 65534: a directory and a file it may not read, each one error, in order."""
    with world_dir("memlock-scan-") as root:
        interleaved_tree(root)
        for p in root.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(root / "a" / "b", 0)     # cannot be listed
        os.chmod(root / "a" / "0", 0)     # cannot be opened, and has three more names:
        for d in ("a/e", "f", "g"):       # one error for all four, as the serial scan
            os.link(root / "a" / "0", root / d / "0-again")
        # The helpers' own source: this module needs hypothesis, which that uid lacks.
        code = "\n".join([
            "from __future__ import annotations",
            "import json, os, sys",
            "from memlock._walk import WalkOptions, scan_rows",
            inspect.getsource(measure), inspect.getsource(rows_and_errors),
            "print(json.dumps([rows_and_errors([sys.argv[1]], w) for w in (1, 2, 3)]))",
        ])
        proc = run_as_nobody(code, args=[str(root)], cwd="/")
    assert proc.returncode == 0, proc.stderr
    serial, two, three = json.loads(proc.stdout)
    assert [(os.path.relpath(p, root), n) for p, _, n in serial[1]] == [
        ("a/0", "PermissionError"), ("a/b", "PermissionError")]
    assert two == serial and three == serial


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.booleans()),
                       min_size=1, max_size=30),
       workers=st.integers(2, 4))
def test_random_trees_scan_alike_in_parallel(tmp_path_factory: object, layout: list[
        tuple[int, int, bool]], workers: int) -> None:
    """Random nesting, files and hard links: rows of n workers == rows of one."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made: list[Path] = []
        for i, (depth, width, link) in enumerate(layout):
            d = root.joinpath(*[f"d{(i + k) % (width + 1)}" for k in range(depth)])
            d.mkdir(parents=True, exist_ok=True)
            if link and made:
                os.link(made[(i * 7) % len(made)], d / f"l{i}")
            else:
                (d / f"f{i}").write_bytes(bytes([i % 256]) * (i * 97 % 5000))
                made.append(d / f"f{i}")
        assert rows_and_errors([str(root)], workers) == rows_and_errors([str(root)], 1)


def test_fan_out_redoes_a_failed_or_killed_child() -> None:
    parent = os.getpid()

    def work(index: int, count: int) -> tuple[int, int, int]:
        if os.getpid() != parent:
            if index == 1:
                raise RuntimeError("fails in the child")
            if index == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return (index, count, os.getpid())

    results = fan_out(work, 4)
    assert [r[:2] for r in results] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert results[1][2] == parent and results[2][2] == parent  # redone here
    assert results[3][2] != parent                               # done by its child


def test_fan_out_stays_serial_while_threads_run() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert fan_out(lambda i, n: (i, n, os.getpid()), 4) == [(0, 1, os.getpid())]
    finally:
        stop.set()
        t.join()


def test_fan_out_leaves_no_children_behind() -> None:
    code = (
        "import os\n"
        "from memlock._fanout import fan_out\n"
        "print(fan_out(lambda i, n: [i] * 20000, 3)[2][:3])\n"
        + NO_CHILD_LEFT
    )
    out = output(run_child(code)).split("\n")
    assert out[:2] == ["[2, 2, 2]", "none left"]  # 160 KB through the pipe, all reaped


def test_cli_jobs_give_the_same_report(tmp_path: Path) -> None:
    interleaved_tree(tmp_path)

    def report(*args: str) -> object:
        return json.loads(output(run_cli("resident", "--json", *args, str(tmp_path))))

    one = report("-j", "1")
    assert len(one["files"]) == 8  # type: ignore[index]
    assert report("-j", "3") == one
    assert report() == one
    bad = run_cli("resident", "-j", "0", str(tmp_path))
    assert bad.returncode == 2 and "not a number of processes" in bad.stderr
    bad = run_cli("resident", "-j", "65", str(tmp_path))
    assert bad.returncode == 2 and "from 1 to 64" in bad.stderr


def test_a_file_named_twice_is_counted_once(tmp_path: Path) -> None:
    """Repeated and overlapping paths, a link named with its target: single-link files."""
    interleaved_tree(tmp_path)
    os.symlink(tmp_path / "a" / "z", tmp_path / "link-to-az")
    t = str(tmp_path)
    cases = [
        [f"{t}/z", f"{t}/z", f"{t}/a", f"{t}/a/b/z", f"{t}/a/0"],
        [f"{t}/a/b", f"{t}/a", f"{t}/a/b/1", f"{t}/a/e/3"],
        [f"{t}/link-to-az", t],
    ]
    for paths in cases:
        serial = rows_and_errors(paths, 1)
        assert len({r[2] for r in serial[0]}) == len(serial[0])  # each inode once
        for workers in (2, 3):
            assert rows_and_errors(paths, workers) == serial, (paths, workers)


def test_errors_of_files_in_every_share_are_reported(tmp_path: Path) -> None:
    """An OSError from measuring a file is that file's error, whichever worker meets it."""
    for d in range(12):
        (tmp_path / f"d{d:02}").mkdir()
        for f in ("bad", "good"):
            (tmp_path / f"d{d:02}" / f).write_bytes(b"x")
    os.link(tmp_path / "d00" / "bad", tmp_path / "d07" / "bad-again")

    def failing(path: str, fd: int, st_: os.stat_result) -> Row | None:
        if "bad" in os.path.basename(path):
            raise OSError(5, "Input/output error")
        return measure(path, fd, st_)

    def run(workers: int) -> tuple[list[Row], list[str]]:
        errors: list[str] = []
        rows = scan_rows([str(tmp_path)], WalkOptions(),
                         lambda p, e: errors.append(f"{os.path.relpath(p, tmp_path)}: "
                                                    f"{e.strerror}"), failing, workers)
        return rows, errors

    serial = run(1)
    assert len(serial[0]) == 12 and len(serial[1]) == 12  # d07/bad-again is d00/bad
    assert run(2) == serial and run(5) == serial


def change_after_first_worker(monkeypatch: pytest.MonkeyPatch,
                              change: Callable[[], None]) -> None:
    """Make fan_out run its workers one after another here, with ``change`` after the first."""
    from memlock import _fanout

    def fan_out(work: Callable[[int, int], object], workers: int) -> list[object]:
        first = work(0, workers)
        change()
        return [first] + [work(i, workers) for i in range(1, workers)]

    monkeypatch.setattr(_fanout, "fan_out", fan_out)


def test_workers_that_walked_different_trees_are_not_merged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory made between two workers' walks: the scan is redone in one process."""
    interleaved_tree(tmp_path)

    def grow() -> None:  # the tree changes under the scan
        (tmp_path / "a" / "new").mkdir()
        (tmp_path / "a" / "new" / "late").write_bytes(b"late")

    change_after_first_worker(monkeypatch, grow)
    rows, errors = rows_and_errors([str(tmp_path)], 3)
    monkeypatch.undo()
    assert (rows, errors) == rows_and_errors([str(tmp_path)], 1)
    assert any(r[0].endswith("a/new/late") for r in rows)


def test_a_link_re_pointed_between_workers_is_not_merged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same names, another tree (a symlink-swap deploy): the walks differ by identity."""
    for tree_name, size in (("A", 2), ("B", 8)):
        for d in range(6):
            (tmp_path / tree_name / f"d{d}").mkdir(parents=True)
            (tmp_path / tree_name / f"d{d}" / "f").write_bytes(b"x" * size)
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "A")

    def deploy() -> None:
        current.unlink()
        current.symlink_to(tmp_path / "B")

    change_after_first_worker(monkeypatch, deploy)
    rows, _ = rows_and_errors([str(current)], 3)
    monkeypatch.undo()
    assert len(rows) == 6 and {r[1] for r in rows} == {8}  # all from B, none from A


def test_a_bind_mounted_file_is_counted_once(tmp_path: Path) -> None:
    """One name each, one inode: only a bind mount does that without hard links."""
    (tmp_path / "a").mkdir()
    (tmp_path / "z").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"hello")
    (tmp_path / "z" / "g").write_bytes(b"")
    bound = subprocess.run(["mount", "--bind", str(tmp_path / "a" / "f"),
                            str(tmp_path / "z" / "g")], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bound.stderr.strip()}")
    try:
        serial = rows_and_errors([str(tmp_path)], 1)
        assert [os.path.relpath(r[0], tmp_path) for r in serial[0]] == ["a/f"]
        for workers in (2, 5):
            assert rows_and_errors([str(tmp_path)], workers) == serial
    finally:
        subprocess.run(["umount", str(tmp_path / "z" / "g")], check=True)


def test_a_parent_short_of_descriptors_still_gives_the_serial_answer(tmp_path: Path) -> None:
    """Pipes to the workers cost the parent descriptors: a deep walk must not diverge."""
    d = tmp_path
    for level in range(80):
        d = d / "d"
        d.mkdir()
        (d / f"f{level:02}").write_bytes(b"x")

    def report(jobs: str) -> object:
        out = run_cli("resident", "--json", "-j", jobs, str(tmp_path),
                      prefix=["prlimit", "--nofile=50"])
        return out.returncode, json.loads(out.stdout) if out.stdout else out.stderr

    serial = report("1")
    assert report("2") == serial  # parent and child short alike: still not the serial walk
    assert report("4") == serial


def test_interrupting_the_parent_kills_and_reaps_its_workers() -> None:
    """KeyboardInterrupt in the parent's share (SIGINT to it alone): no worker survives."""
    code = (
        WORKERS_SAY_PIDS
        + "def work(i, n):\n"
        "    if os.getpid() != parent:\n"
        "        say_pid()\n"
        "        time.sleep(60)\n"
        "    time.sleep(0.5)\n"
        "    raise KeyboardInterrupt\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    fan_out(work, 3)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after', round(time.monotonic() - t, 1), flush=True)\n"
        + NO_CHILD_LEFT
    )
    out = run_child(code, timeout=30).stdout.split()
    pids = [int(x) for x in out[:2]]
    assert out[2:4] == ["interrupted", "after"] and float(out[4]) < 5
    assert out[5:] == ["none", "left"]
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")


def test_workers_die_with_their_parent() -> None:
    """SIGKILL to the parent: its workers do not scan on as orphans (PR_SET_PDEATHSIG)."""
    code = (
        WORKERS_SAY_PIDS
        + "def work(i, n):\n"
        "    if os.getpid() != parent:\n"
        "        say_pid()\n"
        "    time.sleep(60)\n"
        "fan_out(work, 3)\n"
    )
    with subprocess.Popen(python_cmd(code), stdout=subprocess.PIPE, text=True,
                          env=child_env()) as proc:
        try:
            assert proc.stdout is not None
            pids = [int(proc.stdout.readline()) for _ in range(2)]
        finally:
            proc.kill()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")
             and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()]
    assert alive == []
