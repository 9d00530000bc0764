"""Cold warm-up of a directory (``memlock lock --daemon DIR``): what it costs before reading.

The speed itself is measured side by side with vmtouch and dd in bench/bench_warmup.py,
never here; these tests pin down the behaviour the speed-ups rely on.
"""

from __future__ import annotations

import subprocess
import sys

from .kernel import child_env


def test_lock_command_imports_nothing_it_does_not_use() -> None:
    """``memlock lock`` loads neither dataclasses (which imports inspect), json nor socket.

    Each is tens of milliseconds of start-up before a cold warm-up can issue its first read;
    json is loaded for --json only, socket only under systemd (NOTIFY_SOCKET).
    """
    code = ("import sys; import memlock.cli._hold; "
            "print(sorted(m for m in ('dataclasses', 'inspect', 'json', 'socket') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), check=True).stdout
    assert out.strip() == "[]", out
