"""The ``torchwalk`` command line: ``torchwalk COMMAND [SOURCE] [options]``.

Each command is a sub-parser set up by an ``_add_<command>`` function and
run by a ``_<command>`` function that takes the parsed arguments and returns
the exit status. With no command at all, ``torchwalk`` runs ``torchwalk
summary``. Bad input is one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import torch
from torch import nn

import torchwalk as tw
from torchwalk import bench, sources, zoo
from torchwalk.checkpoint_entries import Checkpoint, CheckpointError
from torchwalk.checkpoints import describe_error
from torchwalk.summary_table import human_bytes

USAGE_ERROR = 2
"""Exit status for bad input, as argparse uses."""

BROKEN_PIPE = 128 + 13
"""Exit status when stdout's reader went away (``torchwalk tree | head``), as for SIGPIPE."""

DEFAULT_COMMAND = "summary"
"""The command that ``torchwalk`` with no arguments runs."""

MAX_SKIPPED_SHOWN = 10
"""How many ignored checkpoint entries the note on stderr names before it counts the rest."""


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
            Default: ``sys.argv[1:]``. Empty: ``summary`` of the default model.

    Returns:
        int: the exit status: 0 on success, 1 when ``diff`` finds a difference,
        2 for bad input (after one line on stderr), 130 when interrupted, 141
        when stdout's reader went away.
        ``--help`` exits through ``SystemExit(0)``, as argparse does.
    """
    arguments_given = list(sys.argv[1:] if argv is None else argv)
    try:
        arguments = _parser().parse_args(arguments_given or [DEFAULT_COMMAND])
        status = int(arguments.run(arguments))
        # Flushed here, not at exit, so that a reader gone away is handled below.
        sys.stdout.flush()
        return status
    except UsageError as error:
        print(error, file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("torchwalk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Python would report the same error again when it flushes stdout at
        # exit; pointing stdout at /dev/null quiets it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE


def _parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, one sub-parser per command."""
    parser = _ArgumentParser(
        prog="torchwalk",
        description=(
            "Fast, exact walks over PyTorch module trees. "
            f"With no command, runs '{DEFAULT_COMMAND}' on {sources.DEFAULT_SOURCE}."
        ),
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    # In the order of docs/api.md's table. Unlike the others, `stats` and `diff` read
    # tensor data, so they load their sources on the CPU, not on meta.
    _add_summary(commands)
    _add_tree(commands)
    _add_stats(commands)
    _add_ties(commands)
    _add_bench(commands)
    _add_diff(commands)
    return parser


# -- summary, tree, ties: one source each -----------------------------------------------------


def _add_summary(commands: argparse._SubParsersAction[_ArgumentParser]) -> None:
    """Set up ``torchwalk summary [SOURCE] [--depth N] [--json]``."""
    parser = commands.add_parser(
        "summary",
        help="parameter and byte counts per module (reads no tensor data)",
        description=(
            "Count parameters, buffers and bytes per module, down to --depth, with "
            "the totals by dtype and device and the tensors that share memory."
        ),
    )
    _add_source_argument(parser)
    _add_depth_option(parser, "rows down to this module depth (root 0; default: all)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=_summary, prog=parser.prog)


def _summary(arguments: argparse.Namespace) -> int:
    """Run ``torchwalk summary``: print the summary table (or its JSON)."""
    summary = _walk(arguments).summary(depth=arguments.depth)
    print(summary.to_json() if arguments.json else summary)
    return 0


def _add_tree(commands: argparse._SubParsersAction[_ArgumentParser]) -> None:
    """Set up ``torchwalk tree [SOURCE] [--depth N] [--name NAME] [--ascii] [--json]``."""
    parser = commands.add_parser(
        "tree",
        help="draw the module tree with parameter shapes",
        description=(
            "Draw the module tree: modules, parameter and buffer shapes, shared "
            "modules and tied tensors, identical sibling runs collapsed."
        ),
    )
    _add_source_argument(parser)
    _add_depth_option(parser, "draw down to this module depth (root 0; default: all)")
    parser.add_argument("--name", help="the root's name on the first line (default: none)")
    parser.add_argument(
        "--ascii", action="store_true", help="plain ASCII instead of box-drawing characters"
    )
    parser.add_argument("--json", action="store_true", help='print {"text": DRAWING} as JSON')
    parser.set_defaults(run=_tree, prog=parser.prog)


def _tree(arguments: argparse.Namespace) -> int:
    """Run ``torchwalk tree``: print the drawing (or ``{"text": ...}``)."""
    drawing = _walk(arguments).render(
        name=arguments.name, depth=arguments.depth, ascii=arguments.ascii
    )
    print(json.dumps({"text": drawing}) if arguments.json else drawing)
    return 0


def _add_stats(commands: argparse._SubParsersAction[_ArgumentParser]) -> None:
    """Set up ``torchwalk stats [SOURCE] [--device D] [--buffers] [--json]``."""
    parser = commands.add_parser(
        "stats",
        help="value statistics of every parameter, in one pass over the data",
        description=(
            "Mean, std, min, max, absmax, L2 norm and the zero, NaN and Inf counts of "
            "every parameter (and buffer), read in one pass; anomalies are flagged."
        ),
    )
    _add_source_argument(parser)
    parser.add_argument(
        "--device",
        type=_device,
        default="cpu",
        help="where built models are materialised (default: cpu; checkpoints stay on the CPU)",
    )
    parser.add_argument("--buffers", action="store_true", help="add a row per buffer")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.set_defaults(run=_stats, prog=parser.prog)


PROGRESS_MIN_BYTES = 2 * 1024**3
"""Sources at least this large show a progress bar (when stderr is a terminal)."""


def _device(text: str) -> str:
    """Parse ``--device``: a name ``torch.device`` accepts."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device: {text!r}") from None
    return text


def _stats(arguments: argparse.Namespace) -> int:
    """Run ``torchwalk stats``: print the table (or JSON) of the statistics.

    A progress bar goes to stderr when there is much to read and stderr is a
    terminal (and tqdm is installed).
    """
    tree = _walk(arguments, device=arguments.device)
    totals = tree.summary(depth=0).totals
    nbytes = totals.bytes + (totals.buffer_bytes if arguments.buffers else 0)
    bar = None
    if nbytes >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(total=nbytes, unit="B", unit_scale=True, desc="stats", file=sys.stderr)
    try:
        result = tree.stats(buffers=arguments.buffers, progress=bar and bar.update)
    finally:
        if bar is not None:
            bar.close()
    print(result.to_json() if arguments.json else result)
    return 0


def _add_ties(commands: argparse._SubParsersAction[_ArgumentParser]) -> None:
    """Set up ``torchwalk ties [SOURCE] [--json]``."""
    parser = commands.add_parser(
        "ties",
        help="list the tensors that share memory",
        description=(
            "List every group of parameter and buffer names whose tensors share a "
            "storage (shared, alias, overlap or packed), the bytes the group occupies "
            "once, and what counting each name separately would add."
        ),
    )
    _add_source_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the groups as a JSON list")
    parser.set_defaults(run=_ties, prog=parser.prog)


def _ties(arguments: argparse.Namespace) -> int:
    """Run ``torchwalk ties``: one line per tie group (or a JSON list of them)."""
    groups = _walk(arguments).ties()
    if arguments.json:
        print(json.dumps([dataclasses.asdict(group) for group in groups], indent=2))
    elif not groups:
        print("no tensors share memory")
    else:
        for group in groups:
            print(
                f"{group.kind:<7}  {human_bytes(group.nbytes):>8}  "
                f"overcount {human_bytes(group.overcount_nbytes):>8}  {', '.join(group.names)}"
            )
    return 0


# -- what the source-taking commands share ----------------------------------------------------


SOURCE_HELP = (
    f"a built-in model ({', '.join(zoo.names())}), package.module:callable "
    "returning an nn.Module, or a checkpoint: a file (.safetensors, or .pt, .pth, "
    ".bin), an index (*.safetensors.index.json, *.bin.index.json), a folder of "
    "shards, a torch.distributed.checkpoint folder, or a transformers config.json "
    "or its folder"
)
"""What the help says a SOURCE may be."""


def _add_source_argument(parser: argparse.ArgumentParser) -> None:
    """Add the optional positional ``SOURCE`` and the options of checkpoint paths."""
    parser.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help=f"{SOURCE_HELP}; default: {sources.DEFAULT_SOURCE}",
    )
    _add_checkpoint_options(parser)


def _add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-pickle`` and ``--trust-remote-code``, for the sources that need them."""
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read a distributed checkpoint's .metadata, which is a pickle (trusted files only)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run the model code a config names",
    )


def _add_depth_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add ``--depth N``, a module depth (``None`` when not given)."""
    parser.add_argument("--depth", type=_depth, metavar="N", help=help_text)


def _depth(text: str) -> int:
    """Parse ``--depth``: a non-negative integer."""
    try:
        depth = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if depth < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {depth}")
    return depth


def _walk(arguments: argparse.Namespace, device: str = "meta") -> tw.ParamTree:
    """Load ``arguments.source`` (built models on ``device``) and walk it once: the ``ParamTree``.

    A source that cannot be loaded, or whose walk rejects it, raises
    :class:`UsageError`.
    """
    source = _load(arguments, arguments.source, device)
    try:
        return tw.walk(source)
    # What a user's source can make the walk raise: a module graph with a
    # cycle. Anything else is a bug in torchwalk, and keeps its traceback.
    except RecursionError as error:
        name = sources.DEFAULT_SOURCE if arguments.source is None else arguments.source
        raise UsageError(
            f"{arguments.prog}: error: cannot walk {name!r}: {describe_error(error)}"
        ) from error


def _load(arguments: argparse.Namespace, text: str | None, device: str) -> nn.Module | Checkpoint:
    """Load the source ``text`` names (built models on ``device``).

    Notes on stderr which checkpoint entries were left out. A source that
    cannot be loaded raises :class:`UsageError`.
    """
    _make_cwd_importable()
    try:
        source = sources.load_source(
            text,
            device=device,
            allow_pickle=arguments.allow_pickle,
            trust_remote_code=arguments.trust_remote_code,
        )
    except (sources.SourceError, CheckpointError) as error:
        raise UsageError(f"{arguments.prog}: error: {error}") from error
    if isinstance(source, Checkpoint) and source.skipped:
        print(_skipped_note(source.skipped), file=sys.stderr)
    return source


def _skipped_note(skipped: Sequence[str]) -> str:
    """The stderr line about a checkpoint's non-tensor entries, naming the first few."""
    shown = ", ".join(skipped[:MAX_SKIPPED_SHOWN])
    not_shown = len(skipped) - MAX_SKIPPED_SHOWN
    more = f" and {not_shown} more" if not_shown > 0 else ""
    entries = "entry" if len(skipped) == 1 else "entries"
    return f"torchwalk: ignored {len(skipped)} non-tensor {entries}: {shown}{more}"


def _make_cwd_importable() -> None:
    """Let ``package.module:callable`` import from the current directory, as ``python -m`` does.

    The installed ``torchwalk`` script's ``sys.path`` starts with its own
    directory instead. Appended, not prepended, so that a stray ``torch.py``
    in the current directory cannot shadow an installed package.
    """
    current = os.getcwd()
    if "" not in sys.path and current not in sys.path:
        sys.path.append(current)


# -- diff: two sources ------------------------------------------------------------------------


DIFFERENT = 1
"""Exit status when the sources differ, as ``cmp`` uses (0: equal, 2: bad input)."""


def _add_diff(commands: argparse._SubParsersAction[_ArgumentParser]) -> None:
    """Set up ``torchwalk diff A B [--atol X] [--rtol X] [--depth N] [--json] [--allow-pickle]``."""
    parser = commands.add_parser(
        "diff",
        help="compare two models or checkpoints, tensor by tensor",
        description=(
            "Compare every parameter and buffer of A with the one of the same name in B, "
            "both read once, together: max and mean |a - b|, relative L2 distance, cosine "
            "similarity and the count of elements outside the tolerances. Exit status 0 "
            "when equal within the tolerances, 1 when they differ, 2 on bad input."
        ),
    )
    parser.add_argument("a", metavar="A", help=f"the first source: {SOURCE_HELP}")
    parser.add_argument("b", metavar="B", help="the second source, of any kind A may be")
    parser.add_argument(
        "--atol", type=_tolerance, default=0.0, metavar="X", help="absolute tolerance (default: 0)"
    )
    parser.add_argument(
        "--rtol", type=_tolerance, default=0.0, metavar="X", help="relative tolerance (default: 0)"
    )
    _add_depth_option(parser, "one row per module at this depth (root 0) instead of per tensor")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _add_checkpoint_options(parser)
    parser.set_defaults(run=_diff, prog=parser.prog)


def _tolerance(text: str) -> float:
    """Parse ``--atol`` and ``--rtol``: a number, 0 or more."""
    try:
        tolerance = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not tolerance >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return tolerance


def _diff(arguments: argparse.Namespace) -> int:
    """Run ``torchwalk diff``: print the table (or JSON); 0 when equal, 1 when they differ.

    Built models are materialised on the CPU, as ``stats`` does by default.
    """
    a = _load(arguments, arguments.a, "cpu")
    b = _load(arguments, arguments.b, "cpu")
    try:
        compared = tw.diff(a, b, atol=arguments.atol, rtol=arguments.rtol)
    except CheckpointError as error:  # a file that fails as it is read (truncated, damaged)
        raise UsageError(f"{arguments.prog}: error: {error}") from error
    except RecursionError as error:  # a module graph with a cycle
        raise UsageError(
            f"{arguments.prog}: error: cannot walk a source: {describe_error(error)}"
        ) from error
    print(compared.to_json(arguments.depth) if arguments.json else compared.table(arguments.depth))
    return 0 if compared.equal else DIFFERENT


# -- bench ------------------------------------------------------------------------------------


def _add_bench(commands: argparse._SubParsersAction[_ArgumentParser]) -> None:
    """Set up ``torchwalk bench [SOURCE ...] [--models a,b] [--json]``."""
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
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="built-in models or package.module:callable sources (default: --models)",
    )
    parser.add_argument(
        "--models",
        type=_model_names,
        default=zoo.names(),
        metavar="NAME[,NAME...]",
        help=f"comma-separated built-in models (default: {','.join(zoo.names())})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=_bench, prog=parser.prog)


def _bench(arguments: argparse.Namespace) -> int:
    """Run ``torchwalk bench``: print the table (or JSON) of the measurements."""
    try:
        report = _run_bench(arguments)
    except (ValueError, sources.SourceError) as error:
        raise UsageError(f"{arguments.prog}: error: {error}") from error
    print(report.to_json() if arguments.json else report)
    return 0


def _run_bench(arguments: argparse.Namespace) -> bench.BenchReport:
    _make_cwd_importable()
    return bench.run(
        arguments.sources or arguments.models,
        progress=lambda model: print(f"torchwalk bench: {model}", file=sys.stderr, flush=True),
    )


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
