"""``memlock exporter``: Prometheus metrics of the host's locked memory, judged by the kernel.

The series are compared with /proc read here (VmLck, /proc/PID/limits, CapEff, smaps
``Locked:``) for real children: one that locked a known amount, one without CAP_IPC_LOCK
under a small limit, a ``memlock lock`` holder. The exposition is checked by the real
tools: Debian's ``prometheus`` server scrapes the exporter and is queried over its HTTP
API, and ``promtool check metrics`` reads the served text and the textfile. Every server
and child is stopped in ``finally`` blocks; ports are free ones picked by the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .kernel import (
    CLI,
    PAGE,
    child_env,
    have,
    locking_child,
    make_file,
    mappings,
    python_cmd,
    run_cli,
    run_cmd,
    unprivileged_cmd,
    vmlck,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the host scan reads Linux /proc")
prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from memlock.cli._exporter import COMMAND_CHARS, command_label, is_holder  # noqa: E402

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _samples(text: str) -> Samples:
    """name -> [(labels, value)] of an exposition in the Prometheus text format."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _of(samples: Samples, name: str, pid: int) -> list[tuple[dict[str, str], float]]:
    return [(labels, v) for labels, v in samples.get(name, []) if labels.get("pid") == str(pid)]


def _textfile_scan(directory: Path, *args: str, **options: Any) -> str:
    """One ``memlock exporter --textfile DIR`` run; the file it wrote."""
    proc = run_cli("exporter", "--textfile", str(directory), *args, **options)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return (directory / "memlock.prom").read_text()


