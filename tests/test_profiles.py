"""Hot-set profiles (resident --save-profile, touch --profile, lock --profile --budget and
the Python API), judged by the kernel: mincore of the files, VmLck and smaps of the locker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memlock

from .kernel import (
    CHILD_PRELUDE,
    CLI,
    PAGE,
    child_env,
    drop_cache,
    file_resident_pages,
    make_file,
    output,
    run_child,
    run_cli,
    vmlck,
    world_dir,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")
MIB = 2**20
SIZE = 4 * MIB + 100  # the last page is partial
#: The hot ranges of hot.bin, in pages: (first page, pages).
HOT = [(0, 16), (200, 64), (1024, 1)]


def bring_in(path: Path, runs: list[tuple[int, int]]) -> None:
    """Exactly these pages of an evicted file into the page cache (no read-ahead)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for first, n in runs:  # Linux reads at most read_ahead_kb per call: 2 MiB steps
            for p in range(first, first + n, 512):
                os.posix_fadvise(fd, p * PAGE, min(512, first + n - p) * PAGE,
                                 os.POSIX_FADV_WILLNEED)
        for first, n in runs:
            os.pread(fd, n * PAGE, first * PAGE)  # waits for the reads
    finally:
        os.close(fd)


def resident_runs(path: Path) -> list[tuple[int, int]]:
    """(first page, pages) of every run of resident pages, page by page by mincore."""
    pages = -(-os.path.getsize(path) // PAGE)
    runs: list[tuple[int, int]] = []
    for p in range(pages):
        if file_resident_pages(path, p * PAGE, PAGE):
            if runs and sum(runs[-1]) == p:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((p, 1))
    return runs


@pytest.fixture
def hot(tmp_path: Path) -> Path:
    """tmp/hot.bin with exactly HOT resident (a real disk: /tmp is ext4 here), and cold.bin
    with nothing resident."""
    f = Path(make_file(str(tmp_path / "hot.bin"), SIZE))
    drop_cache(f)
    bring_in(f, HOT)
    drop_cache(make_file(str(tmp_path / "cold.bin"), MIB))
    assert resident_runs(f) == HOT  # the starting point the test means
    return f


def save(hot: Path) -> tuple[Path, dict[str, object]]:
    prof = hot.parent / "hot.profile"
    out = run_cli("resident", "--save-profile", str(prof), str(hot.parent))
    output(out)
    return prof, json.loads(prof.read_text())


def test_save_profile_records_identity_and_ranges(hot: Path) -> None:
    prof, doc = save(hot)
    st = hot.stat()
    assert (doc["format"], doc["version"], doc["page_size"]) == ("memlock-profile", 1, PAGE)
    files = {f["path"]: f for f in doc["files"]}  # type: ignore[attr-defined]
    assert files[str(hot)] == {"path": str(hot), "device": st.st_dev, "inode": st.st_ino,
                               "size": SIZE, "mtime_ns": st.st_mtime_ns,
                               "ranges": [[0, 16 * PAGE], [200 * PAGE, 64 * PAGE],
                                          [1024 * PAGE, 100]]}  # up to the end of the file
    assert files[str(hot.parent / "cold.bin")]["ranges"] == []
    assert not [p for p in prof.parent.iterdir() if p.name.endswith(".tmp")]  # atomic
    # The Python API sees the same.
    assert memlock.Profile.load(prof) == memlock.Profile.capture(hot.parent,
                                                                 exclude=["*.profile"])


def test_touch_profile_brings_back_exactly_the_profiled_ranges(hot: Path) -> None:
    prof, _ = save(hot)
    drop_cache(hot)
    assert resident_runs(hot) == []
    out = run_cli("touch", "--profile", str(prof), "--json")
    total = json.loads(output(out))["total"]
    assert resident_runs(hot) == HOT  # those pages, and no page around them
    assert file_resident_pages(hot.parent / "cold.bin") == 0
    assert total["resident_pages"] == total["pages"] == sum(n for _, n in HOT)
    # The library does the same.
    drop_cache(hot)
    totals = memlock.touch(memlock.Profile.load(prof))
    assert resident_runs(hot) == HOT
    assert totals is not None and totals.skipped == () and totals.files == 2


def test_touch_profile_of_ranges_larger_than_the_read_ahead_window(tmp_path: Path) -> None:
    # 12 MiB in the middle of a 32 MiB file: more than one read-ahead window (8 MiB
    # here), and a populate alone would read up to a window around what it faults.
    big = Path(make_file(str(tmp_path / "big.bin"), 32 * MIB))
    drop_cache(big)
    runs = [(1024, 3072)]  # pages: [4 MiB, 16 MiB)
    bring_in(big, runs)
    prof = tmp_path / "big.profile"
    memlock.Profile.capture(big).save(prof)
    drop_cache(big)
    output(run_cli("touch", "-q", "--profile", str(prof)))
    assert file_resident_pages(big, 4 * MIB, 12 * MIB) == 3072
    assert file_resident_pages(big, 0, 4 * MIB) == 0
    assert file_resident_pages(big, 16 * MIB, 16 * MIB) == 0


def test_lock_profile_budget_locks_exactly_the_budgeted_ranges(hot: Path) -> None:
    prof, _ = save(hot)
    drop_cache(hot)
    budget = 40 * PAGE  # all of the first range (16 pages), 24 pages of the second
    holder = subprocess.Popen([*CLI, "lock", "--json", "--profile", str(prof), "--budget",
                               str(budget)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=child_env())
    try:
        assert holder.stdout is not None
        summary = json.loads(holder.stdout.readline())
        assert vmlck(holder.pid) == budget
        with open(f"/proc/{holder.pid}/smaps") as f:
            smaps = f.read()
        locked = [block for block in smaps.split("\n") if block.startswith("Locked:")]
        assert sum(int(line.split()[1]) for line in locked) * 1024 == budget
        assert summary["bytes"] == budget and summary["skipped"] == []
        assert summary["over_budget"] == [
            {"path": str(hot), "offset": 224 * PAGE, "length": 40 * PAGE},
            {"path": str(hot), "offset": 1024 * PAGE, "length": 100}]
        assert resident_runs(hot) == HOT  # the rest touched; nothing around the ranges
    finally:
        holder.terminate()
        holder.communicate(timeout=30)
    # Through the library, each range's own mapping: which pages are locked.
    out = run_child("""
        p = memlock.Profile.load(sys.argv[1])
        before = vmlck()
        with memlock.lock_files(p, budget=int(sys.argv[2])) as lf:
            print(json.dumps({
                "ranges": [[f.offset, f.nbytes] for f in lf], "unlocked": lf.unlocked,
                "vmlck": vmlck() - before,
                "states": [page_state(f.address + k) for f in lf for k in (0, f.nbytes - 1)],
                "ends": [vma(f.address)["end"] - f.address - f.nbytes for f in lf]}))
        print(vmlck() - before)
    """, args=[str(prof), str(budget)], prelude=CHILD_PRELUDE)
    doc, after = output(out).splitlines()
    got = json.loads(doc)
    assert got["ranges"] == [[0, 16 * PAGE], [200 * PAGE, 24 * PAGE]]
    assert got["unlocked"] == [[str(hot), 224 * PAGE, 40 * PAGE], [str(hot), 1024 * PAGE, 100]]
    assert got["vmlck"] == budget and set(got["states"]) == {"full"}
    # Each range has its own mapping, which ends with it: no page past the budget's end is
    # mapped, so none is locked. (The page after a mapping may be another range's mapping,
    # locked: mmap places each new mapping just below the one before.)
    assert got["ends"] == [0, 0]
    assert after == "0"


def test_lock_profile_unprivileged_within_the_limit(hot: Path) -> None:
    prof, _ = save(hot)
    out = run_child("""
        p = memlock.Profile.load(sys.argv[1])
        try:
            memlock.lock_files(p)  # 81 pages: over a 64-page limit
        except memlock.LockLimitError:
            print("refused", vmlck())
        with memlock.lock_files(p, budget="200K") as lf:
            print(lf.nbytes, vmlck())
    """, args=[str(prof)], prelude=CHILD_PRELUDE, unprivileged=True, limit=64 * PAGE)
    assert output(out).splitlines() == ["refused 0", f"{50 * PAGE} {50 * PAGE}"]


def test_changed_and_vanished_files_are_skipped_and_reported(hot: Path) -> None:
    prof, _ = save(hot)
    cold = hot.parent / "cold.bin"
    os.utime(cold, ns=(0, 12345))  # same size, another mtime
    drop_cache(hot)
    out = run_cli("touch", "--profile", str(prof))
    assert out.returncode == 1, out
    assert out.stderr == (f"memlock touch: skipped {cold}: changed since the profile was saved "
                          "(size or modification time)\n")
    assert "Traceback" not in out.stderr and resident_runs(hot) == HOT
    cold.unlink()
    totals = memlock.touch(memlock.Profile.load(prof))
    assert totals is not None and [p for p, _ in totals.skipped] == [str(cold)]
    assert "cannot be read now" in totals.skipped[0][1]
    holder = run_cli("lock", "--profile", str(prof), "--json", "--daemon", "--pidfile",
                     str(hot.parent / "pid"))
    try:
        summary = json.loads(output(holder).splitlines()[-1])
        assert [s["path"] for s in summary["skipped"]] == [str(cold)]
        assert f"skipped {cold}" in holder.stderr
        # One file held, in as many ranges as its profile has (the review found "files"
        # counting ranges).
        assert (summary["files"], summary["ranges"]) == (1, len(HOT)), summary
    finally:
        os.kill(int((hot.parent / "pid").read_text()), 15)


def _profile_doc(hot: Path, **changes: object) -> dict[str, object]:
    st = hot.stat()
    entry = {"path": str(hot), "device": st.st_dev, "inode": st.st_ino, "size": SIZE,
             "mtime_ns": st.st_mtime_ns, "ranges": [[0, PAGE]]}
    entry.update(changes)
    return {"format": "memlock-profile", "version": 1, "page_size": PAGE, "files": [entry]}


def _hostile(hot: Path) -> dict[str, bytes]:
    good = _profile_doc(hot)
    ok_entry = good["files"][0]  # type: ignore[index]

    def with_second(**changes: object) -> bytes:
        """A valid first file, then a bad one: nothing may be touched, not even the first."""
        doc = _profile_doc(hot)
        bad = dict(ok_entry, path=str(hot.parent / "cold.bin"))
        bad.update(changes)
        doc["files"] = [ok_entry, bad]
        return json.dumps(doc).encode()

    text = json.dumps(good).encode()
    return {
        "not JSON": b"this is not json",
        "hard link twice": with_second(path=str(hot.parent / "link.bin")),
        "truncated": text[: len(text) // 2],
        "not UTF-8": b"\xff\xfe{}",
        "wrong version": json.dumps(dict(good, version=2)).encode(),
        "float version": json.dumps(dict(good, version=1.0)).encode(),
        "no format": json.dumps({"version": 1, "files": []}).encode(),
        "negative offset": with_second(ranges=[[-4096, 4096]]),
        "past EOF": with_second(ranges=[[4 * MIB, 4096]]),  # the size says 4 MiB + 100
        "empty range": with_second(ranges=[[0, 0]]),
        "overlap": with_second(ranges=[[0, 8192], [4096, 4096]]),
        "huge number": with_second(ranges=[[10**30, 1]]),
        "huge digits": with_second().replace(b'"size"', b'"size":' + b"9" * 5000 + b',"x"'),
        "NaN": with_second().replace(b'"ranges": [[0, 4096]]}]', b'"ranges": [[NaN, 1]]}]'),
        "float": with_second(ranges=[[0.0, 4096]]),
        "bool": with_second(inode=True),
        "relative path": with_second(path="cold.bin"),
        "lone surrogate": with_second().replace(b'cold.bin"', b'cold\\ud800.bin"'),
        "twice": with_second(path=str(hot)),
        "missing key": json.dumps(dict(good, files=[{"path": str(hot)}])).encode(),
        "deep nesting": b"[" * 100000 + b"]" * 100000,
        "files not a list": json.dumps(dict(good, files={"a": 1})).encode(),
    }


def test_hostile_profiles_give_one_line_and_change_nothing(hot: Path) -> None:
    drop_cache(hot)
    bad_dir = hot.parent / "bad"
    bad_dir.mkdir()
    for name, data in _hostile(hot).items():
        prof = bad_dir / (name.replace(" ", "-") + ".json")
        prof.write_bytes(data)
        with pytest.raises(ValueError):
            memlock.Profile.load(prof)
        for cmd in (["touch", "--profile", str(prof)], ["lock", "--profile", str(prof)]):
            out = run_cli(*cmd)
            assert out.returncode == 2, (name, out)
            assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, (name, out)
            assert out.stdout == ""
        assert resident_runs(hot) == [], name  # nothing was touched
    big = bad_dir / "huge.json"
    with open(big, "wb") as f:
        f.truncate(65 * MIB)  # sparse: refused by its size, never read
    out = run_cli("touch", "--profile", str(big))
    assert out.returncode == 2 and "64 MiB" in out.stderr
    out = run_cli("touch", "--profile", str(bad_dir / "missing.json"))
    assert out.returncode == 2 and "cannot read the profile" in out.stderr


def test_profile_usage_errors(hot: Path) -> None:
    prof, _ = save(hot)
    for args in (["touch", "--profile", str(prof), str(hot)],
                 ["lock", "--budget", "1M", str(hot)],
                 ["lock", "--profile", str(prof), "--watch"],
                 ["touch", "--profile", str(prof), "--range", "0-4K"],
                 ["touch", "--profile", str(prof), "--follow-symlinks"],
                 ["lock", "--profile", str(prof), "--one-file-system"]):
        out = run_cli(*args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, (args, out)
    out = run_cli("resident", "--save-profile", str(hot.parent / "no" / "p.json"), str(hot))
    assert out.returncode == 1 and "cannot save the profile" in out.stderr


def test_touch_of_a_profile_takes_on_error_and_refuses_walk_arguments(hot: Path) -> None:
    prof = memlock.Profile.capture(hot)
    for kwargs in ({"offset": PAGE}, {"length": PAGE}, {"include": ["*.bin"]},
                   {"max_size": "1M"}, {"follow_symlinks": True}):
        # A range or a filter would be ignored: refused before anything is touched.
        with pytest.raises(TypeError, match="not with a Profile"):
            memlock.touch(prof, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not with a Profile"):
            memlock.lock_files(prof, **kwargs)  # type: ignore[arg-type]
    drop_cache(hot)
    assert resident_runs(hot) == []
    with world_dir() as d:
        readable, secret = d / "readable.bin", d / "secret.bin"
        for f in (readable, secret):
            make_file(str(f), 2 * PAGE)
            drop_cache(f)
        secret.chmod(0o600)  # root's: uid 65534 cannot open it, its identity stays
        doc = {"format": "memlock-profile", "version": 1, "page_size": PAGE, "files": [
            {"path": str(f), "device": st.st_dev, "inode": st.st_ino, "size": st.st_size,
             "mtime_ns": st.st_mtime_ns, "ranges": [[0, PAGE]]}
            for f, st in ((f, f.stat()) for f in (secret, readable))]}
        (d / "p.json").write_text(json.dumps(doc))
        (d / "p.json").chmod(0o644)
        out = run_child("""
            import json, sys
            import memlock
            prof = memlock.Profile.load(sys.argv[1])
            seen = []
            totals = memlock.touch(prof, on_error=lambda path, exc: seen.append(
                (path, exc.errno)))
            print(json.dumps({"seen": seen, "files": totals.files}))
            try:
                memlock.touch(prof)
            except PermissionError as exc:
                print("raised", exc.errno)
        """, args=[str(d / "p.json")], as_nobody=True)
        seen, raised = output(out).splitlines()
        assert json.loads(seen) == {"seen": [[str(secret), 13]], "files": 1}
        assert raised == "raised 13"
        assert resident_runs(readable) == [(0, 1)] and resident_runs(secret) == []


def test_a_profile_saved_inside_its_tree_leaves_itself_out(hot: Path) -> None:
    # Saving replaces the profile's file: were it in the profile, every restore would skip
    # it as changed and exit 1.
    prof = hot.parent / "hot.profile"
    for _ in range(2):
        output(run_cli("resident", "-q", "--save-profile", str(prof), str(hot.parent)))
    paths = [f["path"] for f in json.loads(prof.read_text())["files"]]
    assert sorted(paths) == [str(hot.parent / "cold.bin"), str(hot)]
    out = run_cli("touch", "-q", "--profile", str(prof))
    assert out.returncode == 0 and "skipped" not in out.stderr, out
    p = memlock.Profile.capture(hot.parent)
    p.save(prof)
    assert memlock.Profile.load(prof) == p and len(p.files) == 2


def test_a_profile_naming_a_pseudo_file_is_skipped_with_its_path(tmp_path: Path) -> None:
    """A hand-written profile may name a /sys file with its true identity: it is skipped,
    named, as the walk refuses such files (the review saw "No such device", no path)."""
    sysfile = next((p for p in ("/sys/kernel/mm/transparent_hugepage/enabled",
                                "/sys/devices/system/cpu/online") if os.path.exists(p)), None)
    if sysfile is None:
        pytest.skip("no sysfs file to name here")
    st = os.stat(sysfile)
    doc = {"format": "memlock-profile", "version": 1, "page_size": PAGE,
           "files": [{"path": sysfile, "device": st.st_dev, "inode": st.st_ino,
                      "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ranges": [[0, 1]]}]}
    prof = tmp_path / "sys.profile"
    prof.write_text(json.dumps(doc))
    totals = memlock.touch(memlock.Profile.load(prof))
    assert totals is not None and [p for p, _ in totals.skipped] == [sysfile]
    assert "not on disk" in totals.skipped[0][1]
    proc = run_cli("lock", "--profile", str(prof))
    assert proc.returncode == 1 and f"skipped {sysfile}: not on disk" in proc.stderr, proc
    assert "Traceback" not in proc.stderr


def test_a_budget_under_one_page_still_warms_the_ranges(hot: Path) -> None:
    """Nothing fits, so nothing is locked and the command exits 1; the ranges over the
    budget are touched all the same, as lock_files(profile, budget=0) does."""
    prof, _ = save(hot)
    drop_cache(hot)
    out = run_cli("lock", "--profile", str(prof), "--budget", "100")
    assert out.returncode == 1 and "nothing to lock" in out.stderr, out
    assert "Traceback" not in out.stderr
    assert resident_runs(hot) == HOT  # touched: exactly the ranges
