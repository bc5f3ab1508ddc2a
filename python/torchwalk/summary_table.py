"""The structural summary of a walked module tree, read from its flat records.

:func:`summarize` turns the records of one walk (``_C.TreeRecords``, or
anything with the same methods, see :class:`Records`) into a :class:`Summary`:
one row per module down to a depth, identical sibling runs collapsed into one
row, tied tensors marked where they appear, and the whole tree's totals. It
reads no tensor data and does work in proportion to the rows it makes: the
figures of a row come from the records' per-position subtree totals, and the
inside of a collapsed run is visited once.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from torchwalk.tie_groups import TieGroup

ModuleTotals = tuple[int, int, int, int, int, int, int]
"""(params, trainable, frozen, bytes, buffers, buffer_bytes, uninitialized) of a subtree."""


class Records(Protocol):
    """The records of one walk, as ``_C.TreeRecords`` declares them in ``_C.pyi``."""

    def module_count(self) -> int: ...
    def module_path(self, position: int, /) -> str: ...
    def module_name(self, position: int, /) -> str: ...
    def module_type(self, position: int, /) -> str: ...
    def module_object(self, position: int, /) -> nn.Module | None: ...
    def module_parent(self, position: int, /) -> int: ...
    def module_depth(self, position: int, /) -> int: ...
    def module_children(self, position: int, /) -> list[int]: ...
    def module_leaves(self, position: int, /) -> list[int]: ...
    def module_first(self, position: int, /) -> int: ...
    def module_shape_hash(self, position: int, /) -> int: ...
    def module_totals(self, position: int, /) -> ModuleTotals: ...
    def leaf_count(self) -> int: ...
    def leaf_path(self, leaf: int, /) -> str: ...
    def leaf_name(self, leaf: int, /) -> str: ...
    def leaf_module(self, leaf: int, /) -> int: ...
    def leaf_is_buffer(self, leaf: int, /) -> bool: ...
    def leaf_tensor(self, leaf: int, /) -> torch.Tensor: ...
    def leaf_first(self, leaf: int, /) -> int: ...
    def leaf_is_lazy(self, leaf: int, /) -> bool: ...
    def leaf_tied_to(self, leaf: int, /) -> int: ...
    def named_parameters(self) -> list[tuple[str, nn.Parameter]]: ...
    def named_buffers(self) -> list[tuple[str, torch.Tensor]]: ...
    def named_modules(self) -> list[tuple[str, nn.Module]]: ...
    def tie_groups(self) -> list[tuple[list[str], str, int, int]]: ...
    def totals(self) -> dict[str, Any]: ...


# -- human units ------------------------------------------------------------------------------

_COUNT_UNITS = ("", " K", " M", " B", " T", " Q")
_BYTE_UNITS = (" B", " kB", " MB", " GB", " TB", " PB", " EB")


def _three_digits(value: float, units: tuple[str, ...]) -> str:
    """``value`` in the largest decimal unit that keeps it at or above 1, 3 significant digits."""
    # Round to 3 significant digits first: 99.95 becomes 100 (no decimals), and
    # 999,999 becomes 1000 K, which moves on to the next unit, "1.00 M".
    scale = 0
    rounded = float(f"{value:.3g}")
    while abs(rounded) >= 1000 and scale < len(units) - 1:
        scale += 1
        rounded = float(f"{value / 1000**scale:.3g}")
    decimals = 0 if abs(rounded) >= 100 else 1 if abs(rounded) >= 10 else 2
    return f"{rounded:.{decimals}f}{units[scale]}"


def human_count(count: int) -> str:
    """A count in decimal units, three significant digits: ``512``, ``124 M``, ``6.74 B``.

    Counts under 1000 print exactly.
    """
    if abs(count) < 1000:
        return str(count)
    return _three_digits(count, _COUNT_UNITS)


def human_bytes(nbytes: int) -> str:
    """A byte count in decimal units, three significant digits: ``512 B``, ``13.5 GB``."""
    if abs(nbytes) < 1000:
        return f"{nbytes} B"
    return _three_digits(nbytes, _BYTE_UNITS)


# -- rows and totals --------------------------------------------------------------------------


@dataclass
class SummaryRow:
    """One module of the summary, or one collapsed run of identical siblings.

    Attributes:
        path (str): the dotted path, ``""`` for the root; a run's last
            component is its index range (``layers.0-31``), and rows below a
            run carry the run's path (``layers.0-31.mlp``).
        type (str): the module's class name.
        depth (int): the number of path components (root 0).
        params (int): parameter elements of the module and everything below
            it, each object once; per instance in a run.
        trainable, frozen (int or None): those with and without
            ``requires_grad``; None for a mapping or a checkpoint, whose
            tensors carry no such flag.
        bytes (int): ``numel × itemsize`` of those parameters.
        buffers, buffer_bytes (int): the same for buffers.
        uninitialized (int): lazy parameters below (counted in no other figure).
        repeat (int): 1, or the number of identical siblings the row stands for.
        tied (list[str]): names below the row that share memory with a name
            outside it (a tied head, a module held at several places).
    """

    path: str
    type: str
    depth: int
    params: int
    trainable: int | None
    frozen: int | None
    bytes: int
    buffers: int
    buffer_bytes: int
    uninitialized: int
    repeat: int = 1
    tied: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SummaryTotals:
    """Figures over the whole tree; the tie groups are in :attr:`Summary.ties`.

    ``trainable`` and ``frozen`` are None for a mapping or a checkpoint;
    ``bytes_by_file`` is filled for a checkpoint read from headers.
    """

    params: int
    params_unique: int
    bytes_unique: int
    trainable: int | None
    frozen: int | None
    uninitialized: int
    bytes: int
    buffers: int
    buffer_bytes: int
    bytes_by_dtype: dict[str, int]
    bytes_by_device: dict[str, int]
    local_params: int
    local_bytes: int
    bytes_by_file: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    """The structural summary of a module tree: :attr:`rows`, :attr:`totals`, :attr:`ties`.

    ``str(summary)`` is an aligned text table; :meth:`to_dict`, :meth:`to_json`
    and :meth:`_repr_html_` give the same content for programs and notebooks.
    """

    rows: list[SummaryRow]
    totals: SummaryTotals
    ties: list[TieGroup]

    def to_dict(self) -> dict[str, Any]:
        """``{"rows": [...], "totals": {...}, "ties": [...]}``, plain Python values."""
        return {
            "rows": [asdict(row) for row in self.rows],
            "totals": asdict(self.totals),
            "ties": [asdict(group) for group in self.ties],
        }

    def to_json(self, indent: int | None = None) -> str:
        """The JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        header, body = _table_cells(self.rows)
        figure_columns = _figure_columns(header)
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        # Names, types and tied names align left, figures right.
        lines = [
            "  ".join(
                cell.rjust(width) if column in figure_columns else cell.ljust(width)
                for column, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in [header, *body]
        ]
        rule = "-" * len(max(lines, key=len))
        return "\n".join([lines[0], rule, *lines[1:], rule, *_totals_lines(self)])

    def _repr_html_(self) -> str:
        header, body = _table_cells(self.rows)
        figure_columns = _figure_columns(header)
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        rows = "".join(
            "<tr>"
            + "".join(
                f'<td style="text-align:{"right" if column in figure_columns else "left"}">'
                f"{html.escape(cell).replace(' ', '&nbsp;') if column == 0 else html.escape(cell)}"
                "</td>"
                for column, cell in enumerate(line)
            )
            + "</tr>"
            for line in body
        )
        totals = "<br>".join(html.escape(line) for line in _totals_lines(self))
        return f"<table><tr>{head}</tr>{rows}</table><p>{totals}</p>"


_MOST_TIED_SHOWN = 3
_FIGURE_HEADERS = ("Params", "Trainable", "Bytes", "Buffers", "Buffer bytes")


def _figure_columns(header: list[str]) -> set[int]:
    """The columns of figures, aligned right."""
    return {column for column, title in enumerate(header) if title in _FIGURE_HEADERS}


def _table_cells(rows: list[SummaryRow]) -> tuple[list[str], list[list[str]]]:
    """The header and the text cells of each row."""
    show_tied = any(row.tied for row in rows)
    show_trainable = all(row.trainable is not None for row in rows)
    header = ["Module", "Type", "Params", "Trainable", "Bytes", "Buffers", "Buffer bytes"]
    if not show_trainable:
        header.remove("Trainable")
    if show_tied:
        header.append("Tied")
    body = []
    for row in rows:
        module = "  " * row.depth + (row.path or "(root)")
        cells = [
            module,
            f"{row.repeat} × {row.type}" if row.repeat > 1 else row.type,
            human_count(row.params),
            *([human_count(row.trainable)] if row.trainable is not None else []),
            human_bytes(row.bytes),
            human_count(row.buffers),
            human_bytes(row.buffer_bytes),
        ]
        if show_tied:
            cells.append(_tied_cell(row))
        body.append(cells)
    return header, body


def _tied_cell(row: SummaryRow) -> str:
    """The row's tied names, relative to the row where they lie under its path."""
    prefix = f"{row.path}." if row.path else ""
    names = [name.removeprefix(prefix) for name in row.tied[:_MOST_TIED_SHOWN]]
    more = len(row.tied) - _MOST_TIED_SHOWN
    return ", ".join(names) + (f" (+{more} more)" if more > 0 else "")


def _totals_lines(summary: Summary) -> list[str]:
    totals = summary.totals
    params = f"Params: {human_count(totals.params)} ({totals.params:,})"
    if totals.trainable is not None and totals.frozen is not None:
        params += (
            f", trainable {human_count(totals.trainable)}, frozen {human_count(totals.frozen)}"
        )
    lines = [
        params,
        f"Memory: {human_bytes(totals.bytes)} params, {human_bytes(totals.buffer_bytes)} buffers "
        f"({human_count(totals.buffers)} buffer elements)",
        f"Unique storage: {human_count(totals.params_unique)} params, "
        f"{human_bytes(totals.bytes_unique)}",
    ]
    if totals.uninitialized:
        lines.append(f"Uninitialized (lazy) parameters: {totals.uninitialized}")
    if totals.local_params != totals.params:  # sharded: say what this rank holds
        lines.append(
            f"On this rank: {human_count(totals.local_params)} params, "
            f"{human_bytes(totals.local_bytes)}"
        )
    for title, by_key in (
        ("By dtype", totals.bytes_by_dtype),
        ("By device", totals.bytes_by_device),
        ("By file", totals.bytes_by_file),
    ):
        if by_key:
            parts = ", ".join(f"{key} {human_bytes(nbytes)}" for key, nbytes in by_key.items())
            lines.append(f"{title}: {parts}")
    for group in summary.ties:
        lines.append(
            f"Tied ({group.kind}): {' = '.join(group.names)}: {human_bytes(group.nbytes)}; "
            f"counting each name would add {human_bytes(group.overcount_nbytes)}"
        )
    return lines


# -- building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """Siblings that one row stands for: positions whose names are ``first``…``last``."""

    positions: list[int]
    label: str  # the path component of the row: a name, or "first-last"


def sibling_runs(records: Records, children: list[int], keep_repeats: bool = False) -> list[_Run]:
    """``children`` of one module grouped into runs of structurally identical siblings.

    A run is a stretch of siblings with consecutive integer names (``3``,
    ``4``, ``5``) and equal structure hashes; a sibling in no longer run is a
    run of one. A position where a module is held a second time is never in a
    longer run: it is left out, or with ``keep_repeats`` a run of its own.
    """
    runs: list[_Run] = []
    previous_index: int | None = None
    previous_hash = 0
    for child in children:
        if records.module_first(child) != child:
            previous_index = None
            if keep_repeats:
                runs.append(_Run([child], records.module_name(child)))
            continue
        name = records.module_name(child)
        index = _index(name)
        shape_hash = records.module_shape_hash(child) if index is not None else 0
        if (
            runs
            and index is not None
            and previous_index is not None
            and index == previous_index + 1
            and shape_hash == previous_hash
        ):
            runs[-1].positions.append(child)
        else:
            runs.append(_Run([child], name))
        previous_index, previous_hash = index, shape_hash
    return [
        _Run(
            run.positions,
            run.label
            if len(run.positions) == 1
            else f"{run.label}-{records.module_name(run.positions[-1])}",
        )
        for run in runs
    ]


def _index(name: str) -> int | None:
    """The integer a name spells in canonical form (``"7"``, not ``"07"``), else None."""
    return int(name) if name.isdecimal() and str(int(name)) == name else None


def _join(path: str, component: str) -> str:
    return f"{path}.{component}" if path else component


class _RowBuilder:
    """Rows in walk order, and the map from concrete module paths to row paths."""

    def __init__(self, records: Records, depth: int | None, modules: bool) -> None:
        self.records = records
        self.depth = depth
        self.modules = modules
        self.rows: list[SummaryRow] = []
        self.row_of_path: dict[str, SummaryRow] = {}
        # For the parent row path of each collapsed run: (first index, last index, label).
        self.runs_below: dict[str, list[tuple[int, int, str]]] = {}

    def build(self) -> None:
        # Explicit stack, so that a 100,000-deep chain needs no recursion.
        stack: list[tuple[int, str, int]] = [(0, "", 1)]
        while stack:
            position, path, repeat = stack.pop()
            row = self._row(position, path, repeat)
            self.rows.append(row)
            self.row_of_path[path] = row
            if self.depth is not None and row.depth >= self.depth:
                continue
            runs = sibling_runs(self.records, self.records.module_children(position))
            for run in reversed(runs):
                if len(run.positions) > 1:
                    first = int(self.records.module_name(run.positions[0]))
                    self.runs_below.setdefault(path, []).append(
                        (first, first + len(run.positions) - 1, run.label)
                    )
                stack.append((run.positions[0], _join(path, run.label), len(run.positions)))

    def _row(self, position: int, path: str, repeat: int) -> SummaryRow:
        params, trainable, frozen, nbytes, buffers, buffer_bytes, lazy = self.records.module_totals(
            position
        )
        return SummaryRow(
            path=path,
            type=self.records.module_type(position),
            depth=self.records.module_depth(position),
            params=params,
            trainable=trainable if self.modules else None,
            frozen=frozen if self.modules else None,
            bytes=nbytes,
            buffers=buffers,
            buffer_bytes=buffer_bytes,
            uninitialized=lazy,
            repeat=repeat,
        )

    def rows_above(self, module_components: list[str], below: int) -> Iterator[SummaryRow]:
        """The rows of the modules on a concrete path, from ``below`` components deep down."""
        row_path = ""
        for count, component in enumerate(module_components, start=1):
            label, index = component, _index(component)
            if index is not None:
                for first, last, run_label in self.runs_below.get(row_path, ()):
                    if first <= index <= last:
                        label = run_label
            row_path = _join(row_path, label)
            if count > below and row_path in self.row_of_path:
                yield self.row_of_path[row_path]

    def mark_ties(self, ties: list[TieGroup]) -> None:
        """Mark each tied name in the rows below which its partner is not.

        The rows to mark for a pair of names are those of the name's module
        and its ancestors strictly below the modules the two paths share.
        """
        for group in ties:
            if group.kind == "packed":
                continue
            first = group.names[0]
            for other in group.names[1:]:
                for name, partner in ((other, first), (first, other)):
                    module = name.split(".")[:-1]
                    partner_module = partner.split(".")[:-1]
                    shared = 0
                    for mine, theirs in zip(module, partner_module, strict=False):
                        if mine != theirs:
                            break
                        shared += 1
                    for row in self.rows_above(module, shared):
                        if name not in row.tied:
                            row.tied.append(name)


def summarize(
    records: Records,
    depth: int | None = None,
    *,
    modules: bool = True,
    bytes_by_file: dict[str, int] | None = None,
) -> Summary:
    """Summarize the records of one walk.

    Args:
        records (Records): the records of a walk, e.g. ``_C.walk_module(model, True)``.
        depth (int, optional): the deepest module depth with a row (the root
            is 0, ``1`` adds its children). Default: ``None``, every module.
        modules (bool): the records are of a module, whose tensors say
            whether they are trainable; else (a mapping, a checkpoint)
            ``trainable`` and ``frozen`` are None. Default: ``True``.
        bytes_by_file (dict, optional): a checkpoint's bytes per file, for the totals.

    Returns:
        Summary: the rows in walk order, the totals and the tie groups.

    Raises:
        ValueError: if ``depth`` is negative.
    """
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be None or at least 0, got {depth}")
    ties = [
        TieGroup(list(names), kind, nbytes, over)
        for names, kind, nbytes, over in records.tie_groups()
    ]
    builder = _RowBuilder(records, depth, modules)
    builder.build()
    builder.mark_ties(ties)
    figures = records.totals()
    totals = SummaryTotals(
        params=int(figures["params"]),
        params_unique=int(figures["params_unique"]),
        bytes_unique=int(figures["bytes_unique"]),
        trainable=int(figures["trainable"]) if modules else None,
        frozen=int(figures["frozen"]) if modules else None,
        uninitialized=int(figures["uninitialized"]),
        bytes=int(figures["bytes"]),
        buffers=int(figures["buffers"]),
        buffer_bytes=int(figures["buffer_bytes"]),
        bytes_by_dtype=dict(figures["bytes_by_dtype"]),
        bytes_by_device=dict(figures["bytes_by_device"]),
        local_params=int(figures["local_params"]),
        local_bytes=int(figures["local_bytes"]),
        bytes_by_file=dict(bytes_by_file or {}),
    )
    return Summary(builder.rows, totals, ties)
