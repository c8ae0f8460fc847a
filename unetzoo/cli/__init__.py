"""The ``unetzoo`` command line: thin parsers that call the library.

Each sub-command lives in ``unetzoo/cli/<name>_cmd.py`` and defines
``add_parser(subparsers)`` which registers its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Command modules import heavy
libraries (torch, timm) inside ``func`` only, so ``unetzoo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _command_modules() -> list[str]:
    import unetzoo.cli as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.endswith("_cmd"))


def build_parser() -> argparse.ArgumentParser:
    from unetzoo import __version__

    parser = argparse.ArgumentParser(
        prog="unetzoo",
        description="The U-Net segmentation model zoo: list, inspect, train, evaluate, predict, convert, share.",
    )
    parser.add_argument("--version", action="version", version=f"unetzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(f"unetzoo.cli.{name}").add_parser(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command`` (for its usage line in errors), or ``parser`` itself."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command, parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse stops filling a nargs="*" positional at the first option, so the KEY=VALUE
        # overrides of train/demo after "-o DIR" come back here; they go on, in their order
        if hasattr(args, "overrides") and not any(a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:  # the command's own usage and error, not the top level's
            command = _subparser(parser, getattr(args, "command", None))
            hint = ("; config settings are KEY=VALUE overrides (`unetzoo train --print-config` lists them)"
                    if hasattr(args, "overrides") else "")
            command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (unetzoo list | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 141  # what a shell reports for a process ended by SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
