"""Remediation hints: how to raise the memory-lock limit in the environment we run in.

The environment is detected once per call from cheap, documented signals:
Kubernetes (``KUBERNETES_SERVICE_HOST``), a container (``/.dockerenv``,
``/run/.containerenv`` or a container cgroup path), a systemd service
(``INVOCATION_ID`` with a ``.service`` cgroup), else an interactive shell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ._units import format_size

__all__ = ["detect_environment", "format_size", "hard_limit_note", "limit_hint"]

SHELL, SYSTEMD, DOCKER, KUBERNETES = "shell", "systemd", "docker", "kubernetes"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def detect_environment(
    environ: Mapping[str, str] | None = None, cgroup_text: str | None = None
) -> str:
    """Which kind of environment this process runs in: shell, systemd, docker or kubernetes."""
    env = os.environ if environ is None else environ
    cgroup = _read("/proc/self/cgroup") if cgroup_text is None else cgroup_text
    if "KUBERNETES_SERVICE_HOST" in env or "kubepods" in cgroup:
        return KUBERNETES
    container_files = environ is None and (
        os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    )
    if container_files or any(w in cgroup for w in ("/docker", "/containerd", "libpod")):
        return DOCKER
    if "INVOCATION_ID" in env and ".service" in cgroup:
        return SYSTEMD
    return SHELL


def _kib(n: int | None) -> str:
    return "unlimited" if n is None else str(max(1, -(-n // 1024)))


def hard_limit_note(hard: int, needed_total: int | None,
                    who: str = "this process cannot raise it") -> str:
    """Says that the hard limit ``hard`` is below ``needed_total`` and ``ulimit -l`` fails."""
    below = ("is finite" if needed_total is None
             else f"is below the {format_size(needed_total)} needed")
    return (f"the hard limit ({format_size(hard)}) {below} and {who}: `ulimit -l` cannot go "
            "above the hard limit (\"Operation not permitted\")")


def limit_hint(
    needed_total: int | None,
    environment: str | None = None,
    *,
    low_hard_limit: int | None = None,
) -> str:
    """How to let this process lock ``needed_total`` bytes in all, for its environment.

    Args:
        needed_total: Bytes the limit must allow; None: unlimited.
        environment: shell, systemd, docker or kubernetes; default: detected.
        low_hard_limit: The hard RLIMIT_MEMLOCK, when it is below ``needed_total`` and the
            process cannot raise it. ``ulimit -l`` cannot go above the hard limit ("Operation
            not permitted"), so the hint then gives only fixes that raise the hard limit.
    """
    env = environment or detect_environment()
    kib = _kib(needed_total)
    size = "infinity" if needed_total is None else f"{max(1, -(-needed_total // 2**20))}M"
    nbytes = -1 if needed_total is None else needed_total
    capability = ("or run it with CAP_IPC_LOCK (e.g. `sudo setpriv --inh-caps=+ipc_lock "
                  "--ambient-caps=+ipc_lock ...`), which lifts the limit")
    if low_hard_limit is None:
        shell = [
            f"raise the limit: `ulimit -l {kib}` (KiB) in the shell that starts it (needs a "
            "hard limit that high), or for a user in /etc/security/limits.conf: "
            f"`USER - memlock {kib}` and log in again",
            capability,
        ]
        shell_elsewhere = f"shell: `ulimit -l {kib}` / limits.conf `memlock`"
        preface = ""
    else:
        shell = [
            f"raise the hard limit for the user in /etc/security/limits.conf: `USER hard "
            f"memlock {kib}` and `USER soft memlock {kib}` (KiB), then start a new login",
            f"or start it from a systemd unit with `LimitMEMLOCK={size}`",
            f"or in a container: `docker run --ulimit memlock={nbytes}:{nbytes}`",
            capability,
        ]
        shell_elsewhere = f"shell: limits.conf `USER hard memlock {kib}` and a new login"
        preface = hard_limit_note(low_hard_limit, needed_total) + "; "
    lines: dict[str, list[str]] = {
        SHELL: shell,
        SYSTEMD: [
            f"in the unit's [Service] section: `LimitMEMLOCK={size}` (or "
            "`AmbientCapabilities=CAP_IPC_LOCK`), then `systemctl daemon-reload` and restart",
        ],
        DOCKER: [
            f"run the container with `--ulimit memlock={nbytes}:{nbytes}` (bytes; -1 = "
            "unlimited) or `--cap-add IPC_LOCK`; in compose: `ulimits: {memlock: -1}` / "
            "`cap_add: [IPC_LOCK]`",
        ],
        KUBERNETES: [
            "add the capability to the container: `securityContext: {capabilities: {add: "
            '["IPC_LOCK"]}}` (Kubernetes has no per-pod ulimit; the node\'s container runtime '
            "sets the default memlock limit, e.g. containerd's LimitMEMLOCK=infinity)",
        ],
    }
    text = "How to fix (" + env + "): " + preface + "; ".join(lines[env])
    others = [
        shell_elsewhere,
        f"systemd: `LimitMEMLOCK={size}`",
        "docker: `--ulimit memlock=...` or `--cap-add IPC_LOCK`",
        "kubernetes: securityContext capability IPC_LOCK",
    ]
    return text + "\nElsewhere: " + "; ".join(o for o in others if not o.startswith(env))

