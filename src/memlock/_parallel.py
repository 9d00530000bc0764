"""run_parallel(): a few threads pulling jobs from one list (work that releases the GIL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    from typing import TypeVar

    J = TypeVar("J")

__all__ = ["run_parallel"]


def run_parallel(jobs: Sequence[J], work: Callable[[J], None], workers: int,
                 after: Callable[[J], None] | None = None) -> None:
    """Run ``work(job)`` for every job from ``workers`` threads (this one included).

    ``after(job)`` runs once a job is done. The first exception stops the remaining jobs
    and is re-raised here, in the caller's thread.
    """
    it = iter(jobs)
    take = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while not errors:
            with take:
                job = next(it, None)
            if job is None:
                return
            try:
                work(job)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                return
            if after is not None:
                after(job)

    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(max(1, min(workers, len(jobs))) - 1)]
    for t in threads:
        t.start()
    worker()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
