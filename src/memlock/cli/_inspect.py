"""``memlock doctor``, ``memlock limits``: what this process may lock here, and why."""

from __future__ import annotations

import sys

import memlock

from .._cli_api import (
    describe_error,
    detect_environment,
    doctor_probes,
    format_size,
    limit_hint,
    map_count,
    permission_hint,
    process_context,
    process_limit_hint,
    process_memory,
)
from ._arguments import PRINTABLE, process_id

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add doctor and limits to ``sub``."""
    p = sub.add_parser(
        "doctor",
        help="what this process may lock here, which features work, and the fix",
        description="Check what this process may lock here and why: limits, privilege, "
        "mlockall against VmSize, vm.max_map_count, and which kernel features work. Exits "
        "non-zero when no memory can be locked at all.",
    )
    p.add_argument("--pid", type=process_id, metavar="PID",
                   help="diagnose that process instead: its limits, capability, memory "
                   "cgroup and environment (from /proc/PID), and the fix for where it runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser(
        "limits", help="RLIMIT_MEMLOCK, locked bytes and privilege",
        description="This process's memory-lock allowance: the soft and hard RLIMIT_MEMLOCK, "
        "the bytes it has locked, what is still available, and whether it is privileged "
        "(CAP_IPC_LOCK or equivalent: no limit applies). --json: the keys of "
        "memlock.limits().to_dict().",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_limits)


def _print_json(data: Any) -> None:
    import json

    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


# -- limits ------------------------------------------------------------------------------


def cmd_limits(args: argparse.Namespace) -> int:
    """Print memlock.limits()."""
    lim = memlock.limits()
    if args.json:
        _print_json(lim.to_dict())
        return 0
    print(f"soft limit:  {format_size(lim.soft)}")
    print(f"hard limit:  {format_size(lim.hard)}")
    print(f"locked now:  {format_size(lim.locked_bytes) if lim.locked_bytes is not None else '?'}")
    avail = "no limit applies" if lim.available_bytes is None else format_size(lim.available_bytes)
    print(f"available:   {avail}")
    print(f"privileged:  {'yes' if lim.privileged else 'no'}")
    return 0


# -- doctor ------------------------------------------------------------------------------


class Check:
    """One line of the doctor's report; ``ok`` None means informational."""

    def __init__(self, name: str, ok: bool | None, detail: str, fix: str | None = None) -> None:
        self.name = name
        self.ok = ok
        self.detail = detail
        self.fix = fix


def _probe_lock(onfault: bool) -> tuple[bool, str]:
    """Try to lock one page of fresh memory."""
    import mmap

    buf = mmap.mmap(-1, memlock.PAGE_SIZE, flags=mmap.MAP_PRIVATE)
    try:
        with memlock.lock(buf, onfault=onfault):
            pass
        return True, "works"
    except memlock.MemlockError as exc:
        return False, exc.strerror or str(exc)
    finally:
        buf.close()


def _memfd_secret_check() -> Check:
    """Make a real secret with the memfd_secret backend (closed at once), as a user would.

    memfd_secret(2) alone is not enough: under RLIMIT_MEMLOCK 0 without CAP_IPC_LOCK the
    call succeeds and mapping it fails. The error the public API raised is the detail.
    """
    what = "secret memory outside the kernel's direct map (5.14+, secretmem.enable)"
    try:
        memlock.SecureBuffer(32, backend="memfd_secret").close()
    except (OSError, ValueError) as exc:
        return Check("memfd_secret", False, f"{what}: {describe_error(exc, with_hint=False)}",
                     getattr(exc, "hint", None))
    return Check("memfd_secret", True, what)


