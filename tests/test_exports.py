"""The public facade is consistent with itself (modelled on trio's test_exports).

`memlock/__init__.py` names its public API three times: `__all__`, the lazy-import table
`_LAZY` (what loads on first use) and the `TYPE_CHECKING` block (what type checkers and
IDEs see). They must agree, every name must resolve to the object its module defines, and
public classes say they are memlock's (`__module__ == "memlock"`), as in reprs, pickles
and the API reference.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys

import pytest

import memlock
import memlock.errors
import memlock.lowlevel

from .kernel import REPO, child_env

INIT = REPO / "src" / "memlock" / "__init__.py"
EAGER = {"PAGE_SIZE", "CopyOnWriteWarning", "LockLimitError", "LockPermissionError", "MemlockError",
         "UnsupportedOperation"}
CONSTANTS = {"MCL_CURRENT", "MCL_FUTURE", "MCL_ONFAULT", "MLOCK_ONFAULT"}


def _type_checking_imports() -> dict[str, set[str]]:
    """{module: names} imported in __init__.py's ``if TYPE_CHECKING:`` block."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.level:
                    found.setdefault("." * stmt.level + (stmt.module or ""), set()).update(
                        alias.asname or alias.name for alias in stmt.names)
    return found


def test_all_has_no_duplicates_and_every_name_resolves() -> None:
    assert len(memlock.__all__) == len(set(memlock.__all__))
    for name in memlock.__all__:
        assert getattr(memlock, name) is not None, name
    assert set(memlock.__all__) <= set(dir(memlock))


def test_the_lazy_table_is_all_of_all_but_the_eager_names() -> None:
    lazy = {name for names in memlock._LAZY.values() for name in names}
    platform_constants = CONSTANTS & set(memlock.__all__)
    assert lazy | EAGER | platform_constants == set(memlock.__all__)
    assert not lazy & EAGER
    assert len(lazy) == sum(len(names) for names in memlock._LAZY.values()), "a name twice"


def test_the_type_checking_block_matches_the_lazy_table() -> None:
    seen = _type_checking_imports()
    seen.pop(".", None)  # nothing imported from the package itself
    wanted = {module: set(names) for module, names in memlock._LAZY.items()}
    assert seen == wanted


@pytest.mark.parametrize("module, names", sorted(memlock._LAZY.items()))
def test_each_lazy_name_is_its_modules_object(module: str, names: tuple[str, ...]) -> None:
    defining = importlib.import_module(module, "memlock")
    for name in names:
        assert getattr(memlock, name) is getattr(defining, name), name


def test_public_classes_belong_to_memlock() -> None:
    classes = [getattr(memlock, name) for name in memlock.__all__
               if isinstance(getattr(memlock, name), type)]
    assert len(classes) >= 13
    wrong = {cls.__qualname__: cls.__module__ for cls in classes
             if cls.__module__ != "memlock"}
    assert not wrong
    for cls in classes:  # the name a user would write finds the class
        assert getattr(memlock, cls.__qualname__) is cls


def test_the_errors_and_lowlevel_modules_export_what_they_list() -> None:
    for module in (memlock.errors, memlock.lowlevel):
        assert len(module.__all__) == len(set(module.__all__))
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    for name in memlock.errors.__all__:
        assert getattr(memlock, name) is getattr(memlock.errors, name)


def test_star_import_gives_all() -> None:
    space: dict[str, object] = {}
    exec("from memlock import *", space)
    assert set(space) - {"__builtins__"} == set(memlock.__all__)


def test_import_memlock_stays_lazy() -> None:
    """``import memlock`` loads no feature module: they load on first use."""
    code = ("import json, sys, memlock; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('memlock'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), check=True, timeout=60)
    loaded = set(json.loads(proc.stdout))
    features = {module.replace(".", "memlock.", 1) for module in memlock._LAZY} - {
        "memlock._records"}
    assert not loaded & features, sorted(loaded & features)
