"""The only place that knows the OS: picks one backend at import.

Everything outside ``_platform/`` enters here: :data:`BACKEND` (every system call, OS
constant and errno translation, as named operations), :data:`FORK_WATCH`, and the few
parsers of OS text formats others need (:func:`parse_maps`).

Literal ``sys.platform`` checks let ``mypy --platform X`` check every OS from Linux.
"""

from __future__ import annotations

import sys

from ._base import Backend
from ._fork import REGISTRY_SLOT, SECRETS_SLOT, ForkWatch
from ._procfs import parse_maps

__all__ = ["BACKEND", "FORK_WATCH", "REGISTRY_SLOT", "SECRETS_SLOT", "Backend", "ForkWatch",
           "parse_maps"]

BACKEND: Backend
# The OS's own constants for the public facade (memlock.MCL_CURRENT ...), where it has them.
if sys.platform == "linux":
    from .linux import MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, LinuxBackend

    BACKEND = LinuxBackend()
    __all__ += ["MCL_CURRENT", "MCL_FUTURE", "MCL_ONFAULT", "MLOCK_ONFAULT"]
elif sys.platform == "darwin":
    from .darwin import MCL_CURRENT, MCL_FUTURE, DarwinBackend

    BACKEND = DarwinBackend()
    __all__ += ["MCL_CURRENT", "MCL_FUTURE"]
elif sys.platform.startswith("freebsd"):
    from .freebsd import MCL_CURRENT, MCL_FUTURE, FreeBSDBackend

    BACKEND = FreeBSDBackend()
    __all__ += ["MCL_CURRENT", "MCL_FUTURE"]
elif sys.platform == "sunos5":
    from .sunos import MCL_CURRENT, MCL_FUTURE, SunOSBackend

    BACKEND = SunOSBackend()
    __all__ += ["MCL_CURRENT", "MCL_FUTURE"]
else:
    BACKEND = Backend()

#: The process's fork detector (see _fork.py).
FORK_WATCH = ForkWatch()
