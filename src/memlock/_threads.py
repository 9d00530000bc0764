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
    and is re-raised here, in the caller's thread; so does one raised in the caller's
    thread itself (Ctrl-C): no thread starts another job after it.
    """
    it = iter(jobs)
    take = threading.Lock()
    errors: list[BaseException] = []
    halt: list[bool] = []

    def worker() -> None:
        while not errors and not halt:
            with take: job = next(it, None)  # noqa: E701  (one line: see _critical)
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
    try:
        for t in threads:
            t.start()
        worker()
        for t in threads:
            t.join()
    except BaseException:  # an interrupt here: the others stop after their job
        halt.append(True)  # (a flag, not the exception: threads must not keep its frames)
        raise
    if errors:
        raise errors[0]
