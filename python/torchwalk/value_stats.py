"""Bulk value statistics of parameters, gradients and buffers.

:func:`compute_stats` hands all the tensors to the C++ kernels at once
(``_C.tensor_stats``): one pass over each tensor's memory, every figure at
once, in parallel across and within tensors, with no copies. What comes back
is a ``_C.StatsTable``: per tensor, mergeable moments (count, sum, sum of
squared deviations, ...), kept in C++. The total and the per-module roll-ups
are merged there, exactly as if the tensors were concatenated, and a
:class:`TensorStats` is made only for a row that is read.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from operator import itemgetter
from typing import Any, TypeVar

import torch
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from torchwalk import _C
from torchwalk.sharded import local_parts, merge_across_ranks

TensorT = TypeVar("TensorT", bound=torch.Tensor)

BATCH_BYTES = 256 * 1024**2
"""With a progress callback, tensors are read in batches of about this many bytes."""


@dataclass(frozen=True)
class TensorStats:
    """The value statistics of one tensor (or of several, as if concatenated).

    Each figure equals the float64 torch reduction of the same tensor
    (``x.double().mean()``, ``x.double().std()``, ``torch.linalg.vector_norm``,
    ``(x == 0).sum()``, ...), NaN and Inf propagating as in torch. Value
    fields are None where torch has no answer: every one but ``numel`` for
    meta tensors; all but the counts and ``l2`` for complex tensors; all for
    empty ones.

    Attributes:
        name (str): the parameter's (or buffer's) name; ``"total"`` for the total.
        numel (int): the number of elements.
        mean, std, min, max, absmax, l2 (float or None): ``std`` uses
            ``correction=1`` (NaN for one element, as torch gives it).
        zeros, nans, infs (int or None): elements equal to 0 (-0.0 too), NaN, ±Inf.
        exponents (list of (int, int), or None): with ``exponents=True``, the
            pairs ``(e, count)``, by increasing ``e``, of the finite non-zero
            elements with ``2**e <= |x| < 2**(e+1)`` (only the ``e`` that occur);
            counted in the same pass. None otherwise, and where the value
            fields are None but for empty tensors (``[]``).
    """

    name: str
    numel: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    absmax: float | None
    l2: float | None
    zeros: int | None
    nans: int | None
    infs: int | None
    exponents: list[tuple[int, int]] | None = None

    @property
    def anomaly(self) -> str | None:
        """Why the tensor looks broken: ``"NaN"``, ``"Inf"``, ``"all zero"``, or None."""
        if self.nans:
            return "NaN"
        if self.infs:
            return "Inf"
        if self.numel > 0 and self.zeros == self.numel:
            return "all zero"
        return None


def _module_path(name: str, depth: int) -> str | None:
    """The path of the module ``depth`` deep that holds ``name``; None if it is held higher up."""
    modules = name.split(".")[:-1]
    return ".".join(modules[:depth]) if len(modules) >= depth else None


class Stats:
    """The value statistics of a model's tensors: :attr:`rows` and their :attr:`total`.

    ``str(stats)`` is an aligned table that flags anomalies; :meth:`to_dict`,
    :meth:`to_json` and :meth:`_repr_html_` give the same for programs and
    notebooks.
    """

    def __init__(
        self,
        names: Sequence[str],
        table: _C.StatsTable,
        total_rows: Sequence[int] | None = None,
    ) -> None:
        if len(names) != len(table):
            raise ValueError(f"{len(names)} names for {len(table)} rows of statistics")
        self._names = list(names)
        self._table = table
        # The rows the total covers (None: all): a checkpoint's rows of dtypes
        # torch cannot read hold counts alone, which would void the total.
        self._total_rows = total_rows
        self._rows: list[TensorStats] | None = None
        self._total: TensorStats | None = None

    @property
    def rows(self) -> list[TensorStats]:
        """One :class:`TensorStats` per tensor, in order (made when first read)."""
        if self._rows is None:
            self._rows = [self._row(index) for index in range(len(self._names))]
        return self._rows

    @property
    def total(self) -> TensorStats:
        """All rows as if their tensors were concatenated, named ``"total"``;
        ``total.l2`` is ``torch.nn.utils.get_total_norm`` of the tensors."""
        if self._total is None:
            figures = (
                self._table.total_figures()
                if self._total_rows is None
                else self._table.merged_figures(self._total_rows)
            )
            self._total = TensorStats("total", *figures)
        return self._total

    def _row(self, index: int) -> TensorStats:
        if self._rows is not None:
            return self._rows[index]
        return TensorStats(self._names[index], *self._table.figures(index))

    def by_module(self, depth: int) -> list[TensorStats]:
        """One row per module path ``depth`` deep (the root is 0), over the tensors below it.

        Rows come in the order of their first tensor; tensors held higher
        than ``depth`` are in none of them.
        """
        if depth < 0:
            raise ValueError(f"depth must be 0 or more, got {depth}")
        rows_by_path: dict[str, list[int]] = {}
        for index, name in enumerate(self._names):
            path = _module_path(name, depth)
            if path is not None:
                rows_by_path.setdefault(path, []).append(index)
        return [
            TensorStats(path, *self._table.merged_figures(rows))
            for path, rows in rows_by_path.items()
        ]

    def anomalies(self) -> list[TensorStats]:
        """The rows with a NaN, an Inf, or nothing but zeros."""
        return [self._row(index) for index in self._table.anomalous()]

    def to_dict(self) -> dict[str, Any]:
        """``{"tensors": [...], "total": {...}}``, with the fields of :class:`TensorStats`
        (``exponents`` only when counted).

        NaN and Inf figures stay floats (``json`` writes them as ``NaN`` and
        ``Infinity``, as JavaScript reads them).
        """
        return {
            "tensors": [self._as_dict(row) for row in self.rows],
            "total": self._as_dict(self.total),
        }

    def _as_dict(self, row: TensorStats) -> dict[str, Any]:
        fields = asdict(row)
        if not self._table.counts_exponents:
            del fields["exponents"]  # not asked for: the same dicts as without them
        return fields

    def to_json(self, indent: int | None = None) -> str:
        """The JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    def __len__(self) -> int:
        return len(self._names)

    def __str__(self) -> str:
        lines = [_cells(row) for row in [*self.rows, self.total]]
        header = [*_COLUMN_TITLES, "Anomaly"]
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

        def aligned(cells: list[str]) -> str:
            # Names and anomalies align left, figures right.
            return "  ".join(
                cell.ljust(width) if column in (0, len(header) - 1) else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        body = [aligned(line) for line in lines]
        rule = "-" * max(len(line) for line in [aligned(header), *body])
        anomalies = len(self.anomalies())
        note = f"{anomalies} of {len(self.rows)} tensors flagged" if anomalies else "no anomalies"
        return "\n".join([aligned(header), rule, *body[:-1], rule, body[-1], note])

    def _repr_html_(self) -> str:
        header = [*_COLUMN_TITLES, "Anomaly"]
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        rows = []
        for row in [*self.rows, self.total]:
            style = ' style="background:#fdd"' if row.anomaly else ""
            cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(row))
            rows.append(f"<tr{style}>{cells}</tr>")
        return f"<table><tr>{head}</tr>{''.join(rows)}</table>"

    def __repr__(self) -> str:
        return f"Stats(tensors={len(self)}, numel={self.total.numel})"


