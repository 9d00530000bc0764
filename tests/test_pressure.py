"""Under real memory pressure, locked pages stay resident while unlocked ones swap out."""

from __future__ import annotations

import json

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


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_secret_pages_are_never_swapped() -> None:
    proc = squeeze("""
        import memlock
        kinds = {
            "pooled-anonymous": memlock.SecureBuffer(32, backend="anonymous"),
            "pooled-memfd_secret": memlock.SecureBuffer(32, backend="memfd_secret"),
            "isolated": memlock.SecureBuffer(64, isolated=True, backend="anonymous"),
            "large": memlock.SecureBuffer(64 << 10, backend="anonymous"),
        }
        for sb in kinds.values():
            with sb.view() as v:
                v[:] = os.urandom(len(sb))
        control = filled(32 << 20)
        hog = pressure()
        out = {"control_in_ram": resident(control)}
        for name, sb in kinds.items():
            v = sb.view()
            info = vma(address_of(v))
            out[name] = {"swap": info["Swap"], "locked": "lo" in info["flags"],
                         "locked_bytes": info["Locked"]}
            v.release()
        print(json.dumps(out))
    """)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result.pop("control_in_ram") < 24 << 20, result  # the pressure was real
    for name, info in result.items():
        assert info["locked"] and info["swap"] == 0 and info["locked_bytes"] > 0, (name, info)