def doctor_checks() -> tuple[list[Check], memlock.Limits, str]:
    """Everything ``memlock doctor`` reports."""
    lim = memlock.limits()
    env = detect_environment()
    probes = {name: (ok, what) for name, ok, what in doctor_probes()}
    checks: list[Check] = []
    if lim.privileged:
        checks.append(Check("privilege", True, "the process may lock beyond RLIMIT_MEMLOCK "
                            "(CAP_IPC_LOCK or equivalent)"))
    else:
        checks.append(Check("privilege", None, "unprivileged: RLIMIT_MEMLOCK applies"))
    can_lock_any = lim.privileged or lim.soft is None or lim.soft > 0
    if lim.privileged:
        limit_detail = f"soft {format_size(lim.soft)}, hard {format_size(lim.hard)} (not binding)"
    else:
        limit_detail = (f"soft {format_size(lim.soft)}, hard {format_size(lim.hard)}, "
                        f"{format_size(lim.available_bytes)} still available")
    checks.append(Check(
        "RLIMIT_MEMLOCK", can_lock_any, limit_detail,
        None if can_lock_any else permission_hint(),
    ))
    ok, detail = _probe_lock(False)
    checks.append(Check("mlock", ok, detail, None if ok else permission_hint()))
    if sys.platform == "linux":
        ok, detail = _probe_lock(True)
        checks.append(Check("mlock2 MLOCK_ONFAULT", ok, detail))
        checks += [Check(name, *probes[name]) for name in ("MCL_ONFAULT",) if name in probes]
        vm_size = process_memory().get("VmSize")
        if lim.privileged or lim.soft is None:
            checks.append(Check("mlockall", True, f"VmSize {format_size(vm_size)}, no limit "
                                "applies"))
        else:
            fits = vm_size is not None and vm_size <= lim.soft
            checks.append(Check(
                "mlockall", fits,
                f"MCL_CURRENT charges VmSize {format_size(vm_size)} (all mappings, not RSS) "
                f"against the {format_size(lim.soft)} limit",
                None if fits else limit_hint(vm_size),
            ))
        max_map = memlock.system_status().max_map_count
        counts = map_count()
        if max_map is None or counts is None:
            checks.append(Check("vm.max_map_count", None, "unknown"))
        else:
            used = counts[0]
            checks.append(Check("vm.max_map_count", used < max_map // 2,
                                f"{used} of {max_map} mappings in use (partial locks split "
                                "mappings)"))
        checks.append(_memfd_secret_check())
        checks += [Check(name, *probes[name]) for name in
                   ("MADV_POPULATE_READ", "MADV_POPULATE_WRITE", "cachestat") if name in probes]
    checks.append(_fast_path_check())
    return checks, lim, env


def _fast_path_check() -> Check:
    from .._cli_api import PURE_PYTHON_REQUESTED, fast_path_active

    if fast_path_active():
        return Check("C fast path", True, "lock()/unlock() of small buffers in one C call each")
    if PURE_PYTHON_REQUESTED:
        why = "off (MEMLOCK_PURE_PYTHON is set)"
    else:
        why = "not built (memlock was installed without a C compiler or Python headers)"
    return Check("C fast path", None, f"{why}: pure Python, the same behaviour; "
                 "lock()+unlock() of a small buffer costs about 1.6x more")


def process_checks(pid: int) -> tuple[list[Check], Any]:
    """What ``memlock doctor --pid`` reports of another process, from its /proc files."""
    ctx = process_context(pid)
    lim, env = ctx.limits, ctx.environment
    who = f"{ctx.command} (user {ctx.user})".translate(PRINTABLE)
    checks = [Check("process", None, who),
              Check("environment", None, env.describe())]
    if lim.privileged:
        checks.append(Check("privilege", True, "CAP_IPC_LOCK in its effective set: no limit "
                            "applies"))
    else:
        checks.append(Check("privilege", None, "no CAP_IPC_LOCK: RLIMIT_MEMLOCK applies"))
    can_lock_any = lim.privileged or lim.soft is None or lim.soft > 0
    locked = format_size(lim.locked_bytes)
    detail = f"soft {format_size(lim.soft)}, hard {format_size(lim.hard)}, {locked} locked"
    detail += " (not binding)" if lim.privileged else (
        f", {format_size(lim.available_bytes)} still available")
    checks.append(Check("RLIMIT_MEMLOCK", can_lock_any, detail,
                        None if can_lock_any else process_limit_hint(None, ctx)))
    if lim.privileged or lim.soft is None:
        checks.append(Check("mlockall", True, f"VmSize {format_size(ctx.vm_size)}, no limit "
                            "applies"))
    else:
        fits = ctx.vm_size is not None and ctx.vm_size <= lim.soft
        checks.append(Check(
            "mlockall", fits, f"MCL_CURRENT charges VmSize {format_size(ctx.vm_size)} (all "
            f"mappings, not RSS) against the {format_size(lim.soft)} limit",
            None if fits else process_limit_hint(ctx.vm_size, ctx)))
    checks.append(_cgroup_check(ctx))
    if ctx.manager_limits is not None:
        manager, soft, hard = ctx.manager_limits
        checks.append(Check(
            "systemd --user manager", None, f"pid {manager}: soft {format_size(soft)}, hard "
            f"{format_size(hard)}: its user services cannot go above that hard limit"))
    return checks, ctx