_COLUMN_TITLES = (
    "Name",
    "Numel",
    "Mean",
    "Std",
    "Min",
    "Max",
    "Absmax",
    "L2",
    "Zeros",
    "NaNs",
    "Infs",
)


_FIGURE_FIELDS = [field.name for field in fields(TensorStats)[1 : len(_COLUMN_TITLES)]]
"""The fields the table shows after the name (the exponents stay in to_dict)."""


def _cells(row: TensorStats) -> list[str]:
    """The text cells of a row: figures to 4 significant digits, ``-`` for None."""

    def text(value: float | int | None) -> str:
        if value is None:
            return "-"
        return str(value) if isinstance(value, int) else f"{value:.4g}"

    figures = [getattr(row, field) for field in _FIGURE_FIELDS]
    return [row.name, *(text(value) for value in figures), row.anomaly or ""]


def compute_stats(
    named_tensors: Sequence[tuple[str, torch.Tensor]],
    progress: Callable[[int], None] | None = None,
    *,
    exponents: bool = False,
) -> Stats:
    """The :class:`Stats` of named tensors, one row each, in order.

    Args:
        named_tensors (sequence of (str, Tensor)): the rows' names and tensors.
            Tensors may be on any devices (the CPU and CUDA have kernels; other
            devices use ATen reductions there), of any real, complex or bool
            dtype, strided views included (read in place).
        progress (callable, optional): called with the bytes read after each
            batch; the tensors are then read in batches of about
            :data:`BATCH_BYTES` instead of all at once.
        exponents (bool): also count the binary exponents of each real
            tensor's values (``TensorStats.exponents``), in the same pass.

    Sharded tensors (DTensor) get the figures of the global tensor on every
    rank: each rank reads its local shard, and the partial results are merged
    with collectives over the tensor's device mesh, which every rank of the
    mesh must therefore call (see :mod:`torchwalk.sharded`).

    Raises:
        ValueError: for a tensor the kernels cannot read (sparse, nested, or a
            wrapper subclass without storage).
    """
    names = [name for name, _ in named_tensors]
    tensors = [tensor for _, tensor in named_tensors]
    return Stats(names, stats_table(tensors, progress, exponents=exponents))


