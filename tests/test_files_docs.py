"""The deployment examples in docs/ are valid: systemd units, Dockerfiles, docker run,
DaemonSets (the holder's and the exporter's).

Where a real checker exists here it is used (``systemd-analyze verify``, ``sh -n``,
``kubernetes-validate --strict`` with the Kubernetes schemas it bundles, run without a
network); the Kubernetes YAML is also parsed with a small stdlib parser of the YAML subset
it uses, for the checks of its content, and every memlock command line in them is parsed
by memlock's own CLI.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memlock.cli import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _cli_ok(argv: list[str], command: str = "lock") -> Any:
    """memlock's parser accepts ``argv`` (``memlock ...`` without the program name)."""
    args = build_parser().parse_args(argv)
    assert args.command == command
    if command == "lock":
        assert args.paths
    return args


def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DOCS / "systemd" / name)
    assert unit.sections() == ["Unit", "Service", "Install"]
    return unit


def test_systemd_unit_structure() -> None:
    unit = _unit("memlock-hold.service")
    svc = unit["Service"]
    assert svc["Type"] == "notify"  # memlock sends READY=1 once everything is locked
    assert svc["LimitMEMLOCK"] in ("infinity",) or svc["LimitMEMLOCK"][:-1].isdigit()
    assert "HUP" in svc["ExecReload"]
    exe, *argv = shlex.split(svc["ExecStart"])
    assert exe.endswith("/memlock")
    _cli_ok(argv)


