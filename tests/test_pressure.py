"""Under real memory pressure, locked pages stay resident while unlocked ones swap out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .pressure import squeeze, unavailable

REASON = unavailable()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_locked_pages_are_never_swapped_while_the_control_is() -> None:
    proc = squeeze("""
        import memlock
        locked = filled(32 << 20)
        lk = memlock.lock(locked)
        control = filled(32 << 20)
        hog = pressure()
        print(json.dumps({
            "locked_swap": swapped(locked),
            "locked_resident": vma(address_of(locked))["Locked"],
            "locked_in_ram": resident(locked),
            "control_in_ram": resident(control),
        }))
    """)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["control_in_ram"] < 24 << 20, result  # the pressure was real
    assert result["locked_swap"] == 0, result
    assert result["locked_resident"] == result["locked_in_ram"] == 32 << 20, result


def test_the_machine_is_left_as_found() -> None:
    swaps = Path("/proc/swaps").read_text().splitlines()
    assert not [s for s in swaps[1:] if "memlock-swap-" in s]
    leftovers = list(Path("/sys/fs/cgroup/memory").glob("memlock-test-*"))
    assert not leftovers