@contextlib.contextmanager
def _exporter(*args: str) -> Iterator[int]:
    """``memlock exporter --listen 127.0.0.1:0`` running; yields its port; stopped after
    (SIGTERM, which must end it with status 0)."""
    with subprocess.Popen([*CLI, "exporter", "--listen", "127.0.0.1:0", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=child_env()) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith("memlock exporter: serving http://127.0.0.1:"), (
                line, server.stderr.read() if server.stderr else "")
            yield int(line.rsplit(":", 1)[1].split("/")[0])
            server.send_signal(signal.SIGTERM)
            _, err = server.communicate(timeout=30)
            assert server.returncode == 0 and err == "", (server.returncode, err)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate(timeout=30)


def _get(port: int, accept: str | None = None) -> tuple[str, str]:
    """(content type, body) of http://127.0.0.1:PORT/metrics."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def _promtool_check(text: str) -> None:
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", (
        r.returncode, r.stdout, r.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _limits(pid: int) -> tuple[str, str]:
    """(soft, hard) "Max locked memory" of /proc/PID/limits as written there."""
    with open(f"/proc/{pid}/limits") as f:
        line = next(ln for ln in f if ln.startswith("Max locked memory"))
    soft, hard = line.split()[3:5]
    return soft, hard


# -- the real Prometheus ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (have("prometheus") and have("promtool")),
                    reason="Debian's prometheus is not installed (.ci/run installs it)")
def test_prometheus_scrapes_the_locked_bytes_of_a_child(tmp_path: Path) -> None:
    with locking_child(40 * PAGE) as pid, _exporter() as port:
        _, text = _get(port)
        _promtool_check(text)
        web = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                          "scrape_configs:\n  - job_name: memlock\n    static_configs:\n"
                          f"      - targets: ['127.0.0.1:{port}']\n")
        log = (tmp_path / "prometheus.log").open("w+")
        with log, subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'data'}",
                 f"--web.listen-address=127.0.0.1:{web}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path) as prom:
            try:
                expected = vmlck(pid)
                assert expected == 40 * PAGE
                query = f'memlock_process_locked_bytes{{job="memlock",pid="{pid}"}}'
                deadline = time.monotonic() + 90
                result: list[Any] = []
                while time.monotonic() < deadline and prom.poll() is None:
                    try:
                        result = _prometheus_query(web, query)
                    except OSError:  # not listening yet
                        result = []
                    if result and float(result[0]["value"][1]) == expected:
                        break
                    time.sleep(0.5)
                log.seek(0)
                assert result and float(result[0]["value"][1]) == expected, (result, log.read())
                labels = result[0]["metric"]
                assert {"pid", "command", "user", "cgroup"} <= set(labels), labels
                assert labels["pid"] == str(pid) and "memlock" in labels["command"], labels
                (up,) = _prometheus_query(web, 'up{job="memlock"}')
                assert up["value"][1] == "1"
                mlocked = _prometheus_query(web, "memlock_system_mlocked_bytes")
                assert mlocked and float(mlocked[0]["value"][1]) >= expected
            finally:
                prom.terminate()
                try:
                    prom.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    prom.kill()
                    prom.wait(timeout=30)


def _prometheus_query(port: int, query: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


# -- the exposition -------------------------------------------------------------------------


@pytest.mark.skipif(not have("promtool"), reason="promtool (Debian's prometheus) is missing")
def test_served_text_and_openmetrics_and_the_textfile_are_valid(tmp_path: Path) -> None:
    with locking_child(8 * PAGE) as pid, _exporter() as port:
        kind, text = _get(port)
        assert kind.startswith("text/plain; version=0.0.4"), kind
        _promtool_check(text)
        ((_, value),) = [(lb, v) for lb, v in _of(_samples(text),
                                                  "memlock_process_locked_bytes", pid)]
        assert value == vmlck(pid) == 8 * PAGE
        kind, om = _get(port, "application/openmetrics-text; version=1.0.0")
        assert kind.startswith("application/openmetrics-text"), kind
        assert om.endswith("# EOF\n") and f'pid="{pid}"' in om
        prom = _textfile_scan(tmp_path)
        _promtool_check(prom)
        assert _of(_samples(prom), "memlock_process_locked_bytes", pid)
    for name in ("memlock_system_mlocked_bytes", "memlock_system_unevictable_bytes"):
        ((labels, _),) = _samples(prom)[name]
        assert labels == {}


def test_limits_and_capability_are_the_kernels(tmp_path: Path) -> None:
    code = """
        import mmap, sys, memlock
        m = mmap.mmap(-1, 4 * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
        lk = memlock.lock(m)
        print("ready", flush=True)
        sys.stdin.read()
    """
    soft, hard = 64 * PAGE, 128 * PAGE
    cmd = unprivileged_cmd(*python_cmd(code), limit=(soft, hard))
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=child_env()) as child, locking_child(4 * PAGE) as privileged:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            # setpriv and prlimit exec: the pid is the Python child's.
            samples = _samples(_textfile_scan(tmp_path, "--all"))
            assert _limits(child.pid) == (str(soft), str(hard))
            got = {lb["kind"]: v for lb, v in _of(samples,
                                                    "memlock_process_memlock_limit_bytes",
                                                    child.pid)}
            assert got == {"soft": soft, "hard": hard}
            ((_, capable),) = _of(samples, "memlock_process_ipc_lock_capable", child.pid)
            assert capable == 0
            ((_, capable),) = _of(samples, "memlock_process_ipc_lock_capable", privileged)
            assert capable == 1
            ((_, locked),) = _of(samples, "memlock_process_locked_bytes", child.pid)
            assert locked == vmlck(child.pid) == 4 * PAGE
            # An unlimited limit has no series (--all: pid 1 is there, whatever it locked).
            kinds = {lb["kind"] for lb, _ in _of(samples,
                                                  "memlock_process_memlock_limit_bytes", 1)}
            proc_soft, proc_hard = _limits(1)
            assert kinds == ({"soft"} - ({"soft"} if proc_soft == "unlimited" else set())) | (
                {"hard"} - ({"hard"} if proc_hard == "unlimited" else set()))
            assert _of(samples, "memlock_process_locked_bytes", 1)
        finally:
            child.communicate("", timeout=60)


def test_holder_series_are_its_smaps_locked_per_file(tmp_path: Path) -> None:
    a = make_file(str(tmp_path / "a.bin"), 5 * PAGE)
    b = make_file(str(tmp_path / "b.bin"), 3 * PAGE + 100)
    with subprocess.Popen([*CLI, "lock", a, b], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=child_env()) as holder:
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline()
            assert "holding as pid" in line, line
            out = tmp_path / "out"
            out.mkdir()
            samples = _samples(_textfile_scan(out))
            got = {lb["path"]: v for lb, v in _of(samples, "memlock_holder_locked_bytes",
                                                   holder.pid)}
            expected = {p: sum(m.get("Locked", 0) for m in mappings(holder.pid, p))
                        for p in (a, b)}
            assert expected == {a: 5 * PAGE, b: 4 * PAGE}
            assert got == expected
            # The locking child is no holder: it has no such series.
            with locking_child(2 * PAGE) as other:
                samples = _samples(_textfile_scan(out))
                assert _of(samples, "memlock_process_locked_bytes", other)
                assert not _of(samples, "memlock_holder_locked_bytes", other)
        finally:
            holder.send_signal(signal.SIGTERM)
            holder.communicate(timeout=30)


def test_recognising_holders_by_command_line() -> None:
    for command in ("memlock lock /srv/models", "/usr/local/bin/memlock lock --watch /m",
                    "/usr/bin/python3 /usr/local/bin/memlock lock /m",
                    "/root/.venv/bin/python -m memlock lock a b",
                    "python3 -I -m memlock.cli lock x", "python3.11 -X dev -m memlock lock y"):
        assert is_holder(command), command
    for command in ("memlock status", "vmtouch -l /m", "python3 -m memlock run x.py",
                    "[kworker/0:1]", "", "sh -c memlock; lock", "grep memlock lock",
                    "python3 /opt/memlock_tool lock", "python3 -c memlock lock",
                    "bash /usr/local/bin/memlock lock"):
        assert not is_holder(command), command


def test_command_label_drops_the_programs_directory() -> None:
    assert command_label("/usr/bin/python3 /usr/local/bin/memlock lock /srv/m") == (
        "python3 memlock lock /srv/m")
    assert command_label("/usr/sbin/sshd -D") == "sshd -D"
    assert command_label("[kthreadd]") == "[kthreadd]"
    assert command_label("/opt/db /data/x") == "db /data/x"
    assert command_label("x" * 200) == "x" * (COMMAND_CHARS - 3) + "..."


def test_label_values_are_bounded(tmp_path: Path) -> None:
    code = """
        import mmap, sys, memlock
        m = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
        lk = memlock.lock(m)
        print("ready", flush=True)
        sys.stdin.read()
    """
    with subprocess.Popen(python_cmd(code, "x" * 5000, "\udcff-not-utf8"),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=child_env()) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            text = _textfile_scan(tmp_path)
            ((labels, _),) = _of(_samples(text), "memlock_process_locked_bytes", child.pid)
            assert len(labels["command"]) == COMMAND_CHARS, labels
            assert labels["command"].endswith("...")
            assert labels["command"].startswith(Path(sys.executable).name + " -c ")
        finally:
            child.communicate("", timeout=60)


# -- the textfile -----------------------------------------------------------------------------


def test_textfile_once_writes_one_complete_file(tmp_path: Path) -> None:
    text = _textfile_scan(tmp_path)
    assert os.listdir(tmp_path) == ["memlock.prom"]  # no temporary file left
    assert text.endswith("\n") and "memlock_system_mlocked_bytes " in text
    assert (tmp_path / "memlock.prom").stat().st_mode & 0o777 == 0o644


def test_textfile_interval_replaces_the_file_by_rename_until_sigterm(tmp_path: Path) -> None:
    target = tmp_path / "memlock.prom"
    with subprocess.Popen([*CLI, "exporter", "--textfile", str(tmp_path), "--interval", "0.2"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=child_env()) as writer:
        try:
            inodes: set[int] = set()
            deadline = time.monotonic() + 60
            while len(inodes) < 3 and time.monotonic() < deadline and writer.poll() is None:
                with contextlib.suppress(FileNotFoundError), target.open() as f:
                    inodes.add(os.fstat(f.fileno()).st_ino)  # at any moment: a whole file
                    assert "# TYPE memlock_system_unevictable_bytes gauge" in f.read()
                time.sleep(0.05)
            assert len(inodes) >= 3, "the file was not replaced by a new one at each interval"
            writer.send_signal(signal.SIGTERM)
            out, err = writer.communicate(timeout=30)
            assert writer.returncode == 0 and out == "" and err == "", (out, err)
            assert os.listdir(tmp_path) == ["memlock.prom"]
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.communicate(timeout=30)


@pytest.mark.parametrize("kind", ["missing", "file", "unwritable"])
def test_textfile_into_a_bad_directory_fails_in_one_line(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "d"
    if kind == "file":
        target.write_text("x")
    elif kind == "unwritable":
        target.mkdir()
    cmd = [*CLI, "exporter", "--textfile", str(target)]
    if kind == "unwritable":  # root without CAP_DAC_OVERRIDE: the mode applies
        target.chmod(0o555)
        try:
            proc = run_cmd(unprivileged_cmd(*cmd, drop=("dac_override",)))
        finally:
            target.chmod(0o755)
    else:
        proc = run_cmd(cmd)
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert proc.stderr.startswith("memlock exporter: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert not target.is_dir() or os.listdir(target) == []


def test_without_prometheus_client_it_says_how_to_install(tmp_path: Path) -> None:
    code = """
        import sys
        sys.modules["prometheus_client"] = None  # import prometheus_client: ImportError
        from memlock.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    for args in (["--textfile", str(tmp_path)], ["--listen", "127.0.0.1:0"]):
        proc = run_cmd(python_cmd(code, "exporter", *args), timeout=30)
        assert proc.returncode == 1 and proc.stdout == "", proc
        assert proc.stderr == ("memlock exporter: needs the prometheus_client package: "
                               "pip install 'memlock[exporter]'\n"), proc.stderr
    assert os.listdir(tmp_path) == []


def test_interval_without_textfile_is_a_usage_error() -> None:
    proc = run_cli("exporter", "--listen", "127.0.0.1:0", "--interval", "5")
    assert proc.returncode == 2 and "--interval goes with --textfile" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_port_in_use_fails_in_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = run_cli("exporter", "--listen", f"127.0.0.1:{s.getsockname()[1]}", timeout=30)
    assert proc.returncode == 1 and "Address already in use" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# -- privilege: what the deployment files grant ---------------------------------------------

NO_CAPS = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
ONLY_PTRACE = ["setpriv", "--inh-caps=-all", "--bounding-set=-all,+sys_ptrace", "--"]


@contextlib.contextmanager
def _as_nobody(*cmd: str) -> Iterator[int]:
    """``cmd`` running as uid/gid 65534 (after its exec); yields its pid; killed after."""
    with subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *cmd], stdout=subprocess.DEVNULL) as child:
        try:
            deadline = time.monotonic() + 30
            while Path(f"/proc/{child.pid}/exe").resolve().name == "setpriv":
                assert time.monotonic() < deadline and child.poll() is None
                time.sleep(0.02)
            yield child.pid
        finally:
            child.kill()
            child.wait(timeout=30)


