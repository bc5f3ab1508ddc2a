"""The ``torchwalk`` command line: ``torchwalk COMMAND [SOURCE] [options]``.

Each command is a sub-parser set up by an ``_add_<command>`` function and
run by a ``_<command>`` function that takes the parsed arguments and returns
the exit status. Bad input is one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from torchwalk import bench, zoo

USAGE_ERROR = 2
"""Exit status for bad input, as argparse uses."""


class UsageError(Exception):
    """Bad input on the command line; its message is the one line shown to the user."""


class _ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchwalk`` command line.

    Args:
        argv (sequence of str, optional): the arguments after the program name.
            Default: ``sys.argv[1:]``.

    Returns:
        int: the exit status: 0 on success, 2 for bad input (after one line on
        stderr). ``--help`` exits through ``SystemExit(0)``, as argparse does.
    """
    try:
        arguments = _parser().parse_args(argv)
        return int(arguments.run(arguments))
    except UsageError as error:
        print(error, file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("torchwalk: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, one sub-parser per command."""
    parser = _ArgumentParser(
        prog="torchwalk",
        description="Fast, exact walks over PyTorch module trees.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_bench(commands)
    return parser


def _add_bench(commands: argparse._SubParsersAction[_ArgumentParser]) -> None:
    """Set up ``torchwalk bench [--models a,b] [--json]``."""
    parser = commands.add_parser(
        "bench",
        help="time every drop-in against PyTorch on the built-in models",
        description=(
            "Time each torchwalk drop-in against the nn.Module method it replaces, "
            "on each built-in model (built on the meta device), in the same run, "
            "and print the medians and their ratio."
        ),
    )
    parser.add_argument(
        "--models",
        type=_model_names,
        default=zoo.names(),
        metavar="NAME[,NAME...]",
        help=f"comma-separated built-in models (default: {','.join(zoo.names())})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=_bench)


def _bench(arguments: argparse.Namespace) -> int:
    """Run ``torchwalk bench``: print the table (or JSON) of the measurements."""
    report = bench.run(
        arguments.models,
        progress=lambda model: print(f"torchwalk bench: {model}", file=sys.stderr, flush=True),
    )
    print(report.to_json() if arguments.json else report)
    return 0


def _model_names(text: str) -> list[str]:
    """Parse ``--models``: comma-separated names of built-in models."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no model named")
    for name in names:
        if name not in zoo.names():
            raise argparse.ArgumentTypeError(
                f"unknown model {name!r} (known: {', '.join(zoo.names())})"
            )
    return names
