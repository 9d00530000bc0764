"""Remediation hints: how to raise the memory-lock limit in the environment a process runs in.

The environment is detected once per call from cheap, documented signals: Kubernetes
(``KUBERNETES_SERVICE_HOST``, a ``kubepods`` cgroup), a container (``/.dockerenv``,
``/run/.containerenv`` or a container cgroup path), a systemd service (a ``.service``
cgroup; ``INVOCATION_ID`` for this process), a user service under ``systemd --user``
(``user@UID.service`` in the cgroup), else an interactive shell. For another process
(``memlock doctor --pid``), :func:`describe_environment` reads the same signals from its
/proc/PID/cgroup, /proc/PID/environ and /proc/PID/root, and names the unit, container or pod.
"""

from __future__ import annotations

import os

from ._units import format_size

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._records import Environment

__all__ = ["describe_environment", "detect_environment", "format_size",
           "hard_limit_note", "limit_hint"]

SHELL, SYSTEMD, DOCKER, KUBERNETES = "shell", "systemd", "docker", "kubernetes"
#: A user service, run by the user's ``systemd --user`` manager.
SYSTEMD_USER = "systemd-user"
#: Another process whose root and environment the caller may not read, and whose cgroup
#: does not tell: it may run in a container all the same.
UNKNOWN = "unknown"

#: Container ids in cgroup paths: docker-ID.scope, cri-containerd-ID.scope, crio-ID.scope,
#: libpod-ID.scope (systemd driver), or a bare 64-hex directory (cgroupfs driver).
_CONTAINER = r"(?:(docker|cri-containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?$"
_RUNTIMES = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o",
             "libpod": "podman"}
_POD = r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
_USER_MANAGER = r"^user@(\d+)\.service$"


def _cgroup_paths(cgroup_text: str) -> list[str]:
    """The cgroup paths of a /proc/PID/cgroup text, the unified (v2) or systemd one first."""
    first: list[str] = []
    rest: list[str] = []
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            (first if parts[1] in ("", "name=systemd") else rest).append(parts[2])
    return first + rest


def describe_environment(cgroup_text: str, environ: Mapping[str, str] | None = None,
                         container_files: bool | None = False) -> Environment:
    """Where a process runs, from its cgroup, environment and root.

    Args:
        cgroup_text: Its /proc/PID/cgroup.
        environ: Its environment variables, where readable.
        container_files: Its root has ``/.dockerenv`` or ``/run/.containerenv``; None
            where the caller may not look (then, without other evidence, the kind is
            ``unknown``, not ``shell``).
    """
    import re  # here, not at the top: re costs ~6 ms of every start of memlock

    from ._records import Environment

    env = environ or {}
    container = runtime = pod = unit = None
    user_uid: int | None = None
    for path in _cgroup_paths(cgroup_text):
        parts = [p for p in path.split("/") if p]
        for part in parts:
            m = re.match(_CONTAINER, part)
            if m and container is None:
                container, runtime = m.group(2)[:12], _RUNTIMES.get(m.group(1) or "", runtime)
            p = re.search(_POD, part)
            if p and pod is None:
                pod = p.group(1).replace("_", "-")
            u = re.match(_USER_MANAGER, part)
            if u and user_uid is None:
                user_uid = int(u.group(1))
        if unit is None:
            units = [p for p in parts if p.endswith((".service", ".scope"))
                     and not re.match(_CONTAINER, p)]
            if units:
                unit = units[-1]
    if "kubepods" in cgroup_text or "KUBERNETES_SERVICE_HOST" in env or pod:
        return Environment(KUBERNETES, runtime, container, pod, None, None)
    if container or container_files or any(
            w in cgroup_text for w in ("/docker", "/containerd", "libpod")):
        runtime = runtime or ("docker" if "docker" in cgroup_text else None)
        return Environment(DOCKER, runtime, container, None, None, None)
    if unit is not None and unit.endswith(".service"):
        if user_uid is not None and unit != f"user@{user_uid}.service":
            return Environment(SYSTEMD_USER, unit=unit, user_uid=user_uid)
        return Environment(SYSTEMD, unit=unit)
    if container_files is None and environ is None:
        return Environment(UNKNOWN, unit=unit)
    return Environment(SHELL, unit=unit)


