"""The sdist and the wheel as users get them: contents, metadata, one version everywhere.

Both are built once per run (``python -m build --no-isolation``: the sdist from this tree,
the wheel from the sdist, so the sdist is proved to build), then checked with the
tools PyPI users rely on (check-wheel-contents, twine check) and against lists of what
each must and must not contain. The unpacked sdist must collect the whole test suite.
"""

from __future__ import annotations

import email
import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import memlock

from .kernel import REPO

#: What the sdist must hold besides src/memlock (paths inside memlock-X.Y.Z/).
SDIST_REQUIRED = [
    "LICENSE", "README.md", "CHANGELOG.md", "CONTRIBUTING.md", "MANIFEST.in", "setup.py",
    "pyproject.toml", "requirements-dev.txt", "requirements-models.txt", "mkdocs.yml",
    "src/memlock/_speedups.c", "src/memlock/_speedups.pyi", "src/memlock/py.typed", "scripts/test",
    "bin/memlock",
    "tests/__init__.py", "tests/conftest.py", "tests/kernel.py", "tests/simlibc.py",
    "tests/pressure.py", "docs/systemd/memlock-hold.service", "docs/container/Dockerfile",
]


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path
    sdist_names: frozenset[str]  # relative to the sdist's top directory
    wheel_names: frozenset[str]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                           str(out), str(REPO)], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    top = sdist.name.removesuffix(".tar.gz") + "/"
    with tarfile.open(sdist) as tar:
        sdist_names = frozenset(m.name.removeprefix(top) for m in tar.getmembers() if m.isfile())
    with zipfile.ZipFile(wheel) as whl:
        wheel_names = frozenset(whl.namelist())
    return Dists(sdist, wheel, sdist_names, wheel_names)


def _tracked(under: str) -> list[str]:
    """Files of this tree under a folder, as the sdist must have them: what git tracks
    (build outputs such as bench/bin/ are ignored); in an unpacked sdist, every file."""
    if (REPO / ".git").exists():
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "--", under],
                                capture_output=True, text=True, check=True).stdout.split()
        return sorted(name for name in listed if (REPO / name).is_file())
    root = REPO / under
    return sorted(p.relative_to(REPO).as_posix() for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".so"))


def test_sdist_has_everything_to_build_and_test(dists: Dists) -> None:
    required = [*SDIST_REQUIRED, *_tracked("tests"), *_tracked("docs"), *_tracked("bench"),
                *_tracked("src/memlock")]
    missing = [name for name in required if name not in dists.sdist_names]
    assert missing == []
    assert any(name.startswith("tests/data/") for name in dists.sdist_names)
    assert not [n for n in dists.sdist_names if n.endswith((".so", ".pyc"))]


def test_wheel_ships_the_module_not_its_source(dists: Dists) -> None:
    names = dists.wheel_names
    assert "memlock/_speedups.c" not in names
    assert not [n for n in names if n.endswith(".c")]
    assert {"memlock/_speedups.pyi", "memlock/py.typed", "memlock/__init__.py",
            "memlock/cli/__init__.py", "memlock/_platform/linux.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/"))]
    info = f"memlock-{memlock.__version__}.dist-info/"
    assert {info + "LICENSE", info + "METADATA"} <= names
    # The command is bin/memlock, a script (pip's entry-point wrapper imports re: 5 ms).
    script = f"memlock-{memlock.__version__}.data/scripts/memlock"
    assert info + "entry_points.txt" not in names and script in names
    with zipfile.ZipFile(dists.wheel) as whl:
        assert whl.read(script).startswith(b"#!python\n")  # the installer names its Python
    # The C module is built wherever this interpreter has it (optional=True elsewhere).
    built = [n for n in names if n.startswith("memlock/_speedups.") and n.endswith(".so")]
    assert bool(built) == (importlib.util.find_spec("memlock._speedups") is not None)


def _metadata(dists: Dists) -> email.message.Message:
    with zipfile.ZipFile(dists.wheel) as whl:
        text = whl.read(f"memlock-{memlock.__version__}.dist-info/METADATA").decode()
    return email.message_from_string(text)


def test_what_pypi_users_see(dists: Dists) -> None:
    """check-wheel-contents and twine check pass; classifiers, URLs, license are there."""
    for tool in (["check_wheel_contents", str(dists.wheel)],
                 ["twine", "check", "--strict", str(dists.sdist), str(dists.wheel)]):
        proc = subprocess.run([sys.executable, "-m", *tool], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = _metadata(dists)
    classifiers = meta.get_all("Classifier") or []
    for classifier in ("Typing :: Typed", "License :: OSI Approved :: MIT License",
                       "Operating System :: POSIX :: Linux",
                       "Programming Language :: Python :: 3.11",
                       "Programming Language :: Python :: 3.12",
                       "Programming Language :: Python :: 3.13"):
        assert classifier in classifiers
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License"] == "MIT"
    assert meta["Description-Content-Type"] == "text/markdown"


def test_one_version_everywhere(dists: Dists) -> None:
    """memlock.__version__, `memlock --version`, the wheel and the sdist agree."""
    version = memlock.__version__
    cli = subprocess.run([sys.executable, "-m", "memlock", "--version"], capture_output=True,
                         text=True, timeout=60, check=True)
    assert cli.stdout.strip() == f"memlock {version}"
    assert _metadata(dists)["Version"] == version
    assert dists.wheel.name.startswith(f"memlock-{version}-")
    assert dists.sdist.name == f"memlock-{version}.tar.gz"
    # Only one place states it: pyproject reads it from memlock/__init__.py.
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert f'"{version}"' not in pyproject


def test_sdist_collects_the_whole_suite(dists: Dists, tmp_path: Path) -> None:
    """Unpacked, the sdist's own tests import its own code and collect without error."""
    with tarfile.open(dists.sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.iterdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=300, cwd=tree, check=False,
        env={**os.environ, "PYTHONPATH": str(tree / "src")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.lower().splitlines()[-1]
    collected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").glob("test_*.py")}
    assert collected == expected
