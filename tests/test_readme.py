"""Every Python example in the README runs as written (in a child, in a scratch directory)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

import pytest

from .kernel import REPO, child_env

README = (REPO / "README.md").read_text()
# A block preceded by "<!-- not run: REASON -->" is skipped (e.g. it waits for a terminal).
BLOCKS = [
    m.group(2)
    for m in re.finditer(r"(<!-- not run: [^>]*-->\n)?```python\n(.*?)```", README, re.S)
    if not m.group(1)
]


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True,
                              text=True, timeout=120, env=child_env(), cwd=scratch, check=False)
    assert proc.returncode == 0, f"README example {index}:\n{BLOCKS[index]}\n{proc.stderr}"


def test_readme_names_the_commands_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test" in ci and "scripts/test" in README
    assert "memlock doctor" in README


def test_readme_has_no_unfilled_placeholder() -> None:
    for marker in ("PERF_TABLE", "TODO", "XXX"):
        assert marker not in README, marker
