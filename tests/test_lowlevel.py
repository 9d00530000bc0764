"""memlock.lowlevel: raw calls on integer addresses, with the kernel's own semantics.

Judged by smaps (page lock state) and VmLck: locks do not nest, ranges round like the
kernel's, bad integers never wrap, kernel errors come back translated.
"""

from __future__ import annotations

import errno

import pytest

import memlock
from memlock import lowlevel

from .kernel import PAGE, address_of, anon, page_state, vmlck


def test_lowlevel_does_not_nest() -> None:
    m = anon(1)
    addr = address_of(m)
    lowlevel.mlock(addr, PAGE)
    lowlevel.mlock(addr, PAGE)
    lowlevel.munlock(addr, PAGE)  # one munlock undoes both
    assert page_state(addr) == "none"
    lowlevel.munlock(addr, PAGE)  # never-locked: fine


def test_lowlevel_rounds_like_the_kernel_and_mlock2_onfault() -> None:
    m = anon(3)
    addr = address_of(m)
    lowlevel.mlock(addr + 1, PAGE)  # touches two pages
    assert [page_state(addr + i * PAGE) for i in range(3)] == ["full", "full", "none"]
    lowlevel.munlock(addr, 3 * PAGE)
    lowlevel.mlock2(addr, PAGE, memlock.MLOCK_ONFAULT)
    assert page_state(addr) == "onfault"
    lowlevel.munlock(addr, PAGE)


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda: lowlevel.mlock(-1, 4096), ValueError),
        (lambda: lowlevel.mlock(0, -4096), ValueError),
        (lambda: lowlevel.mlock(2**64, 1), OverflowError),
        (lambda: lowlevel.munlock(0, 2**64), OverflowError),
        (lambda: lowlevel.mlock(1.0, 1), TypeError),
        (lambda: lowlevel.mlock2(0, 1, -1), ValueError),
        (lambda: lowlevel.mlock2(0, 1, 2**32), OverflowError),
        (lambda: lowlevel.mlockall(2**31), OverflowError),
    ],
)
def test_lowlevel_bad_integers_never_wrap(call: object, exc: type) -> None:
    before = vmlck()
    with pytest.raises(exc):
        call()  # type: ignore[operator]
    assert vmlck() == before


def test_lowlevel_kernel_errors_are_translated() -> None:
    m = anon(1)
    addr = address_of(m)
    with pytest.raises(memlock.MemlockError) as info:
        lowlevel.mlock2(addr, PAGE, 0x80)  # unknown flag: EINVAL before anything else
    assert info.value.errno == errno.EINVAL and type(info.value) is memlock.MemlockError
    with pytest.raises(memlock.MemlockError) as info:
        lowlevel.mlock(2**64 - PAGE, 2 * PAGE)  # wraps: EINVAL
    assert info.value.errno == errno.EINVAL
    lowlevel.mlock(0, 0)  # rounded length 0: success even unmapped
    assert lowlevel.__doc__ is not None and "do **not nest**" in lowlevel.__doc__
