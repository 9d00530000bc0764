"""Every subcommand against hostile arguments: a one-line error, exit 2 or 1, no traceback.

Each case runs ``python -m memlock ARGS`` in a subprocess (with a timeout: a FIFO must not
make anything wait) and checks the exit status (2 usage, 1 failure, 0 where the input is
legitimately fine), that stderr has no Python traceback, and for the cases the issue
names, the message. ``memlock lock`` with good input holds: those cases wait for its
summary line, then stop it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memlock import __version__

from .kernel import CLI, PAGE, child_env, run_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="verified on Linux only")

BAD_BYTES = b"\xff\xfe-not-utf8"
#: Hostile values for options that take a number or a size.
NUMBERS: list[str | bytes] = ["-5", "9" * 400, "nan", "inf", "-inf", "1e300", "", BAD_BYTES]
HOLDS = "holds"  # the expected outcome of a lock that is fine: it prints its summary and holds
PROC_FILE = "/proc/self/status"
SYS_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"

#: Added to the children's environment. PYTHONIOENCODING=utf-8 makes stdout strict: a path
#: that is not UTF-8 must still print (a C.UTF-8 locale alone would escape it by itself).
STRICT_ENV = {"PYTHONIOENCODING": "utf-8"}

Arg = str | bytes
Case = tuple[str, list[Arg], int | str, str | None]


def _id(value: Arg) -> str:
    if isinstance(value, bytes):
        return "non-utf8"
    if len(value) > 12:
        return f"{value[:4]}...{len(value)}"
    return value or "empty"


def _cases() -> Iterator[Case]:
    """(id, argv with {PLACEHOLDERS}, expected exit status or HOLDS, text stderr must hold)."""
    # Top level.
    yield "no-command", [], 2, "required: COMMAND"
    yield "--version", ["--version"], 0, None
    yield "-V", ["-V"], 0, None
    yield "unknown-command", ["frobnicate"], 2, "invalid choice"
    yield "non-utf8-command", [BAD_BYTES], 2, "invalid choice"
    yield "unknown-option", ["--frobnicate"], 2, None
    for cmd in ("doctor", "limits"):
        yield f"{cmd}-extra", [cmd, "extra"], 2, "unrecognized arguments"
        yield f"{cmd}-extra-non-utf8", [cmd, BAD_BYTES], 2, "unrecognized arguments"
    yield "limits-json", ["limits", "--json"], 0, None
    # Numbers and sizes: every hostile value of every such option is a usage error.
    for v in NUMBERS:
        yield f"status-{_id(v)}", ["status", v], 2, None
        yield f"status---{_id(v)}", ["status", "--", v], 2, "not a process id"
        for cmd in ("resident", "touch", "evict", "lock"):
            yield f"{cmd}-max-size-{_id(v)}", [cmd, b"--max-size=" + _b(v), "{FILE}"], 2, (
                "too large" if v == "9" * 400 else "not a size")
            if v != "-5":  # "-5" is the range 0-5: fine
                yield f"{cmd}-range-{_id(v)}", [cmd, b"--range=" + _b(v), "{FILE}"], 2, (
                    "too large" if v == "9" * 400 else "not a range")
        yield f"resident-jobs-{_id(v)}", ["resident", b"--jobs=" + _b(v), "{FILE}"], 2, (
            "not a number of processes")
        yield f"lock-interval-{_id(v)}", ["lock", "--watch", b"--interval=" + _b(v),
                                          "{FILE}"], 2, "--interval"
        for opt in ("--prefault-heap", "--prefault-stack", "--thread-stack"):
            yield f"run{opt}-{_id(v)}", ["run", _b(opt) + b"=" + _b(v), "{SCRIPT}"], 2, (
                "too large" if v == "9" * 400 else "not a size")
        yield f"run--arena-max-{_id(v)}", ["run", b"--arena-max=" + _b(v), "{SCRIPT}"], 2, (
            "not a number of arenas")
    # status and top: the host's table, its filters, top's refresh interval.
    for cmd in ("status", "top"):
        yield f"{cmd}-all", [cmd, "--all"], 0, None
        yield f"{cmd}-user-no-value", [cmd, "--user"], 2, "expected one argument"
        yield f"{cmd}-cgroup-no-value", [cmd, "--cgroup"], 2, "expected one argument"
        yield f"{cmd}-user-non-utf8", [cmd, "--user", BAD_BYTES], 2, "no such user"
        yield f"{cmd}-cgroup-non-utf8", [cmd, b"--cgroup=" + BAD_BYTES], 0, None
        yield f"{cmd}-user-empty", [cmd, "--user="], 2, "no such user: ''"
        yield f"{cmd}-user-huge-uid", [cmd, "--user", "9" * 400], 2, "no such user"
        yield f"{cmd}-user-and-cgroup", [cmd, "--user", "root", "--cgroup", "/"], 0, None
    yield "status-all-json", ["status", "--all", "--json"], 0, None
    yield "status-all-with-pid", ["status", "--all", "1"], 2, "without PIDs"
    yield "status-cgroup-with-pid", ["status", "--cgroup", "x", "1"], 2, "without PIDs"
    yield "top-extra", ["top", "extra"], 2, "unrecognized arguments"
    yield "top-json", ["top", "--json"], 2, "unrecognized arguments"
    yield "top-delay-no-value", ["top", "-d"], 2, "expected one argument"
    for v in [*NUMBERS, "0", "86401"]:
        yield f"top-delay-{_id(v)}", ["top", b"--delay=" + _b(v)], 2, (
            "not a number of seconds")
    for v in NUMBERS:
        yield f"verify-{_id(v)}", ["verify", v], 2, (
            "required: PID" if v == "-inf" else "not a process id")  # -inf: an option
        yield f"verify-min-locked-{_id(v)}", ["verify", b"--min-locked=" + _b(v), "1"], 2, (
            "too large" if v == "9" * 400 else "not a size")
        yield f"doctor-pid-{_id(v)}", ["doctor", b"--pid=" + _b(v)], 2, "not a process id"
    yield "verify-no-pid", ["verify"], 2, "required: PID"
    yield "verify-two-pids", ["verify", "1", "2"], 2, "unrecognized arguments"
    yield "verify-path-without-glob", ["verify", "1", "--path"], 2, "expected one argument"
    yield "verify-no-such-pid", ["verify", str(2**31 - 1)], 1, "no process"
    yield "verify-no-such-pid-json", ["verify", "--json", "--no-dump", "--no-swap",
                                      str(2**31 - 1)], 1, "no process"
    yield "doctor-pid-0", ["doctor", "--pid", "0"], 2, "not a process id"
    yield "doctor-pid-missing", ["doctor", "--pid"], 2, "expected one argument"
    yield "doctor-no-such-pid", ["doctor", "--pid", str(2**31 - 1), "--json"], 1, "no process"
    yield "status-pid-too-big", ["status", "99999999999999999999"], 2, "not a process id"
    yield "status-pid-0", ["status", "0"], 2, "not a process id"
    yield "status-no-such-pid", ["status", str(2**31 - 1)], 1, "no process"
    yield "range--5-is-0-5", ["resident", "--range=-5", "{FILE}"], 0, None
    yield "lock-range--5-is-0-5", ["lock", "--range=-5", "{FILE}"], HOLDS, None
    yield "lock-max-size-1", ["lock", "--max-size", "1", "{FILE}"], 1, "nothing to lock"
    # Paths: files and directories to read.
    # (kind, path, exit of resident/touch/evict, of --files-from, of run SCRIPT). Reading a
    # list from a FIFO waits for a writer, as cat does: not a case here. A script on procfs
    # is Python's to run (and fails: 1).
    paths: list[tuple[str, Arg, int, int | None, int]] = [
        ("missing", "{MISSING}", 1, 2, 2), ("dir", "{DIR}", 0, 2, 2),
        ("fifo", "{FIFO}", 1, None, 2), ("proc", PROC_FILE, 1, 1, 1),
        ("sys", SYS_FILE, 1, 1, 1), ("proc-dir", "/proc/self", 1, 2, 2),
        ("device", "{DEVICE}", 1, 2, 2), ("empty", "", 1, 2, 2),
        ("non-utf8-missing", BAD_BYTES, 1, 2, 2),
    ]
    for kind, path, status, list_status, run_status in paths:
        for cmd in ("resident", "touch", "evict"):
            yield f"{cmd}-{kind}", [cmd, path], status, None
        yield f"lock-{kind}", ["lock", path], 1, None  # never holds: nothing to lock
        yield f"lock-keep-going-{kind}", ["lock", "--keep-going", path], 1, None
        if list_status is not None:
            yield f"resident-files-from-{kind}", ["resident", "--files-from", path], (
                list_status), None
        yield f"run-script-{kind}", ["run", path], run_status, None
        yield f"run-module-{kind}", ["run", "-m", path], 2, None
    yield "lock-proc-file", ["lock", PROC_FILE], 1, "proc file system"
    yield "lock-sys-file", ["lock", SYS_FILE], 1, "sysfs file system"
    yield "resident-non-utf8-name", ["resident", "{BADNAME}"], 0, None
    yield "run-no-such-module", ["run", "-m", "no.such.module"], 2, "no module named"
    yield "run-dir-without-main", ["run", "{DIR}"], 2, "__main__.py"
    yield "run-fifo", ["run", "{FIFO}"], 2, "not a regular file"
    # Paths: files to write (checked before anything is locked). The device is a private
    # copy of /dev/null: a regression that replaced the pidfile by rename (as memlock did)
    # must not replace the machine's /dev/null.
    outputs: list[tuple[str, Arg]] = [
        ("missing-dir", "{MISSING}/x"), ("dir", "{DIR}"), ("fifo", "{FIFO}"),
        ("proc", PROC_FILE), ("device", "{DEVICE}"), ("empty", ""),
        ("non-utf8-missing-dir", BAD_BYTES + b"/x"),
    ]
    for kind, path in outputs:
        for opt in ("--pidfile", "--log"):
            fine = opt == "--log" and kind == "device"  # a log to a null device is allowed
            yield f"lock{opt}-{kind}", ["lock", opt, path, "{FILE}"], HOLDS if fine else 1, None
    yield "lock-log-fifo-without-reader", ["lock", "--log", "{FIFO}", "{FILE}"], 1, "FIFO"
    yield "lock-pidfile-device", ["lock", "--pidfile", "{DEVICE}", "{FILE}"], 1, (
        "not a regular file")
    # memlock exporter: --listen HOST:PORT, --textfile DIR (written: its own directory),
    # --interval SECONDS (with --textfile only).
    yield "exporter-nothing", ["exporter"], 2, "one of the arguments --listen --textfile"
    yield "exporter-both", ["exporter", "--listen", ":0", "--textfile", "{OUTDIR}"], 2, (
        "not allowed with")
    yield "exporter-interval-with-listen", ["exporter", "--listen", ":0", "--interval", "1"], (
        2), "--interval goes with --textfile"
    yield "exporter-all-alone", ["exporter", "--all"], 2, "--listen --textfile"
    for v in [*NUMBERS, "localhost", "host:", ":99999", "1.2.3.4:-1", "[::1]", "a b:80",
              "::1:80x"]:
        yield f"exporter-listen-{_id(v)}", ["exporter", b"--listen=" + _b(v)], 2, "HOST:PORT"
    for v in NUMBERS:
        yield f"exporter-interval-{_id(v)}", ["exporter", "--textfile", "{OUTDIR}",
                                              b"--interval=" + _b(v)], 2, "--interval"
    for kind, path in [*(o for o in outputs if o[0] != "dir"), ("file", "{FILE}"),
                       ("proc-dir", "/proc/self"), ("sys-dir", "/sys/kernel")]:
        yield f"exporter-textfile-{kind}", ["exporter", "--textfile", path], 1, (
            "memlock exporter: ")
    yield "exporter-textfile-once", ["exporter", "--textfile", "{OUTDIR}"], 0, None


def _b(value: Arg) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


CASES = list(_cases())


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "dir").mkdir()
    (root / "out").mkdir()
    os.mkfifo(root / "fifo")
    null = os.stat("/dev/null")
    assert stat.S_ISCHR(null.st_mode), "/dev/null is not a device here: the machine is damaged"
    try:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, null.st_rdev)
    except PermissionError:  # no CAP_MKNOD: the cases with a device are skipped
        pass
    (root / "file.bin").write_bytes(os.urandom(2 * PAGE))
    (root / "prog.py").write_text("print('ran')\n")
    bad = os.fsencode(root) + b"/\xff-name.bin"
    with open(bad, "wb") as f:
        f.write(b"x" * 100)
    return {"{DIR}": os.fsencode(root / "dir"), "{FIFO}": os.fsencode(root / "fifo"),
            "{FILE}": os.fsencode(root / "file.bin"), "{MISSING}": os.fsencode(root / "missing"),
            "{SCRIPT}": os.fsencode(root / "prog.py"), "{BADNAME}": bad,
            "{DEVICE}": os.fsencode(root / "null"), "{ROOT}": os.fsencode(root),
            "{OUTDIR}": os.fsencode(root / "out")}


def _argv(template: list[Arg], places: dict[str, bytes]) -> list[bytes]:
    out = []
    for arg in template:
        raw = _b(arg)
        for key, value in places.items():
            raw = raw.replace(key.encode(), value)
        out.append(raw)
    return out


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr  # each case has a real message


@pytest.mark.parametrize(("argv", "expected", "text"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_hostile_argument(argv: list[Arg], expected: int | str, text: str | None,
                          places: dict[str, bytes]) -> None:
    if SYS_FILE in argv and not os.path.exists(SYS_FILE):
        pytest.skip(f"no {SYS_FILE} here")
    if any(b"{DEVICE}" in _b(a) for a in argv) and not os.path.exists(places["{DEVICE}"]):
        pytest.skip("cannot make a device node here (no CAP_MKNOD)")
    args = _argv(argv, places)
    cwd = places["{ROOT}"]
    if expected == HOLDS:
        _check_holds(args, cwd)
        return
    proc = run_cli(*args, cwd=cwd, env=STRICT_ENV)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == expected, (proc.returncode, stdout, stderr)
    _no_traceback(stderr)
    if expected != 0:
        assert stderr.strip(), "a failure must say why"
    if expected == 2:
        assert len(stderr.strip().splitlines()) == 1, stderr  # one line, no usage dump
    if text is not None:
        assert text in stderr, stderr
    if argv in (["--version"], ["-V"]):
        assert stdout == f"memlock {__version__}\n"


def _check_holds(args: list[bytes], cwd: bytes) -> None:
    with subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=cwd, env=child_env(STRICT_ENV)) as holder:
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline().decode()
            assert "holding as pid" in line, line
            holder.send_signal(signal.SIGTERM)
            _, err = holder.communicate(timeout=30)
            assert holder.returncode == 0, err
            _no_traceback(err.decode(errors="backslashreplace"))
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.communicate(timeout=10)


# -- the cases the issue names, with their messages ---------------------------------------


def test_range_error_names_the_whole_argument_and_gives_examples_once(tmp_path: Path) -> None:
    proc = run_cli("resident", "--range=-1-", str(tmp_path))
    assert proc.returncode == 2
    assert "'-1-'" in proc.stderr and "'1-'" not in proc.stderr
    assert proc.stderr.count("0-4M") == 1 and "4096" not in proc.stderr, proc.stderr


def test_resident_of_nothing_prints_no_total(tmp_path: Path) -> None:
    proc = run_cli("resident", str(tmp_path / "nonexistent"))
    assert proc.returncode == 1 and "No such file" in proc.stderr
    assert proc.stdout == ""  # not "0 files ... 100.0%"
    (tmp_path / "one.bin").write_bytes(b"x")
    assert "total: 1 file," in run_cli("resident", str(tmp_path / "one.bin")).stdout


def test_limits_help_has_a_description() -> None:
    proc = run_cli("limits", "--help")
    assert proc.returncode == 0
    assert "RLIMIT_MEMLOCK" in proc.stdout and "privileged" in proc.stdout


def test_status_negative_and_huge_pids_are_usage_errors() -> None:
    for args in (["--", "-5"], ["99999999999999999999"]):
        proc = run_cli("status", *args)
        assert proc.returncode == 2, proc.stderr
        assert "not a process id" in proc.stderr and "Traceback" not in proc.stderr


def test_run_prefault_failure_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("print('ran')\n")
    proc = run_cli("run", "--prefault-heap", "1T", "x.py", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("memlock run: cannot lock the process: "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "1.0 TiB" in proc.stderr  # how much it tried


def test_a_path_that_is_not_utf8_is_printed_as_its_bytes(places: dict[str, bytes]) -> None:
    proc = run_cli("resident", places["{BADNAME}"], env=STRICT_ENV)
    assert proc.returncode == 0, proc.stderr
    # As ls prints it: the bytes, not an error.
    assert places["{BADNAME}"] in os.fsencode(proc.stdout)
