"""The ``memlock`` command line, built only on the public API.

Each subcommand group lives in its own module with a ``register(subparsers)`` function;
the module's handlers return the process exit status: 0 done, 1 failed (a one-line
message on stderr says why), 2 a usage error. Never a Python traceback.

A run loads only its subcommand's module (:data:`COMMANDS`), and reads the plain command
lines without argparse (:mod:`._quickparse`): start-up is most of a ``memlock status``
run. ``--help``, mistakes and the rest go to argparse (:mod:`._parser`), which builds only
the subcommand's parser; ``memlock --help`` gets every one.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ~12 ms at import
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

#: Each subcommand and the module (of this package) that registers and runs it, in the
#: order ``--help`` lists them.
COMMANDS = {
    "doctor": "_inspect", "limits": "_inspect", "status": "_status", "top": "_top",
    "resident": "_files", "touch": "_files", "evict": "_files", "lock": "_files",
    "run": "_run", "verify": "_verify", "exporter": "_exporter", "latency": "_latency",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: of every subcommand, or of ``command``'s module only."""
    from ._parser import build_parser

    return build_parser(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    # Paths that are not UTF-8 arrive as surrogate escapes: print their bytes as they were
    # (as ls does), not a UnicodeEncodeError.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    from ._quickparse import parse as quick_parse

    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = quick_parse(argv, COMMANDS[argv[0]]) if argv and argv[0] in COMMANDS else None
        if args is None:
            args = build_parser(argv[0] if argv else None).parse_args(argv)
        status: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the last resort: every known failure has its own message
        text = " ".join(str(exc).split()) or "no details"
        sys.stderr.write(f"memlock: internal error: {type(exc).__name__}: {text}\n")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