@pytest.mark.skipif(os.geteuid() != 0 or not have("setpriv"), reason="needs root and setpriv")
def test_another_users_smaps_needs_cap_sys_ptrace_and_nothing_else() -> None:
    """The capability the DaemonSet and the systemd unit keep, proven by the kernel."""
    with _as_nobody("sleep", "60") as pid:
        read = python_cmd("import sys; open(f'/proc/{sys.argv[1]}/smaps').read()", str(pid))
        status = python_cmd("import sys; open(f'/proc/{sys.argv[1]}/status').read()", str(pid))
        no_caps = run_cmd([*NO_CAPS, *read])
        assert no_caps.returncode == 1 and "Permission denied" in no_caps.stderr
        assert run_cmd([*NO_CAPS, *status]).returncode == 0  # VmLck: world-readable
        assert run_cmd([*ONLY_PTRACE, *read]).returncode == 0, "CAP_SYS_PTRACE is enough"


@pytest.mark.skipif(os.geteuid() != 0 or not (have("setpriv") and have("vmtouch")),
                    reason="needs root, setpriv and vmtouch")
def test_exporter_without_any_capability_sees_another_users_lock(tmp_path: Path) -> None:
    from .kernel import world_dir

    with world_dir("memlock-exporter-") as shared:
        held = make_file(str(shared / "held.bin"), 4 * PAGE)
        os.chmod(held, 0o644)
        with _as_nobody("vmtouch", "-l", held) as pid:
            deadline = time.monotonic() + 30
            while vmlck(pid) < 4 * PAGE:
                assert time.monotonic() < deadline, "vmtouch -l did not lock"
                time.sleep(0.05)
            proc = run_cmd([*NO_CAPS, *CLI, "exporter", "--textfile", str(tmp_path)])
            assert proc.returncode == 0 and proc.stderr == "", proc.stderr
            samples = _samples((tmp_path / "memlock.prom").read_text())
            ((labels, locked),) = _of(samples, "memlock_process_locked_bytes", pid)
            assert locked == vmlck(pid) == 4 * PAGE
            assert labels["user"] in ("nobody", "65534") and "vmtouch" in labels["command"]
            ((_, capable),) = _of(samples, "memlock_process_ipc_lock_capable", pid)
            assert capable == 0
