"""CLI: memlock resident | touch | evict | lock, the holder checked through its /proc files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kernel import (
    CLI,
    PAGE,
    child_env,
    drop_cache,
    file_resident_pages,
    make_file,
    mappings,
    run_cli,
    status_bytes,
    unprivileged_cmd,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")
MIB = 2**20


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    make_file(str(root / "a.bin"), 3 * PAGE)
    make_file(str(root / "sub" / "b.idx"), 5 * PAGE + 1)
    make_file(str(root / "sub" / "c.bin"), 64 * 1024)
    os.link(root / "a.bin", root / "sub" / "a-link.bin")  # counted once
    return root


def _files(doc: dict[str, object]) -> dict[str, dict[str, int]]:
    return {os.path.basename(f["path"]): f for f in doc["files"]}  # type: ignore[attr-defined,index]


def test_resident_json_matches_mincore(tree: Path) -> None:
    for p in tree.rglob("*"):
        if p.is_file():
            drop_cache(str(p))
    os.pread(os.open(tree / "sub" / "b.idx", os.O_RDONLY), PAGE, 0)  # fd closed at exit
    r = run_cli("resident", "--json", str(tree))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    files = _files(doc)
    assert sorted(files) in (["a.bin", "b.idx", "c.bin"], ["a-link.bin", "b.idx", "c.bin"])
    for f in doc["files"]:
        assert f["resident_pages"] == file_resident_pages(f["path"])
        assert f["pages"] == -(-f["size_bytes"] // PAGE)
    assert files["b.idx"]["resident_pages"] >= 1
    total = doc["total"]
    assert total["files"] == 3
    assert total["size_bytes"] == 3 * PAGE + 5 * PAGE + 1 + 64 * 1024
    assert total["resident_pages"] == sum(f["resident_pages"] for f in doc["files"])


def test_resident_text_and_filters(tree: Path, tmp_path: Path) -> None:
    r = run_cli("resident", str(tree))
    assert r.returncode == 0
    assert "total: 3 files" in r.stdout.splitlines()[-1]
    r = run_cli("resident", "-q", str(tree))
    assert len(r.stdout.splitlines()) == 1
    doc = json.loads(run_cli("resident", "--json", "--include", "*.idx", str(tree)).stdout)
    assert list(_files(doc)) == ["b.idx"]
    doc = json.loads(run_cli("resident", "--json", "--exclude", "sub", str(tree)).stdout)
    assert list(_files(doc)) == ["a.bin"]
    doc = json.loads(run_cli("resident", "--json", "--max-size", "16K", str(tree)).stdout)
    assert list(_files(doc)) == ["a.bin"]
    doc = json.loads(run_cli("resident", "--json", "--range", "4K-8K", str(tree)).stdout)
    assert {f["size_bytes"] for f in doc["files"]} == {PAGE}
    listing = f"{tree / 'a.bin'}\0{tree / 'sub' / 'c.bin'}\0"
    doc = json.loads(run_cli("resident", "--json", "--files-from", "-", "-0", input=listing).stdout)
    assert sorted(_files(doc)) == ["a.bin", "c.bin"]
    r = run_cli("resident", str(tmp_path / "missing"), str(tree / "a.bin"))
    assert r.returncode == 1
    assert "No such file or directory" in r.stderr
    assert "total: 1 file," in r.stdout
    assert run_cli("resident", "--max-size", "lots", str(tree)).returncode == 2


def test_touch_and_evict_cli(tree: Path) -> None:
    b = str(tree / "sub" / "b.idx")
    r = run_cli("evict", "--json", str(tree))
    assert r.returncode == 0
    assert file_resident_pages(b) == 0
    assert json.loads(r.stdout)["total"]["resident_pages"] == 0
    r = run_cli("touch", "-q", str(tree))
    assert r.returncode == 0, r.stderr
    assert file_resident_pages(b) == 6
    assert r.stderr == ""  # no progress bar when stderr is not a terminal


# -- the holder --------------------------------------------------------------------------


class Holder:
    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.proc = subprocess.Popen([*(prefix or []), *CLI, "lock", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=child_env(env))
        self.pid = self.proc.pid

    def summary(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            assert self.proc.stderr is not None
            pytest.fail(f"holder exited {self.proc.returncode}: {self.proc.stderr.read()}")
        return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def locked_mappings(self, path: str) -> list[dict[str, object]]:
        return [m for m in mappings(self.pid, path) if "lo" in m["flags"]]


@contextlib.contextmanager
def holding(*args: str, **kw: object) -> Iterator[Holder]:
    h = Holder(*args, **kw)  # type: ignore[arg-type]
    try:
        yield h
    finally:
        if h.proc.poll() is None:
            h.proc.kill()
        h.proc.communicate(timeout=10)  # reaps it and closes its pipes (no ResourceWarning)


def wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_lock_holds_truncation_survives_sigterm_cleans_up(tmp_path: Path) -> None:
    data = make_file(str(tmp_path / "model.bin"), 4 * MIB)
    drop_cache(data)
    pidfile = str(tmp_path / "holder.pid")
    with holding(data, "--pidfile", pidfile) as h:
        line = h.summary()
        assert "locked 1 file," in line
        assert os.path.exists(pidfile)  # by the time the summary is printed
        assert int(Path(pidfile).read_text()) == h.pid
        (m,) = h.locked_mappings(data)
        assert m["perms"] == "r--s"
        assert m["Locked"] == 4 * MIB
        assert status_bytes("VmLck", h.pid) >= 4 * MIB
        assert status_bytes("RssAnon", h.pid) < 64 * MIB  # no private copy of the file
        assert file_resident_pages(data) == 4 * MIB // PAGE
        os.truncate(data, 0)
        h.proc.send_signal(signal.SIGHUP)  # the rescan stats the file and locks it again
        wait_for(lambda: mappings(h.pid, data) == [])
        time.sleep(0.2)
        assert h.proc.poll() is None  # alive
        assert h.stop() == 0
        assert not os.path.exists(pidfile)


def test_sighup_picks_up_new_files_and_releases_vanished(tmp_path: Path) -> None:
    d = tmp_path / "models"
    d.mkdir()
    first = make_file(str(d / "one.bin"), 64 * 1024)
    with holding(str(d)) as h:
        assert "locked 1 file," in h.summary()
        second = make_file(str(d / "two.bin"), 128 * 1024)
        os.unlink(first)
        h.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(h.locked_mappings(second)) == 1)
        assert h.locked_mappings(second)[0]["Locked"] == 128 * 1024
        wait_for(lambda: mappings(h.pid, first) == [])
        assert h.stop() == 0


def test_watch_relocks_a_replaced_file(tmp_path: Path) -> None:
    target = make_file(str(tmp_path / "index.bin"), 64 * 1024)
    old_ino = os.stat(target).st_ino
    with holding(target, "--watch", "--interval", "0.1") as h:
        h.summary()
        assert h.locked_mappings(target)[0]["inode"] == old_ino
        tmp = make_file(str(tmp_path / "index.bin.new"), 192 * 1024)
        os.rename(tmp, target)
        new_ino = os.stat(target).st_ino

        def relocked() -> bool:
            maps = h.locked_mappings(target)
            return [m["inode"] for m in maps] == [new_ino]

        wait_for(relocked)
        assert h.locked_mappings(target)[0]["Locked"] == 192 * 1024
        assert h.stop() == 0


def test_notify_socket_ready_only_once_locked(tmp_path: Path) -> None:
    data = make_file(str(tmp_path / "w.bin"), MIB)
    pidfile = str(tmp_path / "p")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = f"\0memlock-test-{os.getpid()}"
    sock.bind(addr)
    sock.settimeout(20)
    env = {"NOTIFY_SOCKET": "@" + addr[1:]}
    try:
        with holding(data, "--pidfile", pidfile, env=env) as h:
            msg = sock.recv(4096).decode()
            assert "READY=1" in msg
            assert os.path.exists(pidfile)  # locked before READY
            assert h.locked_mappings(data)[0]["Locked"] == MIB
            h.summary()
            assert h.stop() == 0
            assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        sock.close()


def test_daemon_mode_returns_once_locked(tmp_path: Path) -> None:
    data = make_file(str(tmp_path / "d.bin"), MIB)
    pidfile = str(tmp_path / "d.pid")
    r = run_cli("lock", "--daemon", "--pidfile", pidfile, data)
    assert r.returncode == 0, r.stderr
    assert "locked 1 file," in r.stdout
    pid = int(Path(pidfile).read_text())
    try:
        (m,) = [m for m in mappings(pid, data) if "lo" in m["flags"]]
        assert m["Locked"] == MIB
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(pidfile))


UNPRIV = unprivileged_cmd(limit=MIB)


def test_unprivileged_over_limit_fails_before_locking_anything(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    small = make_file(str(d / "a-small.bin"), 64 * 1024)
    make_file(str(d / "b-big.bin"), 4 * MIB)
    r = run_cli("lock", "--pidfile", str(tmp_path / "p"), str(d), unprivileged=True, limit=MIB)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "RLIMIT_MEMLOCK" in r.stderr and "1.0 MiB" in r.stderr
    assert "How to fix" in r.stderr
    assert "nothing was locked" in r.stderr
    assert not (tmp_path / "p").exists()
    # --keep-going locks what fits and reports the rest.
    with holding("--keep-going", "--json", str(d), prefix=UNPRIV) as h:
        doc = json.loads(h.summary())
        assert doc["files"] == 1
        assert [f["path"] for f in doc["failed"]] == [str(d / "b-big.bin")]
        assert h.locked_mappings(small)[0]["Locked"] == 64 * 1024
        assert h.stop() == 0


def test_lock_missing_path_is_all_or_nothing(tmp_path: Path) -> None:
    data = make_file(str(tmp_path / "x.bin"), 64 * 1024)
    r = run_cli("lock", data, str(tmp_path / "missing"))
    assert r.returncode == 1
    assert "No such file or directory" in r.stderr
    assert r.stdout == ""


def test_lock_with_an_unwritable_pidfile_fails_before_locking(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    make_file(str(f), 1 << 20)
    for pidfile in (tmp_path / "missing-dir" / "x.pid", tmp_path):  # no directory; a directory
        proc = run_cli("lock", str(f), "--pidfile", str(pidfile))
        assert proc.returncode == 1 and proc.stdout == "", proc.stdout
        assert "pidfile" in proc.stderr and "nothing was locked" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]  # no .tmp left behind


def test_holder_never_locks_a_file_swapped_in_after_the_walk(tmp_path: Path) -> None:
    # The walk checks each file; a symbolic link put in its place before it is mapped
    # must not make the holder lock the link's target.
    from memlock._walk import WalkOptions
    from memlock.cli._hold import HoldConfig, Holder

    inside, outside = tmp_path / "tree" / "f.bin", tmp_path / "outside.bin"
    inside.parent.mkdir()
    make_file(str(inside), PAGE)
    make_file(str(outside), PAGE)
    config = HoldConfig(paths=[str(inside.parent)], walk=WalkOptions())
    holder = Holder(config, lambda msg: None)
    items = holder.scan()
    inside.unlink()
    os.symlink(outside, inside)
    with pytest.raises(OSError) as info:
        holder.lock_initial(items, None, lambda: False)
    assert "replaced since it was scanned" in str(info.value)
    assert not holder.held


def test_keep_going_lists_what_was_not_locked_in_text_too(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    small = make_file(str(d / "a-small.bin"), 64 * 1024)
    big = make_file(str(d / "b-big.bin"), 4 * MIB)
    with holding("--keep-going", str(d), prefix=UNPRIV) as h:
        line = h.summary()
        assert "locked 1 file," in line and "1 not locked" in line
        assert h.locked_mappings(small)[0]["Locked"] == 64 * 1024
        assert h.locked_mappings(big) == []
        assert h.stop() == 0
        _, err = h.proc.communicate(timeout=10)
    assert f"not locked: {big}: over the limit" in err, err  # which one, and why


def test_daemon_log_names_a_file_a_rescan_cannot_lock(tmp_path: Path) -> None:
    # --daemon closes stderr once locked: without --log, this error would go nowhere.
    d = tmp_path / "d"
    d.mkdir()
    make_file(str(d / "a.bin"), 64 * 1024)
    log, pidfile = tmp_path / "memlock.log", tmp_path / "pid"
    r = run_cli("lock", "--daemon", "--log", str(log), "--pidfile", str(pidfile), str(d),
                unprivileged=True, limit=MIB)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        big = make_file(str(d / "b-big.bin"), 4 * MIB)  # over the 1 MiB limit
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: big in log.read_text())
        text = log.read_text()
        assert f"cannot lock {big}: " in text and "RLIMIT_MEMLOCK" in text, text
        assert "rescan (SIGHUP)" in text and "locked 1 file," in text
        assert all(line[:4].isdigit() and "memlock lock[" in line
                   for line in text.splitlines())  # each line with its timestamp
        assert [m for m in mappings(pid, big) if "lo" in m["flags"]] == []
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists())
    assert "SIGTERM: releasing 1 file" in log.read_text()


def _many_files(d: Path, count: int) -> None:
    d.mkdir()
    for i in range(count):
        (d / f"{i:05}").write_bytes(b"x")  # one page each: 12 MiB, privileged


def test_lock_needs_a_descriptor_per_file_and_says_so(tmp_path: Path) -> None:
    # Root with CAP_IPC_LOCK: memory is no obstacle, only the descriptor limit is.
    d = tmp_path / "many"
    _many_files(d, 3000)
    r = run_cli("lock", str(d), prefix=["prlimit", "--nofile=64:64"], timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert "RLIMIT_NOFILE" in r.stderr and "3000 files" in r.stderr, r.stderr
    assert "ulimit -n" in r.stderr and "LimitNOFILE=" in r.stderr
    assert "nothing was locked" in r.stderr


def test_lock_raises_its_soft_descriptor_limit_when_the_hard_one_allows(tmp_path: Path) -> None:
    d = tmp_path / "many"
    _many_files(d, 3000)
    with holding(str(d), prefix=["prlimit", "--nofile=64:8192"]) as h:
        assert "locked 3000 files" in h.summary()
        # the kernel: 3000 locked file mappings
        assert sum("lo" in m["flags"] for m in mappings(h.pid)) >= 3000
        assert status_bytes("VmLck", h.pid) >= 3000 * PAGE
        assert h.stop() == 0
