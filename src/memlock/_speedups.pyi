from memlock._lock import Lock
from memlock._registry import PageRegistry

class FastPath:
    def __init__(
        self,
        registry: PageRegistry,
        lock_type: type[Lock],
        zero: tuple[int, int],
        one_full: tuple[int, int],
        page_size: int,
        max_bytes: int,
        nogil_bytes: int,
    ) -> None: ...
    def lock(self, obj: object, offset: object, length: object, /) -> Lock | None: ...
    def release(self, start: int, end: int, mode: int, generation: int, /) -> bool: ...
