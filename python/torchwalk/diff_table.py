"""The text and HTML tables of a :class:`~torchwalk.comparison.Diff`.

A row per tensor (or per module, rolled up), the differing ones first (a
shape that differs, or a mismatch), each group in the order given; a status
word says what kind of row it is; notes follow the table.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchwalk.comparison import TensorDiff

COLUMN_TITLES = (
    "Name",
    "Status",
    "Shape",
    "Dtype",
    "Numel",
    "Mismatches",
    "Max abs",
    "Mean abs",
    "Rel L2",
    "Cosine",
)

_LEFT_ALIGNED = {"Name", "Status", "Shape", "Dtype"}


def status(row: TensorDiff) -> str:
    """What the row says in a word or two.

    ``shapes differ``; ``not compared`` (no values to read); ``differs``
    (mismatches); ``identical`` (bitwise); ``close`` (no mismatch within the
    tolerances, but not bitwise: another dtype, ``-0.0`` against ``0.0``,
    NaNs, or differences within the tolerances).
    """
    if row.shape_a != row.shape_b:
        return "shapes differ"
    if row.mismatches is None:
        return "not compared"
    if row.mismatches:
        return "differs"
    return "identical" if row.equal else "close"


def differs(row: TensorDiff) -> bool:
    """Whether the row shows a difference: shapes, or values beyond the tolerances."""
    return row.shape_a != row.shape_b or bool(row.mismatches)


def text_table(rows: Sequence[TensorDiff], notes: Sequence[str]) -> str:
    """An aligned table of ``rows``, differing ones first, then ``notes``, a line each."""
    header = list(COLUMN_TITLES)
    lines = [_cells(row) for row in _differing_first(rows)]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def aligned(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if title in _LEFT_ALIGNED else cell.rjust(width)
            for title, cell, width in zip(COLUMN_TITLES, cells, widths, strict=True)
        ).rstrip()

    body = [aligned(line) for line in lines]
    rule = "-" * max(len(line) for line in [aligned(header), *body])
    return "\n".join([aligned(header), rule, *body, rule, *notes])


def html_table(rows: Sequence[TensorDiff], notes: Sequence[str]) -> str:
    """``rows`` as an HTML table, differing ones first and shaded; ``notes`` as paragraphs."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in COLUMN_TITLES)
    body = []
    for row in _differing_first(rows):
        style = ' style="background:#fdd"' if differs(row) else ""
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(row))
        body.append(f"<tr{style}>{cells}</tr>")
    paragraphs = "".join(f"<p>{html.escape(note)}</p>" for note in notes)
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{paragraphs}"


def _differing_first(rows: Sequence[TensorDiff]) -> list[TensorDiff]:
    return sorted(rows, key=lambda row: not differs(row))  # stable: each group keeps its order


def _cells(row: TensorDiff) -> list[str]:
    """The text cells of a row: figures to 4 significant digits, ``-`` for None."""
    shape = str(row.shape_a) if row.shape_a == row.shape_b else f"{row.shape_a} vs {row.shape_b}"
    dtype_a, dtype_b = (dtype.removeprefix("torch.") for dtype in (row.dtype_a, row.dtype_b))
    dtype = dtype_a if dtype_a == dtype_b else f"{dtype_a} vs {dtype_b}"
    figures = (row.numel, row.mismatches, row.max_abs, row.mean_abs, row.rel_l2, row.cosine)
    name = row.name or "(root)"  # the roll-up at depth 0
    return [name, status(row), shape, dtype, *(_figure(value) for value in figures)]


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


__all__ = ["COLUMN_TITLES", "differs", "html_table", "status", "text_table"]
