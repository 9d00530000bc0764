"""One context-manager protocol for the objects that hold something until released."""

from __future__ import annotations

from types import TracebackType

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import Self

__all__ = ["ReleasedOnExit"]


class ReleasedOnExit:
    """Mixin: ``with obj:`` gives ``obj`` and calls ``obj._release_on_exit()`` at the end."""

    __slots__ = ()

    def _release_on_exit(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release_on_exit()
