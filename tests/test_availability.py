"""Availability matrix: which public names and constants exist on which OS.

Patching ``sys.platform`` and importing memlock proves nothing (the Linux backend is bound at
import), so this is checked statically: the constants each backend module defines, the
``sys.platform`` branches of the modules that re-export them (evaluated for each platform
from their syntax tree), and ``mypy --strict --platform X`` for every X, which is the proof
that the literal platform checks hold and each OS's branch type-checks.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import memlock

SRC = Path(memlock.__file__).resolve().parent
PLATFORMS = ("linux", "darwin", "freebsd14", "sunos5")

#: The matrix: C constants (name -> value) public on each OS.
CONSTANTS: dict[str, dict[str, int]] = {
    "linux": {"MCL_CURRENT": 1, "MCL_FUTURE": 2, "MCL_ONFAULT": 4, "MLOCK_ONFAULT": 1},
    "darwin": {"MCL_CURRENT": 1, "MCL_FUTURE": 2},
    "freebsd14": {"MCL_CURRENT": 1, "MCL_FUTURE": 2},
    "sunos5": {"MCL_CURRENT": 1, "MCL_FUTURE": 2},
}
BACKEND_MODULE = {
    "linux": ("linux", "LinuxBackend"),
    "darwin": ("darwin", "DarwinBackend"),
    "freebsd14": ("freebsd", "FreeBSDBackend"),
    "sunos5": ("sunos", "SunOSBackend"),
}
#: Names in memlock.lowlevel that exist only on some OSes.
LOWLEVEL_EXTRA = {"linux": {"mlock2"}, "darwin": set(), "freebsd14": set(), "sunos5": set()}


def _branch_taken(test: ast.expr, platform: str) -> bool:
    """Evaluate an ``if`` test such as ``sys.platform == "linux"`` for ``platform``."""
    code = compile(ast.Expression(test), "<test>", "eval")
    return bool(eval(code, {"sys": types.SimpleNamespace(platform=platform)}))


def _module_body(tree: ast.Module, platform: str) -> list[ast.stmt]:
    """The top-level statements that run on ``platform`` (platform ``if`` chains flattened)."""
    out: list[ast.stmt] = []

    def walk(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.If) and "sys.platform" in ast.unparse(node.test):
                walk(node.body if _branch_taken(node.test, platform) else node.orelse)
            else:
                out.append(node)

    walk(tree.body)
    return out


def _parse(rel: str) -> ast.Module:
    return ast.parse((SRC / rel).read_text(encoding="utf-8"))


def _imported(stmts: list[ast.stmt], module: str) -> set[str]:
    return {
        alias.asname or alias.name
        for node in stmts
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


def _all_names(stmts: list[ast.stmt]) -> set[str]:
    """What ``__all__ = [...]`` and ``__all__ += [...]`` add up to."""
    names: set[str] = set()
    for node in stmts:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "__all__":
            value = node.value  # type: ignore[attr-defined]
            names |= {e.value for e in value.elts if isinstance(e, ast.Constant)}
    return names


def _defined_defs(stmts: list[ast.stmt]) -> set[str]:
    return {n.name for n in stmts if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_backend_module_defines_exactly_the_os_constants(platform: str) -> None:
    mod_name, cls_name = BACKEND_MODULE[platform]
    module = importlib.import_module(f"memlock._platform.{mod_name}")
    expected = CONSTANTS[platform]
    for name, value in expected.items():
        assert getattr(module, name) == value, (mod_name, name)
    assert getattr(module, cls_name).constants == expected
    for absent in {"MCL_ONFAULT", "MLOCK_ONFAULT"} - expected.keys():
        assert not hasattr(module, absent), f"{mod_name} defines {absent}, which that OS lacks"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_memlock_reexports_the_constants_of_that_os_only(platform: str) -> None:
    """memlock takes them from the platform layer's front door, which takes them from
    that OS's backend module only."""
    mod_name, cls_name = BACKEND_MODULE[platform]
    body = _module_body(_parse("__init__.py"), platform)
    expected = set(CONSTANTS[platform])
    assert _imported(body, "_platform") == expected
    door = _module_body(_parse("_platform/__init__.py"), platform)
    assert _imported(door, mod_name) == expected | {cls_name}
    assert expected <= _all_names(door)
    assert not ({"MCL_ONFAULT", "MLOCK_ONFAULT"} - expected) & _all_names(door)
    public = _all_names(body)
    assert expected <= public
    assert not ({"MCL_ONFAULT", "MLOCK_ONFAULT"} - expected) & public


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_right_backend_is_picked(platform: str) -> None:
    mod_name, cls_name = BACKEND_MODULE[platform]
    body = _module_body(_parse("_platform/__init__.py"), platform)
    assert cls_name in _imported(body, mod_name)
    # an unknown OS gets the generic backend and imports none of them
    other = _module_body(_parse("_platform/__init__.py"), "haiku1")
    assert not any(_imported(other, m) for m, _ in BACKEND_MODULE.values())


@pytest.mark.parametrize("platform", PLATFORMS)
def test_lowlevel_names(platform: str) -> None:
    body = _module_body(_parse("lowlevel.py"), platform)
    base = {"mlock", "munlock", "mlockall", "munlockall"}
    assert _all_names(body) == base | LOWLEVEL_EXTRA[platform]
    assert _defined_defs(body) >= base | LOWLEVEL_EXTRA[platform]
    assert not ({"mlock2"} - LOWLEVEL_EXTRA[platform]) & _defined_defs(body)


def test_this_process_matches_the_matrix() -> None:
    """The one platform we can import for real agrees with the static reading."""
    key = "linux" if sys.platform == "linux" else sys.platform
    if key not in CONSTANTS:
        pytest.skip(f"no matrix row for {sys.platform}")
    for name, value in CONSTANTS[key].items():
        assert getattr(memlock, name) == value and name in memlock.__all__
    _, cls_name = BACKEND_MODULE[key]
    assert type(memlock._platform.BACKEND).__name__ == cls_name


def test_public_names() -> None:
    for name in memlock.__all__:
        assert hasattr(memlock, name), name


def test_mypy_strict_passes_on_every_platform(tmp_path: Path) -> None:
    """``mypy --strict --platform X src/memlock`` for linux, darwin, freebsd, sunos5.

    Run in parallel subprocesses, each with its own cache.
    """
    procs = {
        p: subprocess.Popen(
            [sys.executable, "-m", "mypy", "--strict", "--platform", p,
             "--cache-dir", str(tmp_path / p), "--no-color-output", str(SRC)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=SRC.parent.parent, env={**os.environ, "MYPY_FORCE_COLOR": "0"},
        )
        for p in ("linux", "darwin", "freebsd", "sunos5")
    }
    failures = {}
    for p, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        if "No module named mypy" in out:
            pytest.fail("mypy is not installed: install requirements-dev.txt")
        if proc.returncode != 0:
            failures[p] = out
    assert not failures, "\n".join(f"--platform {p}:\n{out}" for p, out in failures.items())
