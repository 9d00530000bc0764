"""Linux facts read on demand, loaded on first use: the cgroup memory headroom (for the
file holder) and the kernel features ``memlock doctor`` probes.

Kept out of :mod:`.linux` so that ``import memlock`` does not pay for them.
"""

from __future__ import annotations

from . import _procfs
from .linux import MADV_POPULATE_READ, MADV_POPULATE_WRITE

__all__ = ["cgroup_memory_headroom", "doctor_probes"]

#: cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
_CGROUP_UNLIMITED = 1 << 62


def cgroup_memory_headroom(
    cgroup_text: str | None = None, root: str = "/sys/fs/cgroup"
) -> tuple[int, int, str] | None:
    """(limit, usage, cgroup directory) of the tightest memory cgroup above this process.

    Reads cgroup v1 (``memory.limit_in_bytes``/``memory.usage_in_bytes``) or v2
    (``memory.max``/``memory.current``) along the path to the root. None when unlimited.
    """
    if cgroup_text is None:
        try:
            cgroup_text = _procfs.read_text("/proc/self/cgroup")
        except OSError:
            return None
    best: tuple[int, int, str] | None = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "memory" in controllers.split(","):
            base, lim_name, use_name = (root + "/memory", "memory.limit_in_bytes",
                                        "memory.usage_in_bytes")
        elif controllers == "" and parts[0] == "0":
            base, lim_name, use_name = root, "memory.max", "memory.current"
        else:
            continue
        rel = path.strip("/")
        while True:
            d = f"{base}/{rel}" if rel else base
            lim = _cgroup_value(f"{d}/{lim_name}")
            use = _cgroup_value(f"{d}/{use_name}")
            if lim is not None and use is not None and lim < _CGROUP_UNLIMITED and (
                best is None or lim - use < best[0] - best[1]
            ):
                best = (lim, use, d)
            if not rel:
                break
            rel = rel.rpartition("/")[0]
    return best


def doctor_probes() -> list[tuple[str, bool, str]]:
    """MCL_ONFAULT, MADV_POPULATE_READ/WRITE, cachestat: whether this kernel has them."""
    import platform

    release = platform.release()
    return [
        ("MCL_ONFAULT", _kernel_at_least(4, 4), f"kernel {release} (needs 4.4+)"),
        ("MADV_POPULATE_READ", _madvise_works(MADV_POPULATE_READ),
         "populate without SIGBUS (5.14+)"),
        ("MADV_POPULATE_WRITE", _madvise_works(MADV_POPULATE_WRITE),
         "populate without SIGBUS (5.14+)"),
        ("cachestat", _kernel_at_least(6, 5), "file residency without mapping (6.5+)"),
    ]


def _cgroup_value(path: str) -> int | None:
    """An integer cgroup file; None for ``max``, unreadable or not a number."""
    try:
        text = _procfs.read_text(path).strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _kernel_at_least(major: int, minor: int) -> bool:
    import platform

    try:
        parts = platform.release().split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def _madvise_works(advice: int) -> bool:
    """Whether madvise(``advice``) succeeds on a fresh page."""
    import mmap

    buf = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
    try:
        buf.madvise(advice)
        return True
    except OSError:
        return False
    finally:
        buf.close()
