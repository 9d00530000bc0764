"""The command line read without argparse, for the plain cases: start-up is the cost.

``import argparse`` costs ~7 ms here (it loads :mod:`re`, :mod:`enum`, :mod:`gettext`,
:mod:`locale`), a fifth of a ``memlock status`` run over 1,000 processes. The subcommand
modules still declare their arguments once, with argparse's own calls: ``register(sub)``
runs against a :class:`_Recorder`, which notes each ``add_argument`` instead of building a
parser, and :func:`parse` reads the command line from those notes.

It takes only what it is sure argparse would read the same way: known option strings
(``--name VALUE``, ``--name=VALUE``), one run of positional arguments, actions
``store``, ``store_true``, ``store_false``, ``store_const`` and ``append``. Anything else
(``--help``, an abbreviation, ``--``, a value that starts with ``-``, a converter that
refuses, a mistake, an action it does not know) returns None, and argparse decides: its
result, its messages. tests/test_cli_quickparse.py checks that the two agree on every
command line they both take.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["Namespace", "parse"]

#: The actions understood here, and how many values each takes.
_VALUES = {"store": 1, "append": 1, "store_true": 0, "store_false": 0, "store_const": 0}


class Namespace:
    """What argparse's Namespace is to the handlers: the values as attributes."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Namespace({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class _Declined(Exception):
    """The command line, or a command's arguments, need argparse."""