def _cgroup_check(ctx: Any) -> Check:
    """The memory cgroup's headroom against what mlockall would fault in (VmSize - RSS)."""
    if ctx.cgroup_memory is None:
        return Check("memory cgroup", None, "no memory cgroup limit applies")
    limit, usage, where = ctx.cgroup_memory
    headroom = max(0, limit - usage)
    detail = (f"{where}: limit {format_size(limit)}, {format_size(usage)} in use, "
              f"{format_size(headroom)} free")
    if ctx.vm_size is None:
        return Check("memory cgroup", None, detail)
    more = max(0, ctx.vm_size - (ctx.rss or 0))
    fits = more <= headroom
    detail += (f"; mlockall would fault in {format_size(more)} more (VmSize "
               f"{format_size(ctx.vm_size)} - RSS {format_size(ctx.rss)}), charged to it")
    fix = None if fits else (
        f"How to fix: raise the cgroup's memory limit to at least "
        f"{format_size(usage + more)} (memory.max / memory.limit_in_bytes of {where}; "
        "a container's --memory, a pod's resources.limits.memory, a unit's MemoryMax=), "
        "or lock less (MCL_ONFAULT, or mlock only what must stay in RAM): locked memory "
        "cannot be reclaimed, so past the limit the OOM killer ends the process")
    return Check("memory cgroup", fits, detail, fix)


def _print_checks(checks: list[Check]) -> None:
    for c in checks:
        mark = {True: "ok  ", False: "FAIL", None: "info"}[c.ok]
        print(f"[{mark}] {c.name}: {c.detail}")
        for line in (c.fix or "").splitlines():  # every line of the fix under its check
            print(f"       {line}")


def cmd_doctor_pid(args: argparse.Namespace) -> int:
    """``memlock doctor --pid``: non-zero when that process cannot lock any memory."""
    try:
        checks, ctx = process_checks(args.pid)
    except (OSError, memlock.UnsupportedOperation) as exc:
        print(f"memlock doctor: {args.pid}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    ok = next(c.ok for c in checks if c.name == "RLIMIT_MEMLOCK")
    if args.json:
        _print_json({
            "ok": bool(ok),
            "pid": ctx.pid,
            "environment": ctx.environment.kind,
            "platform": sys.platform,
            "limits": ctx.limits.to_dict(),
            "checks": [c.__dict__ for c in checks],
            "where": ctx.environment.to_dict(),
        })
        return 0 if ok else 1
    print(f"memlock doctor — pid {ctx.pid}, {sys.platform}, environment: "
          f"{ctx.environment.kind}")
    _print_checks(checks)
    print(f"process {ctx.pid} can lock memory" if ok else
          f"process {ctx.pid} cannot lock any memory")
    return 0 if ok else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print the doctor's report; non-zero when no memory can be locked at all."""
    if args.pid is not None:
        return cmd_doctor_pid(args)
    checks, lim, env = doctor_checks()
    mlock_ok = next(c.ok for c in checks if c.name == "mlock")
    status = 0 if mlock_ok else 1
    if args.json:
        _print_json({
            "ok": bool(mlock_ok),
            "environment": env,
            "platform": sys.platform,
            "limits": lim.to_dict(),
            "checks": [c.__dict__ for c in checks],
        })
        return status
    print(f"memlock doctor — {sys.platform}, environment: {env}")
    _print_checks(checks)
    print("memory can be locked here" if mlock_ok else "no memory can be locked here")
    return status
