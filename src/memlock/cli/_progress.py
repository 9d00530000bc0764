"""The progress bar of ``memlock touch`` and ``memlock lock``."""

from __future__ import annotations

import sys
import time

from .._cli_api import format_size

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, total_bytes: int, total_files: int, enabled: bool) -> None:
        self.total = max(1, total_bytes)
        self.files = total_files
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._shown = False

    def update(self, done_bytes: int, done_files: int) -> None:
        """Redraw at most ten times a second."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done_bytes < self.total:
            return
        self._last = now
        frac = min(1.0, done_bytes / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {frac * 100:5.1f}% {format_size(done_bytes)}/"
            f"{format_size(self.total)} {done_files}/{self.files} files"
        )
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """Clear the line."""
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False
