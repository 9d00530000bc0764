import sys
from types import TracebackType

from memlock._lock import Lock
from memlock._registry import HoldRecord, PageRegistry

LAYOUT: int
MODE_FULL: int
HOLD_STATES: tuple[int, int, int, int]
REGISTRY_ATTRIBUTES: tuple[str, ...]
LOCK_SLOTS: tuple[str, ...]

class Mutex:
    def acquire(self, blocking: bool = ...) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def owned(self) -> bool: ...
    def set_outer(self, outer: Mutex, /) -> None: ...
    def reinit(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None: ...

class Hold:
    start: int
    end: int
    mode: int
    generation: int
    state: int

class FastPath:
    def __init__(
        self,
        registry: PageRegistry,
        lock_type: type[Lock],
        zero: tuple[int, int],
        one_full: tuple[int, int],
        page_size: int,
        max_bytes: int,
        fork_byte: int = ...,
    ) -> None: ...
    def lock(self, obj: object, offset: object, length: object, /) -> Lock | None: ...
    def release(self, hold: HoldRecord, /) -> None: ...

def try_call(mutex: Mutex, fn: object, /, *args: object) -> bool: ...

class Reentered(RuntimeError): ...

if sys.platform == "linux":
    def proc_status_scan(include_unlocked: bool, threads: int, /) -> list[tuple[int, bytes]]: ...
