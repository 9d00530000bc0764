"""The only place that knows the OS: picks one backend at import.

Literal ``sys.platform`` checks let ``mypy --platform X`` check every OS from Linux.
"""

from __future__ import annotations

import sys

from ._base import Backend
from ._fork import SECRETS_SLOT, ForkWatch
from ._libc import real_libc

__all__ = ["BACKEND", "FORK_WATCH", "SECRETS_SLOT", "Backend", "ForkWatch"]

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