def stats_table(
    tensors: Sequence[torch.Tensor],
    progress: Callable[[int], None] | None = None,
    *,
    exponents: bool = False,
    edges: Sequence[float] = (),
) -> _C.StatsTable:
    """The statistics of ``tensors``, a row each, kept in C++ (see :func:`compute_stats`).

    ``edges``: for each, count the finite values with ``|x| >= edge`` (``x``
    rounded to float32 first), read with ``StatsTable.reached``.
    """
    # Sharded tensors are read where they lie (each rank its shard), then merged.
    parts, sharded = local_parts(tensors)
    if progress is None:
        table = _C.tensor_stats(parts, exponents=exponents, edges=list(edges))
    else:
        batch: list[torch.Tensor] = []
        batch_bytes = 0
        tables: list[_C.StatsTable] = []
        for tensor in [*parts, None]:
            if tensor is not None:
                batch.append(tensor)
                batch_bytes += tensor.numel() * tensor.element_size()
            if batch and (tensor is None or batch_bytes >= BATCH_BYTES):
                tables.append(_C.tensor_stats(batch, exponents=exponents, edges=list(edges)))
                progress(batch_bytes)
                batch, batch_bytes = [], 0
        table = _C.StatsTable.concatenated(tables)
    if sharded:
        table = merge_across_ranks(tensors, table, sharded)
    return table


def stats_of_members(
    named_parameters: Iterable[tuple[str, torch.Tensor]],
    named_buffers: Iterable[tuple[str, torch.Tensor]],
    *,
    grads: bool = False,
    progress: Callable[[int], None] | None = None,
    exponents: bool = False,
) -> Stats:
    """The :class:`Stats` of a model's parameters (or their gradients), then buffers.

    With ``grads``, a row per parameter that has a ``.grad``, describing it
    under the parameter's name, and no buffers. Lazy parameters, which hold
    no values yet, have no row.
    """
    named = list(named_parameters)
    if grads:
        named = [(name, parameter.grad) for name, parameter in named if parameter.grad is not None]
    else:
        named += named_buffers
    return compute_stats(without_lazy(named), progress, exponents=exponents)


def without_lazy(named: list[tuple[str, TensorT]]) -> list[tuple[str, TensorT]]:
    """``named`` without its lazy tensors, which hold no values yet (``named`` itself if none)."""
    # isinstance through Parameter's metaclass is slow: each type is tested once.
    types = set(map(type, map(itemgetter(1), named)))
    if not any(issubclass(kind, UninitializedTensorMixin) for kind in types):
        return named
    return [(n, t) for n, t in named if not isinstance(t, UninitializedTensorMixin)]


__all__ = [
    "Stats",
    "TensorStats",
    "compute_stats",
    "stats_of_members",
    "stats_table",
    "without_lazy",
]
