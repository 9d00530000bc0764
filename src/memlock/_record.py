"""FrozenRecord: small immutable records without importing :mod:`dataclasses`.

``dataclasses`` pulls in ``inspect`` and ``ast`` (~20 ms here), too much for the
``memlock resident`` path. A subclass lists its fields in ``__match_args__`` (also its
``__slots__``), fills them in ``__init__`` with ``object.__setattr__``, and gets
immutability, equality, hashing, a dataclass-style repr, pickling and ``to_dict()``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import Any


__all__ = ["FrozenRecord"]


class FrozenRecord:
    """Base class of immutable records (see the module docstring)."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            assert isinstance(other, FrozenRecord)
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__match_args__)
        return f"{self.__class__.__qualname__}({fields})"

    def __reduce__(self) -> tuple[type[FrozenRecord], tuple[Any, ...]]:
        return (self.__class__, self._values())

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return {name: getattr(self, name) for name in self.__match_args__}
