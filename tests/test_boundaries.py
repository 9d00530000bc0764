"""The package's import graph keeps the architecture CONTRIBUTING.md describes.

Read from the source (the AST), never by importing, so a violation on any platform's branch
counts. One test case per module and rule, so a failure names the file and the import.

Rules:
- only ``memlock/_platform/`` and ``memlock/_buffer.py`` (the buffer export) import ctypes;
- outside ``_platform/``, modules import ``memlock._platform`` itself (its ``__init__``),
  never one of its modules (``_libc``, ``_procfs``, ``linux``, ``_fork`` ...);
- no module imports a private name (``_x``) of another module, outside its own package;
- only ``memlock/_platform/`` names /proc or /sys files (string literals in the code);
- the command line (``memlock/cli/``) imports of memlock only ``memlock``,
  ``memlock.lowlevel``, ``memlock.errors``, its own modules and ``memlock._cli_api``, the one
  documented internal module that gives it what is not public.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kernel import REPO

PACKAGE = REPO / "src" / "memlock"
CTYPES_ALLOWED = ("_platform/", "_buffer.py")
CLI_MAY_IMPORT = {"memlock", "memlock.lowlevel", "memlock.errors", "memlock._cli_api"}


def _package_of(path: Path) -> Path:
    """The ``memlock`` folder that holds ``path`` (the real one, or a planted copy)."""
    return next(p for p in path.parents if p.name == "memlock")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_package_of(path).parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name of what ``from X import ...`` in ``module`` imports from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, absolute module, imported name or None) for every import in ``path``,
    at any depth (function-local imports and TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text(), str(path))
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            for alias in node.names:
                yield node.lineno, source, alias.name


def _submodule(source: str, name: str | None, root: Path = PACKAGE) -> str | None:
    """``from memlock._platform import _libc`` imports the module memlock._platform._libc."""
    if name is None:
        return None
    candidate = root.parent.joinpath(*f"{source}.{name}".split("."))
    if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
        return f"{source}.{name}"
    return None


MODULES = sorted(PACKAGE.rglob("*.py"))
IDS = [str(p.relative_to(PACKAGE)) for p in MODULES]


def _rel(path: Path) -> str:
    return path.relative_to(_package_of(path)).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_only_the_platform_layer_imports_ctypes(path: Path) -> None:
    if _rel(path).startswith(CTYPES_ALLOWED):
        return
    bad = [f"line {line}: {source}" for line, source, _ in imports(path)
           if source == "ctypes" or source.startswith("ctypes.")]
    assert not bad, f"{_rel(path)} imports ctypes (only _platform/ may): {bad}"


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_the_platform_layer_is_entered_by_its_front_door(path: Path) -> None:
    if _rel(path).startswith("_platform/"):
        return
    bad = []
    for line, source, name in imports(path):
        target = _submodule(source, name, _package_of(path)) or source
        if target.startswith("memlock._platform."):
            bad.append(f"line {line}: {target}")
    bad = list(dict.fromkeys(bad))
    assert not bad, (f"{_rel(path)} reaches inside memlock._platform "
                     f"(import what it needs from memlock._platform): {bad}")


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_no_private_names_of_another_module(path: Path) -> None:
    own_package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else _module_name(path)
    bad = []
    for line, source, name in imports(path):
        if not source.startswith("memlock") or name is None or not name.startswith("_"):
            continue
        if name.startswith("__"):  # __version__ and the like
            continue
        if _submodule(source, name, _package_of(path)):  # a module, not a name in one
            continue
        if source == own_package or (source.startswith(own_package + ".") and \
                own_package != "memlock"):
            continue  # a package's modules share its private names
        bad.append(f"line {line}: {name} from {source}")
    assert not bad, f"{_rel(path)} imports private names of other modules: {bad}"


def _os_paths(path: Path) -> list[str]:
    """String literals (f-string parts included) that name /proc or /sys files."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith(("/proc/", "/sys/")):
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_only_the_platform_layer_reads_proc_and_sys(path: Path) -> None:
    if _rel(path).startswith("_platform/"):
        return
    bad = _os_paths(path)
    assert not bad, f"{_rel(path)} names /proc or /sys files (a backend operation's job): {bad}"


CLI_MODULES = [p for p in MODULES if _rel(p).startswith("cli/")]


@pytest.mark.parametrize("path", CLI_MODULES, ids=[_rel(p) for p in CLI_MODULES])
def test_the_command_line_uses_the_public_api(path: Path) -> None:
    bad = []
    for line, source, name in imports(path):
        target = _submodule(source, name, _package_of(path)) or source
        if not target.startswith("memlock"):
            continue
        if target in CLI_MAY_IMPORT or target.startswith("memlock.cli"):
            continue
        bad.append(f"line {line}: {target}")
    bad = list(dict.fromkeys(bad))
    assert not bad, (f"{_rel(path)} imports memlock internals (use the public API or "
                     f"memlock._cli_api): {bad}")


def test_the_rules_see_violations(tmp_path: Path) -> None:
    """The checks above are not vacuous: each finds a violation planted in a copy."""
    package = tmp_path / "src" / "memlock"
    for module in ("__init__.py", "_files.py", "_registry.py", "cli/__init__.py",
                   "_platform/__init__.py", "_platform/_libc.py"):
        (package / module).parent.mkdir(parents=True, exist_ok=True)
        (package / module).write_text("")
    planted = package / "cli" / "_probe.py"
    planted.write_text("import ctypes\nfrom .._platform._libc import real_libc\n"
                       "from .._files import _touch_fd\nfrom .. import _registry\n"
                       "PID = 1\nSTATUS = f'/proc/{PID}/status'\n")
    assert (1, "ctypes", None) in list(imports(planted))
    with pytest.raises(AssertionError, match="imports ctypes"):
        test_only_the_platform_layer_imports_ctypes(planted)
    with pytest.raises(AssertionError, match=r"memlock\._platform\._libc"):
        test_the_platform_layer_is_entered_by_its_front_door(planted)
    with pytest.raises(AssertionError, match=r"_touch_fd from memlock\._files"):
        test_no_private_names_of_another_module(planted)
    with pytest.raises(AssertionError, match=r"memlock\._registry"):
        test_the_command_line_uses_the_public_api(planted)
    with pytest.raises(AssertionError, match="names /proc or /sys files"):
        test_only_the_platform_layer_reads_proc_and_sys(planted)


def _architecture_map() -> set[str]:
    """The source files CONTRIBUTING.md's architecture map names (``src/...`` rows; a
    bare name after the first path is in the same folder)."""
    named: set[str] = set()
    for line in (REPO / "CONTRIBUTING.md").read_text().splitlines():
        if not line.startswith("| `src/"):
            continue
        folder = ""
        for token in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
            if "/" in token:
                folder = token.rsplit("/", 1)[0]
                named.add(token)
            else:
                named.add(f"{folder}/{token}")
    return named


def test_the_architecture_map_matches_the_tree() -> None:
    """Every module of the package has its row in CONTRIBUTING.md, and every row a file."""
    tree = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*")
            if p.suffix in (".py", ".c", ".pyi") and "__pycache__" not in p.parts}
    named = _architecture_map()
    assert sorted(tree - named) == [], "modules missing from CONTRIBUTING.md's map"
    assert sorted(named - tree) == [], "rows of CONTRIBUTING.md's map without a file"
