"""The only place that knows the OS: picks one backend at import.

Everything outside ``_platform/`` enters here: :data:`BACKEND` (every system call, OS
constant and errno translation, as named operations), :data:`FORK_WATCH`, and the few
parsers of OS text formats others need (:func:`parse_maps`).

Literal ``sys.platform`` checks let ``mypy --platform X`` check every OS from Linux.
"""

from __future__ import annotations

import sys

from ._base import Backend
from ._fork import ForkWatch
from ._libc import real_libc
from ._procfs import parse_maps

__all__ = ["BACKEND", "FORK_WATCH", "Backend", "ForkWatch", "parse_maps"]

BACKEND: Backend
if sys.platform == "linux":
    from .linux import LinuxBackend

    BACKEND = LinuxBackend(real_libc())
elif sys.platform == "darwin":
    from .darwin import DarwinBackend

    BACKEND = DarwinBackend(real_libc())
elif sys.platform.startswith("freebsd"):
    from .freebsd import FreeBSDBackend

    BACKEND = FreeBSDBackend(real_libc())
elif sys.platform == "sunos5":
    from .sunos import SunOSBackend

    BACKEND = SunOSBackend(real_libc())
else:
    BACKEND = Backend(real_libc())

#: The process's fork detector (see _fork.py).
FORK_WATCH = ForkWatch()
