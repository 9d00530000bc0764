"""Every Python example in the README and the guides runs as written; every link resolves.

Each ```python block of README.md and of every .md under docs/ runs in a child, in a
scratch directory: one test per block, named by file and index (the index counts every
python block of the file). A block preceded by "<!-- not run: REASON -->" is skipped (e.g.
it waits for a terminal).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .kernel import REPO, child_env

README = REPO / "README.md"
GUIDES = sorted((REPO / "docs").rglob("*.md"))
DOCUMENTS = [README, *GUIDES]
#: Documents whose links are checked: the runnable ones and the project's own pages.
LINKED = [*DOCUMENTS, REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md"]
PYTHON_BLOCK = re.compile(r"(<!-- not run: [^>]*-->\n)?```python\n(.*?)```", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _examples() -> list[tuple[str, int, str]]:
    """(document, index among its python blocks, code) of every block that runs."""
    return [
        (_name(path), index, match.group(2))
        for path in DOCUMENTS
        for index, match in enumerate(PYTHON_BLOCK.finditer(path.read_text()))
        if not match.group(1)
    ]


EXAMPLES = _examples()


def _anchors(path: Path) -> set[str]:
    """The #anchors GitHub makes for the headings of a Markdown file."""
    text = FENCE.sub("", path.read_text())
    headings = re.findall(r"^#+ +(.+?) *$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize(("document", "index", "code"), EXAMPLES,
                         ids=[f"{doc}-{index}" for doc, index, _ in EXAMPLES])
def test_example_runs(document: str, index: int, code: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, env=child_env(), cwd=scratch, check=False)
    assert proc.returncode == 0, f"{document} example {index}:\n{code}\n{proc.stderr}"


def test_every_guide_and_the_readme_have_examples() -> None:
    documents = {doc for doc, _, _ in EXAMPLES}
    for name in ("README.md", "docs/locking.md", "docs/files.md", "docs/secrets.md",
                 "docs/realtime.md", "docs/operators.md", "docs/platforms.md"):
        assert name in documents, name
    assert len(EXAMPLES) >= 15


def test_readme_is_the_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for guide in ("locking", "files", "secrets", "realtime", "operators", "platforms",
                  "performance"):
        assert f"](docs/{guide}.md)" in text, guide
    for page in ("CONTRIBUTING.md", "CHANGELOG.md", "LICENSE"):
        assert f"]({page})" in text, page


def test_links_resolve() -> None:
    """Relative links name existing files, and their #anchors existing headings."""
    broken = []
    for path in LINKED:
        for target in LINK.findall(FENCE.sub("", path.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{_name(path)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{_name(path)}: {target} (no such heading)")
    assert broken == []


def test_readme_names_the_commands_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    text = README.read_text()
    assert "scripts/test" in ci and "scripts/test" in text
    assert "memlock doctor" in text


def test_no_unfilled_placeholder() -> None:
    for path in LINKED:
        text = path.read_text()
        for marker in ("PERF_TABLE", "TODO", "XXX", "_LINE"):
            assert marker not in text, f"{_name(path)}: {marker}"


def test_contributing_names_the_subset_other_pythons_run() -> None:
    """CONTRIBUTING's step 5 lists the test files scripts/test runs on every other CPython
    (test_cli_quickparse.py among them: the CHANGELOG's "checked on 3.11, 3.12 and 3.13")."""
    script = (REPO / "scripts" / "test").read_text()
    subset = re.search(r"^SUBSET=\((.*?)\)", script, re.S | re.M)
    assert subset, "scripts/test: no SUBSET=(...)"
    ran = {Path(name).name for name in subset.group(1).split()}
    step = re.search(r"^5\. a fast subset \((.*?)\) on every\s+other CPython",
                     (REPO / "CONTRIBUTING.md").read_text(), re.S | re.M)
    assert step, "CONTRIBUTING.md: no step 5"
    listed = {Path(name).name for name in re.findall(r"`([^`]+\.py)`", step.group(1))}
    assert listed == ran
