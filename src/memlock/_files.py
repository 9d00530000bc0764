"""PLACEHOLDER (issue 3, being written): files kept resident in RAM."""

from __future__ import annotations

from typing import Any


class LockedFile:
    """Placeholder."""


class Residency:
    """Placeholder."""


def lock_file(*args: Any, **kwargs: Any) -> LockedFile:
    """Placeholder."""
    raise NotImplementedError


def residency(*args: Any, **kwargs: Any) -> Residency:
    """Placeholder."""
    raise NotImplementedError


def touch(*args: Any, **kwargs: Any) -> None:
    """Placeholder."""
    raise NotImplementedError


def evict(*args: Any, **kwargs: Any) -> None:
    """Placeholder."""
    raise NotImplementedError