class _Action:
    """One ``add_argument`` call, as argparse would read it."""

    def __init__(self, flags: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        action = kwargs.get("action") or "store"
        known = {"action", "dest", "type", "default", "const", "nargs", "choices", "required",
                 "metavar", "help"}
        if not isinstance(action, str) or action not in _VALUES or set(kwargs) - known:
            raise _Declined  # BooleanOptionalAction, count, version...
        self.action = action
        self.options = tuple(f for f in flags if f.startswith("-"))
        if self.options and len(self.options) != len(flags):
            raise _Declined
        self.nargs = kwargs.get("nargs")
        if self.options and self.nargs is not None:
            raise _Declined  # an optional with nargs ("?", "*"...)
        if not self.options and (len(flags) != 1 or self.nargs not in (None, "?", "*", "+")):
            raise _Declined
        self.dest: str = kwargs.get("dest") or _dest(flags)
        self.type: Callable[[str], Any] | None = kwargs.get("type")
        self.choices = kwargs.get("choices")
        self.required = bool(kwargs.get("required", not self.options and self.nargs in (
            None, "+")))
        self.const = kwargs.get("const")
        self.default = kwargs.get("default", action == "store_false" if action in (
            "store_true", "store_false") else None)
        if self.default == "==SUPPRESS==":
            raise _Declined

    def convert(self, text: str) -> Any:
        """``text`` through ``type=`` and ``choices=``, as argparse does."""
        value = text if self.type is None else self.type(text)
        if self.choices is not None and value not in self.choices:
            raise _Declined
        return value


def _dest(flags: tuple[str, ...]) -> str:
    """The ``dest`` argparse gives these option strings (or a positional's name)."""
    if not flags[0].startswith("-"):
        return flags[0]
    chosen = next((f for f in flags if f.startswith("--")), flags[0])
    return chosen.lstrip("-").replace("-", "_")


class _Recorder:
    """Stands for argparse's subparsers, parsers and groups while ``register`` runs."""

    def __init__(self, parsers: dict[str, _Recorder] | None = None) -> None:
        self.parsers = {} if parsers is None else parsers
        self.actions: list[_Action] = []
        self.defaults: dict[str, Any] = {}
        self.exclusive: list[list[_Action]] = []

    def add_parser(self, name: str, **_: Any) -> _Recorder:
        self.parsers[name] = parser = _Recorder()
        return parser

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        self.actions.append(_Action(flags, kwargs))

    def set_defaults(self, **kwargs: Any) -> None:
        self.defaults.update(kwargs)

    def add_mutually_exclusive_group(self, required: bool = False) -> _Group:
        if required:
            raise _Declined
        group = _Group(self)
        self.exclusive.append(group.members)
        return group

    def add_argument_group(self, *_: Any, **__: Any) -> _Recorder:
        return self  # only --help's layout differs


class _Group:
    """A mutually exclusive group: its actions are the parser's, noted as exclusive."""

    def __init__(self, parser: _Recorder) -> None:
        self.parser = parser
        self.members: list[_Action] = []

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        self.parser.add_argument(*flags, **kwargs)
        self.members.append(self.parser.actions[-1])


def parse(argv: Sequence[str], module: str) -> argparse.Namespace | None:
    """``argv`` (a subcommand and its arguments) read without argparse; None: ask it.

    Args:
        argv: The command line after ``memlock``; ``argv[0]`` names a subcommand.
        module: The module of this package that registers it (``COMMANDS[argv[0]]``).
    """
    try:
        recorder = _Recorder()
        __import__(f"{__package__}.{module}", fromlist=["register"]).register(recorder)
        parser = recorder.parsers.get(argv[0])
        if parser is None:
            return None
        values = _read(parser, argv[1:])
    except Exception:  # _Declined, or a converter's refusal: argparse runs it again, says why
        return None
    return Namespace(command=argv[0], **values)  # type: ignore[return-value]


def _read(parser: _Recorder, args: Sequence[str]) -> dict[str, Any]:
    """The namespace's values, or _Declined where argparse must decide."""
    by_option = {o: a for a in parser.actions for o in a.options}
    positionals = [a for a in parser.actions if not a.options]
    if len(positionals) > 1:
        raise _Declined
    seen: list[tuple[_Action, str | None]] = []  # each occurrence, with its text
    texts: list[str] = []  # the positional arguments
    run_ended = False  # after one run of positional arguments, another is argparse's
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-"):
            if run_ended and texts:
                raise _Declined
            texts.append(token)
            continue
        run_ended = bool(texts)
        name, equals, text = token.partition("=")
        action = by_option.get(name if name.startswith("--") and equals else token)
        if action is None:
            raise _Declined  # --help, --, an abbreviation, a negative number, a mistake
        if _VALUES[action.action] == 0:
            if equals and name.startswith("--"):
                raise _Declined
            seen.append((action, None))
            continue
        if not (equals and name.startswith("--")):
            if i == len(args) or args[i].startswith("-"):
                raise _Declined
            text = args[i]
            i += 1
        if text == "--":
            raise _Declined  # argparse drops a "--" value, differently by version
        seen.append((action, text))
    for group in parser.exclusive:
        if len({id(a) for a, _ in seen if a in group}) > 1:
            raise _Declined
    values: dict[str, Any] = {}
    for action in parser.actions:
        default = parser.defaults.get(action.dest, action.default)
        if isinstance(default, str) and action.type is not None:
            default = action.type(default)  # argparse converts a text default
        values[action.dest] = default
    given = {id(a) for a, _ in seen}
    if any(a.required and id(a) not in given for a in parser.actions if a.options):
        raise _Declined
    for action, value in seen:
        if action.action == "store":
            values[action.dest] = action.convert(value or "")
        elif action.action == "append":
            items = values[action.dest]
            values[action.dest] = [*(items or ()), action.convert(value or "")]
        elif action.action == "store_const":
            values[action.dest] = action.const
        else:
            values[action.dest] = action.action == "store_true"
    if positionals:
        _positional(positionals[0], texts, values, parser.defaults)
    elif texts:
        raise _Declined
    for key, value in parser.defaults.items():
        values.setdefault(key, value)
    return values


def _positional(action: _Action, texts: list[str], values: dict[str, Any],
                defaults: dict[str, Any]) -> None:
    """The positional argument's value from ``texts``, as argparse reads its nargs."""
    if action.nargs is None:
        if len(texts) != 1:
            raise _Declined
        values[action.dest] = action.convert(texts[0])
    elif action.nargs == "?":
        if len(texts) > 1:
            raise _Declined
        if texts:
            values[action.dest] = action.convert(texts[0])
    elif not texts:
        if action.nargs == "+":
            raise _Declined
        default = defaults.get(action.dest, action.default)
        if default is not None:
            raise _Declined  # argparse checks it against choices...: rare, its call
        values[action.dest] = []
    else:
        values[action.dest] = [action.convert(t) for t in texts]