def test_exporter_unit_structure() -> None:
    svc = _unit("memlock-exporter.service")["Service"]
    exe, *argv = shlex.split(svc["ExecStart"])
    assert exe.endswith("/memlock")
    args = _cli_ok(argv, "exporter")
    assert args.listen is not None
    # The one capability reading other users' smaps needs (tests/test_exporter.py proves it).
    assert svc["CapabilityBoundingSet"] == svc["AmbientCapabilities"] == "CAP_SYS_PTRACE"
    assert svc["NoNewPrivileges"] == "yes" and svc["DynamicUser"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", ["memlock-hold.service", "memlock-exporter.service"])
def test_systemd_unit_verifies(tmp_path: Path, name: str) -> None:
    memlock_exe = shutil.which("memlock") or str(Path(sys.executable).parent / "memlock")
    text = (DOCS / "systemd" / name).read_text()
    unit = tmp_path / name
    unit.write_text(text.replace("/usr/local/bin/memlock", memlock_exe))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    mine = [line for line in (r.stdout + r.stderr).splitlines() if name.split(".")[0] in line]
    assert r.returncode == 0 and mine == [], r.stdout + r.stderr


def _dockerfile(name: str) -> tuple[list[str], list[str]]:
    """(RUN lines, ENTRYPOINT + CMD) of ``docs/container/NAME``."""
    lines = [ln.strip() for ln in (DOCS / "container" / name).read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    instructions = {ln.split()[0] for ln in lines}
    assert {"FROM", "RUN", "ENTRYPOINT", "CMD"} <= instructions
    entry = json.loads(next(ln for ln in lines if ln.startswith("ENTRYPOINT"))[10:])
    cmd = json.loads(next(ln for ln in lines if ln.startswith("CMD"))[3:])
    assert entry[0] == "memlock"
    return [ln for ln in lines if ln.startswith("RUN")], entry[1:] + cmd


def test_exporter_dockerfile() -> None:
    runs, argv = _dockerfile("Dockerfile.exporter")
    assert any("[exporter]" in ln for ln in runs)  # prometheus_client comes with the extra
    assert _cli_ok(argv, "exporter").listen == ("0.0.0.0", 9842)


def test_dockerfile_and_run_flags() -> None:
    _, argv = _dockerfile("Dockerfile")
    _cli_ok(argv)
    run = DOCS / "container" / "docker-run.sh"
    assert subprocess.run(["sh", "-n", str(run)], timeout=30).returncode == 0
    text = run.read_text()
    assert "--ulimit memlock=" in text and "--cap-add IPC_LOCK" in text


def _parse_yaml_subset(text: str) -> Any:
    """Block mappings, block sequences and JSON-style flow values; enough for the DaemonSet."""
    rows = []
    for raw in text.splitlines():
        assert "\t" not in raw, "tabs in YAML"
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.strip():
            rows.append((len(line) - len(line.lstrip()), line.strip()))

    def scalar(v: str) -> Any:
        v = v.strip()
        if v.startswith(("[", "{", '"')):
            return json.loads(v)
        if v.isdigit():
            return int(v)
        return {"true": True, "false": False}.get(v, v)

    def block(i: int, indent: int) -> tuple[Any, int]:
        if rows[i][1].startswith("- "):
            seq = []
            while i < len(rows) and rows[i][0] == indent and rows[i][1].startswith("- "):
                item = rows[i][1][2:]
                if ":" in item and not item.startswith(("[", "{", '"')):
                    rows[i] = (indent + 2, item)  # "- key: v" starts a mapping
                    value, i = block(i, indent + 2)
                    seq.append(value)
                else:
                    seq.append(scalar(item))
                    i += 1
            return seq, i
        mapping: dict[str, Any] = {}
        while i < len(rows) and rows[i][0] == indent:
            key, _, rest = rows[i][1].partition(":")
            assert key not in mapping, f"duplicate key {key}"
            if rest.strip():
                mapping[key] = scalar(rest)
                i += 1
            else:
                assert i + 1 < len(rows) and rows[i + 1][0] > indent, f"empty {key}"
                mapping[key], i = block(i + 1, rows[i + 1][0])
        assert i == len(rows) or rows[i][0] < indent, f"bad indentation at {rows[i]}"
        return mapping, i

    doc, end = block(0, rows[0][0])
    assert end == len(rows)
    return doc


def test_daemonset_yaml() -> None:
    doc = _parse_yaml_subset((DOCS / "container" / "daemonset.yaml").read_text())
    assert doc["apiVersion"] == "apps/v1" and doc["kind"] == "DaemonSet"
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    (container,) = spec["template"]["spec"]["containers"]
    assert "IPC_LOCK" in container["securityContext"]["capabilities"]["add"]
    mounts = {m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in spec["template"]["spec"]["volumes"]}
    assert mounts <= volumes
    _cli_ok(["lock", *container["args"]])


def test_exporter_daemonset_yaml() -> None:
    doc = _parse_yaml_subset((DOCS / "container" / "exporter-daemonset.yaml").read_text())
    assert doc["apiVersion"] == "apps/v1" and doc["kind"] == "DaemonSet"
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    pod = spec["template"]["spec"]
    assert pod["hostPID"] is True  # the node's processes in the pod's own /proc
    assert "volumes" not in pod  # nothing of the node mounted
    (container,) = pod["containers"]
    security = container["securityContext"]
    # No privilege beyond reading other users' smaps (tests/test_exporter.py proves which).
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert "privileged" not in security
    args = _cli_ok(["exporter", *container["args"]], "exporter")
    (port,) = container["ports"]
    assert port["containerPort"] == args.listen[1]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(args.listen[1])


def _kubernetes_validate() -> list[str]:
    """The kubernetes-validate command (offline: under ``unshare -n`` where root may)."""
    pytest.importorskip("kubernetes_validate", reason="pip install -r requirements-dev.txt")
    offline = ["unshare", "-n"] if shutil.which("unshare") and os.geteuid() == 0 else []
    return [*offline, sys.executable, "-m", "kubernetes_validate", "--strict"]


@pytest.mark.parametrize("name", ["daemonset.yaml", "exporter-daemonset.yaml"])
def test_daemonset_passes_kubernetes_validate(name: str, tmp_path: Path) -> None:
    cmd = _kubernetes_validate()
    path = DOCS / "container" / name
    r = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "passed" in r.stdout + r.stderr, r.stdout + r.stderr
    # The checker is strict: a misspelt field fails it.
    bad = tmp_path / name
    pod_spec = "spec:\n      "
    bad.write_text(path.read_text().replace(pod_spec, pod_spec + "hostPid: true\n      ", 1))
    assert bad.read_text() != path.read_text()
    r = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "hostPid" in r.stdout + r.stderr, r.stdout + r.stderr
