"""PLACEHOLDER (issue 4, being written): secrets."""

from __future__ import annotations

from typing import Any


class SecureBuffer:
    """Placeholder."""


def getpass(*args: Any, **kwargs: Any) -> SecureBuffer:
    """Placeholder."""
    raise NotImplementedError


def read_secret(*args: Any, **kwargs: Any) -> SecureBuffer:
    """Placeholder."""
    raise NotImplementedError
