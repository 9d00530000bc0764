"""``memlock top``: the live view in a real terminal (tmux), and its snapshot elsewhere.

A child locks a known amount, then more on request; tmux runs ``memlock top -d 0.5`` in a
detached session of its own server (a socket under the test's temporary directory), and
``capture-pane`` shows what the terminal shows: the child's row with its locked bytes, and
its change once it locks more. ``q`` ends the program with exit status 0 (the shell
writes it to a file). The server is killed afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .kernel import child_env, have, output, python_cmd, run_cli, vmlck

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux /proc")

MiB = 1 << 20

#: Locks 1 MiB, says "ready"; locks 2 MiB more for each line read, saying "more".
GROWER = """
import mmap, sys
import memlock
held = []
def lock(n):
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE)
    held.append((m, memlock.lock(m)))
lock(1 << 20)
print("ready", flush=True)
for _ in sys.stdin:
    lock(2 << 20)
    print("more", flush=True)
"""


@contextlib.contextmanager
def grower() -> Iterator[tuple[int, Callable[[], None]]]:
    """The GROWER child: (pid, lock_more()). Killed and reaped afterwards."""
    with subprocess.Popen(python_cmd(GROWER), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, env=child_env()) as child:
        assert child.stdin is not None and child.stdout is not None
        stdin, stdout = child.stdin, child.stdout

        def more() -> None:
            stdin.write("\n")
            stdin.flush()
            assert stdout.readline() == "more\n"

        try:
            assert stdout.readline() == "ready\n"
            yield child.pid, more
        finally:
            child.kill()
            child.wait()


def row(screen: str, pid: int) -> str | None:
    """The line of ``pid`` in the table on ``screen``."""
    return next((line for line in screen.splitlines()
                 if line.split() and line.split()[0] == str(pid)), None)


def test_snapshot_when_stdout_is_not_a_terminal() -> None:
    with grower() as (pid, _):
        text = output(run_cli("top", "-d", "0.5"))
        line = row(text, pid)
        assert line is not None and " 1.0 MiB " in line, text
        assert text.splitlines()[0].split()[:3] == ["PID", "USER", "LOCKED"]
        assert text.splitlines()[-1].startswith("host: Mlocked ")


class Tmux:
    """A tmux server of the test's own (``-S`` socket), one detached session."""

    def __init__(self, socket: Path) -> None:
        self.base = ["tmux", "-S", str(socket), "-f", "/dev/null"]

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([*self.base, *args], capture_output=True, text=True,
                              env=child_env(), timeout=30, check=False)
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait(self, what: str, ok: Callable[[str], bool], timeout: float = 30) -> str:
        """The screen once ``ok(screen)`` holds (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if ok(screen):
                return screen
            assert time.monotonic() < deadline, f"never {what}; the screen:\n{screen}"
            time.sleep(0.1)


@pytest.mark.skipif(not have("tmux"), reason="needs tmux")
def test_live_in_a_real_terminal(tmp_path: Path) -> None:
    tmux = Tmux(tmp_path / "tmux.sock")
    # The shell writes how memlock ended to a file (tmux's pane_dead_status is not always
    # filled, and may drop the last output of a pane that ends).
    exit_file = tmp_path / "exit-status"
    command = shlex.join([sys.executable, "-m", "memlock", "top", "-d", "0.5"]) + (
        f"; echo $? > {shlex.quote(str(exit_file))}")
    with grower() as (pid, more):
        assert vmlck(pid) == MiB
        tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "50", command, ";",
             "set-option", "-w", "-t", "top", "remain-on-exit", "on")  # the screen stays
        try:
            screen = tmux.wait("showed the child with 1.0 MiB",
                               lambda s: " 1.0 MiB " in (row(s, pid) or ""))
            lines = screen.splitlines()
            assert lines[0].startswith("memlock top - every 0.5 s, q quits")
            assert lines[1].startswith("host: Mlocked ")
            heading = next(line for line in lines if line.split()[:2] == ["PID", "USER"])
            assert heading.split()[:4] == ["PID", "USER", "LOCKED", "CHANGE"]
            more()
            assert vmlck(pid) == 3 * MiB
            tmux.wait("showed the child's 2 MiB more",
                      lambda s: " 3.0 MiB " in (row(s, pid) or "")
                      and "+2.0 MiB" in (row(s, pid) or ""))
            # The next refresh: nothing changed since, the change is gone.
            tmux.wait("cleared the change", lambda s: " 3.0 MiB " in (row(s, pid) or "")
                      and "+2.0 MiB" not in (row(s, pid) or ""))
            tmux("send-keys", "-t", "top", "q")
            deadline = time.monotonic() + 30
            while not (exit_file.exists() and exit_file.read_text().endswith("\n")):
                assert time.monotonic() < deadline, f"q did not end it:\n{tmux.screen()}"
                time.sleep(0.1)
            assert exit_file.read_text() == "0\n"
            assert "Traceback" not in tmux.screen()
        finally:
            subprocess.run([*tmux.base, "kill-server"], capture_output=True, check=False)
