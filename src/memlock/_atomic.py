"""write_atomically(): a file replaced whole or not at all, also across a crash."""

from __future__ import annotations

import os

__all__ = ["write_atomically"]


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``, whole or not at all.

    A temporary file beside it, fsync, rename, fsync of the directory (so that the rename
    itself survives a crash).
    The temporary file is ``.NAME.PID.tmp`` in the same directory (another suffix than
    NAME's: a collector of ``*.prom`` files never reads half of one); it is removed on
    any failure. A symbolic link in its place is not followed.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