def detect_environment(
    environ: Mapping[str, str] | None = None, cgroup_text: str | None = None
) -> str:
    """Which kind of environment this process runs in.

    One of shell, systemd, systemd-user, docker or kubernetes; a service only when systemd
    started this process (``INVOCATION_ID``).
    """
    env = os.environ if environ is None else environ
    if cgroup_text is None:
        from ._platform import BACKEND  # here: the backends import this module

        cgroup_text = BACKEND.own_cgroups()
    cgroup = cgroup_text
    container_files = environ is None and (
        os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    )
    kind = describe_environment(cgroup, env, container_files).kind
    if kind in (SYSTEMD, SYSTEMD_USER) and "INVOCATION_ID" not in env:
        return SHELL
    return kind


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
    place: Environment | None = None,
) -> str:
    """How to let a process lock ``needed_total`` bytes in all, for its environment.

    Args:
        needed_total: Bytes the limit must allow; None: unlimited.
        environment: shell, systemd, systemd-user, docker, kubernetes or unknown; default:
            ``place``'s kind, else detected for this process.
        low_hard_limit: The hard RLIMIT_MEMLOCK, when it is below ``needed_total`` and the
            process cannot raise it. ``ulimit -l`` cannot go above the hard limit ("Operation
            not permitted"), so the hint then gives only fixes that raise the hard limit.
        place: Where the process runs (another process's, :func:`describe_environment`):
            the fix then names its unit, container or pod.
    """
    env = environment or (place.kind if place is not None else detect_environment())
    unit = place.unit if place is not None else None
    uid = place.user_uid if place is not None else None
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
            (f"`systemctl edit {unit}`, in its [Service] section: " if unit else
             "in the unit's [Service] section: ") + f"`LimitMEMLOCK={size}` (or "
            "`AmbientCapabilities=CAP_IPC_LOCK`), then `systemctl daemon-reload` and "
            + (f"`systemctl restart {unit}`" if unit else "restart"),
        ],
        SYSTEMD_USER: [
            f"{unit or 'the unit'} is a user service: `systemctl --user edit "
            f"{unit or 'UNIT'}`, `LimitMEMLOCK={size}`; a user service cannot go above the "
            "hard limit of its `systemd --user` manager, so as root raise that too: "
            f"`systemctl edit user@{uid if uid is not None else 'UID'}.service`, "
            f"`LimitMEMLOCK={size}` (`DefaultLimitMEMLOCK={size}` in "
            "/etc/systemd/system.conf for every user's manager), and "
            f"`DefaultLimitMEMLOCK={size}` in /etc/systemd/user.conf for every user service; "
            "then restart the manager (log out and in). AmbientCapabilities= cannot work "
            "there: the user manager has no capabilities to give",
        ],
        DOCKER: [
            (f"recreate container {place.container} " if place and place.container else
             "run the container ") + f"with `--ulimit memlock={nbytes}:{nbytes}` (bytes; -1 = "
            "unlimited) or `--cap-add IPC_LOCK` (`docker update` cannot change ulimits); in "
            "compose: `ulimits: {memlock: -1}` / `cap_add: [IPC_LOCK]`",
        ],
        KUBERNETES: [
            "add the capability to the container"
            + (f" of pod {place.pod}" if place and place.pod else "")
            + ": `securityContext: {capabilities: {add: "
            '["IPC_LOCK"]}}`; Kubernetes has no per-pod ulimit: the node\'s container runtime '
            "sets the default memlock limit (containerd: the `LimitMEMLOCK=` of "
            "containerd.service, `infinity` in its shipped unit; CRI-O: `default_ulimits = "
            '["memlock=-1:-1"]` in crio.conf)',
        ],
    }
    others = [
        shell_elsewhere,
        f"systemd: `LimitMEMLOCK={size}`",
        "docker: `--ulimit memlock=...` or `--cap-add IPC_LOCK`",
        "kubernetes: securityContext capability IPC_LOCK",
    ]
    if env == UNKNOWN:
        return ("How to fix (where it runs is not known: this user may not read its root "
                "or environment; run `memlock doctor --pid` as root or as its user to be "
                "told): " + preface + "; ".join(others))
    text = "How to fix (" + env + "): " + preface + "; ".join(lines[env])
    return text + "\nElsewhere: " + "; ".join(o for o in others if not o.startswith(env))

