"""The command line read without argparse (memlock/cli/_quickparse.py) reads as argparse does.

Every command line the quick reader takes, argparse must read to the same values; every
one argparse refuses (or answers with --help), the quick reader must leave to it. And the
plain runs an operator repeats (``memlock status``) load neither argparse nor :mod:`re`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memlock.cli import COMMANDS, build_parser
from memlock.cli._quickparse import _Declined, _Recorder, parse

from .kernel import child_env

#: Values to put after options and as positional arguments: good, bad and tricky ones.
VALUES = ["1", "2", "42", "0", "-1", "65534", "root", "nobody", "no-such-user-x", "4K", "1M",
          "2G", "x", "", "-", "--", "a=b", "1.5", "nan", "/tmp", "*.bin", "5-10", "0-4K",
          "fifo", "a b", "-x y", "\udcff"]
#: Values that most options take.
GOOD_VALUES = ["1", "2", "4K", "1M", "0.5", "/tmp", "*.bin", "root", "x.json", "0-4K", " 7 ", "y "]


def _options(command: str) -> list[str]:
    """The option strings of ``command`` as its module registers them (none if declined)."""
    recorder = _Recorder()
    try:
        __import__(f"memlock.cli.{COMMANDS[command]}", fromlist=["register"]).register(recorder)
    except _Declined:
        return []
    return [o for a in recorder.parsers[command].actions for o in a.options]


def _chunks(command: str) -> st.SearchStrategy[list[str]]:
    """Pieces of a command line: an option, an option and a value, ``--option=value``, a
    value alone; the command's own options most often, and some it does not have."""
    options = _options(command) or ["--json"]
    longs = [o for o in options if o.startswith("--")] or ["--x"]
    extra = ["-h", "--help", "--version", "--js", "--JSON", "-qv", "-j4", "-j=4", "--all=1"]
    option = st.sampled_from(options)
    value = st.sampled_from(GOOD_VALUES) | st.sampled_from(VALUES)
    return st.one_of(
        st.tuples(option).map(list),
        st.tuples(option, value).map(list),
        st.builds(lambda o, v: [f"{o}={v}"], st.sampled_from(longs), value),
        st.tuples(value).map(list),
        st.tuples(st.sampled_from(extra)).map(list),
    )


def _argparse(argv: list[str]) -> dict[str, object] | None:
    """argparse's values for ``argv``, or None where it exits (an error, --help)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return vars(build_parser(argv[0]).parse_args(argv))
    except SystemExit:
        return None


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    return [command, *(t for chunk in draw(st.lists(_chunks(command), max_size=5)) for t in chunk)]


@settings(max_examples=int(os.environ.get("QP_EXAMPLES", "1500")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_what_the_quick_reader_takes_argparse_reads_the_same(argv: list[str]) -> None:
    quick = parse(argv, COMMANDS[argv[0]])
    if quick is None:
        return  # argparse decides: nothing to compare
    assert _argparse(argv) == vars(quick), argv


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--all", "--json"], ["status", "1", "2", "--json"],
    ["status", "--user", "root", "--cgroup=docker", "--cgroup", "x"], ["limits"],
    ["limits", "--json"], ["doctor", "--pid", "1", "--json"], ["top", "-d", "0.5", "--all"],
    ["resident", "-q", "/tmp", "/var"], ["touch", "--profile", "p.json"],
    ["evict", "--include", "*.bin", "-m", "4M", "/tmp"],
    ["lock", "--daemon", "--pidfile", "/run/x.pid", "-w", "/tmp"],
    ["verify", "1", "--locked", "--path", "*.so", "--path", "*.bin", "--min-locked", "4K"],
])
def test_plain_command_lines_are_read_without_argparse(argv: list[str]) -> None:
    quick = parse(argv, COMMANDS[argv[0]])
    assert quick is not None, argv
    assert vars(quick) == _argparse(argv)


@pytest.mark.parametrize("argv", [
    ["status", "--help"], ["status", "-h"], ["status", "--js"], ["status", "1", "--json", "2"],
    ["status", "--user"], ["status", "--user", "--json"], ["status", "-1"], ["status", "x"],
    ["status", "--user", "no-such-user-x"], ["status", "--json=1"], ["status", "--", "1"],
    ["verify"], ["verify", "1", "2"], ["resident", "-qv"], ["resident", "-j4", "/tmp"],
    ["run", "--", "true"], ["latency", "--loops", "10"], ["exporter", "--textfile", "/tmp"],
])
def test_the_rest_is_left_to_argparse(argv: list[str]) -> None:
    assert parse(argv, COMMANDS[argv[0]]) is None


def test_append_defaults_are_copied_not_shared() -> None:
    """``--path`` appends to a default list: each run gets its own, as argparse's does."""
    first = parse(["verify", "1", "--path", "a"], "_verify")
    second = parse(["verify", "1"], "_verify")
    assert first is not None and second is not None
    assert (first.path, second.path) == (["a"], [])  # type: ignore[attr-defined]


def _imported(command: list[str]) -> set[str]:
    """The modules ``command`` (a Python program and its arguments) imports, by name."""
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}


SLOW_MODULES = {"argparse", "re", "enum", "gettext", "locale", "typing", "dataclasses"}


@pytest.mark.parametrize("args", [["status"], ["status", "--all"], ["limits"]])
def test_plain_runs_load_neither_argparse_nor_re(args: list[str]) -> None:
    """~12 ms of a 25 ms ``memlock status`` run went to these modules."""
    assert not _imported(["-m", "memlock", *args]) & SLOW_MODULES


def test_the_installed_command_imports_nothing_of_its_own() -> None:
    """The ``memlock`` script next to this Python is bin/memlock, not pip's entry-point
    wrapper (which imports :mod:`re` first)."""
    script = Path(sys.executable).parent / "memlock"
    if not script.exists():
        pytest.skip(f"memlock is not installed next to {sys.executable}")
    assert script.read_text().splitlines()[1:] == (
        Path(__file__).parents[1] / "bin" / "memlock").read_text().splitlines()[1:]
    assert os.access(script, os.X_OK)
    assert not _imported([str(script), "status"]) & SLOW_MODULES
