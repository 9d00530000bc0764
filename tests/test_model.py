"""Property: after any sequence of lock/unlock over overlapping ranges of several buffers,
the kernel's per-page lock state (smaps VmFlags) equals a model of nesting locks. The
sequence switches between lock()'s C fast path and its Python path at random."""

from __future__ import annotations

import mmap

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import memlock
from memlock import _lock

from .kernel import PAGE, address_of, page_state, page_states

PAGES = 12
BUFFERS = 3


class NestingModel(RuleBasedStateMachine):
    """Random locks and unlocks; the model is: a page is locked while any lock covers it."""

    locks = Bundle("locks")

    def __init__(self) -> None:
        super().__init__()
        self.maps = [
            mmap.mmap(-1, PAGES * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            for _ in range(BUFFERS)
        ]
        self.bases = [address_of(m) for m in self.maps]
        self.live: dict[int, tuple[int, int, int, bool]] = {}  # id -> (buf, first, last, onf)
        self.objs: dict[int, memlock.Lock] = {}
        self.next_id = 0
        self.was_c = _lock._fast_lock is not None

    @rule(
        target=locks,
        buf=st.integers(0, BUFFERS - 1),
        start=st.integers(0, PAGES * PAGE - 1),
        length=st.integers(1, 5 * PAGE),
        onfault=st.booleans(),
    )
    def lock(self, buf: int, start: int, length: int, onfault: bool) -> int:
        length = min(length, PAGES * PAGE - start)
        lk = memlock.lock(self.maps[buf], start, length, onfault=onfault)
        first, last = start // PAGE, (start + length - 1) // PAGE
        assert lk.address == self.bases[buf] + first * PAGE
        assert lk.nbytes == (last - first + 1) * PAGE
        self.next_id += 1
        self.live[self.next_id] = (buf, first, last, onfault)
        self.objs[self.next_id] = lk
        return self.next_id

    @rule(c=st.booleans())
    def switch_path(self, c: bool) -> None:
        """Go on through the C fast path or the Python path: they share one registry."""
        assert _lock._use_c(c) == (c and _lock._speedups is not None)

    @rule(key=consumes(locks))
    def unlock(self, key: int) -> None:
        self.objs.pop(key).unlock()
        del self.live[key]

    @rule(key=consumes(locks))
    def unlock_twice(self, key: int) -> None:
        lk = self.objs.pop(key)
        lk.unlock()
        lk.unlock()  # idempotent: must not drop another lock's count
        del self.live[key]

    @invariant()
    def kernel_matches_model(self) -> None:
        addrs = [self.bases[b] + p * PAGE for b in range(BUFFERS) for p in range(PAGES)]
        states = iter(page_states(addrs))
        for b in range(BUFFERS):
            for p in range(PAGES):
                covering = [onf for (bb, f, la, onf) in self.live.values()
                            if bb == b and f <= p <= la]
                if not covering:
                    want = "none"
                elif all(covering):
                    want = "onfault"
                else:
                    want = "full"
                assert next(states) == want, (b, p, want)

    def teardown(self) -> None:
        _lock._use_c(self.was_c)
        for lk in self.objs.values():
            lk.unlock()
            lk.unlock()
        for b in range(BUFFERS):
            assert all(page_state(self.bases[b] + p * PAGE) == "none" for p in range(PAGES))
        for m in self.maps:
            m.close()


NestingModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None
)
TestNesting = NestingModel.TestCase
