"""PLACEHOLDER (issue 5, being written): real-time process locking."""

from __future__ import annotations

from typing import Any


class PageFaults:
    """Placeholder."""


def lock_process(*args: Any, **kwargs: Any) -> None:
    """Placeholder."""
    raise NotImplementedError


def page_faults(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
