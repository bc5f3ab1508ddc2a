"""Comparing two models or checkpoints, tensor by tensor: :func:`diff` and its :class:`Diff`.

Each side is resolved to its tensors by name (a module's parameters and
persistent buffers, a mapping's items, a checkpoint's entries); the names
found on both sides with equal shapes are compared by the C++ kernel
(``_C.pair_stats``), which reads both tensors once, together, into float64
accumulators, in batches of bounded size (:mod:`torchwalk.pair_batches`).
What comes back is a ``_C.PairTable``, kept in C++: per-module roll-ups
merge its rows there, exactly as if the tensors were concatenated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from torchwalk import _C
from torchwalk.checkpoint_entries import TensorEntry
from torchwalk.checkpoint_windows import readable_dtype
from torchwalk.checkpoints import is_path, open_checkpoint
from torchwalk.diff_table import differs, html_table, text_table
from torchwalk.gc_pause import gc_paused
from torchwalk.pair_batches import Pair, compare_pairs, numel_of
from torchwalk.tree import Source, walk
from torchwalk.value_stats import _module_path, without_lazy


@dataclass(frozen=True)
class TensorDiff:
    """How the tensors of one name (or of one module, rolled up) differ between ``a`` and ``b``.

    Values are compared in float64, each side widened from its own dtype.
    The value fields (``equal`` to ``mismatches``) are None when the shapes
    differ, and when either side holds no values torch can read (a meta
    tensor, a complex one, a checkpoint's dtype torch lacks).

    Attributes:
        name (str): the tensor's name (for a roll-up, the module's path).
        shape_a, shape_b (tuple of int): the shapes (for a roll-up, the
            number of elements compared, as a 1-d shape).
        dtype_a, dtype_b (str): ``str(dtype)`` (a checkpoint's own name for a
            dtype torch lacks; for a roll-up over several, ``"mixed"``).
        numel (int): the number of elements (of ``a``, when the shapes differ).
        equal (bool or None): bitwise identical: the same dtype and the same bytes.
        max_abs, mean_abs (float or None): the maximum and the mean of ``|a - b|``.
        rel_l2 (float or None): ``‖a - b‖₂ / ‖b‖₂``: 0.0 when both are zero,
            ``inf`` when only ``‖b‖₂`` is.
        cosine (float or None): ``a·b / (‖a‖₂ ‖b‖₂)``; None when either norm is 0.
        mismatches (int or None): the elements where
            ``torch.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)`` is False.

    NaN propagates as in torch: a NaN on either side (not on both, at the
    same place, which ``isclose`` calls close) makes ``max_abs``,
    ``mean_abs`` and ``rel_l2`` NaN.
    """

    name: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    numel: int
    equal: bool | None
    max_abs: float | None
    mean_abs: float | None
    rel_l2: float | None
    cosine: float | None
    mismatches: int | None


class Diff:
    """The comparison of two sources, made by :func:`diff`.

    Attributes:
        only_a, only_b (list of str): the names found on one side only, in
            that side's walk order.
        rows (list of TensorDiff): one per name found on both sides, in
            ``a``'s walk order.
        atol, rtol (float): the tolerances of the mismatch counts.

    ``str(diff)`` is an aligned table, differing rows first; :meth:`to_dict`,
    :meth:`to_json` and :meth:`_repr_html_` give the same for programs and
    notebooks.
    """

    def __init__(
        self,
        rows: Sequence[TensorDiff],
        only_a: Sequence[str],
        only_b: Sequence[str],
        table: _C.PairTable,
        table_rows: Sequence[Sequence[int] | None],
        *,
        atol: float,
        rtol: float,
    ) -> None:
        self.rows = list(rows)
        self.only_a = list(only_a)
        self.only_b = list(only_b)
        self.atol = atol
        self.rtol = rtol
        self._table = table
        # Per row, the table's rows that compared it (its pieces); None where
        # nothing was compared (shapes differ, or no values).
        self._table_rows = list(table_rows)

    @property
    def equal(self) -> bool:
        """True when no name is on one side only, no shapes differ, and every tensor was
        compared and found close (no mismatch within the tolerances)."""
        return not self.only_a and not self.only_b and all(row.mismatches == 0 for row in self.rows)

    def by_module(self, depth: int) -> list[TensorDiff]:
        """One row per module path ``depth`` deep (the root is 0), rolling up the rows below it.

        Each rolls up the rows below it that were compared (equal shapes,
        values read) as if their tensors were concatenated: ``max_abs`` the
        maximum, ``numel`` and ``mismatches`` summed, ``mean_abs``,
        ``rel_l2`` and ``cosine`` over all their elements, ``equal`` when
        all are. A module none of whose rows was compared has value fields
        None. Rows come in the order of their first tensor; tensors held
        higher than ``depth`` are in none of them.

        Raises:
            ValueError: if ``depth`` is negative.
        """
        if depth < 0:
            raise ValueError(f"depth must be 0 or more, got {depth}")
        rows_by_path: dict[str, list[int]] = {}
        for index, row in enumerate(self.rows):
            path = _module_path(row.name, depth)
            if path is not None:
                rows_by_path.setdefault(path, []).append(index)
        return [self._rolled_up(path, indices) for path, indices in rows_by_path.items()]

    def _rolled_up(self, path: str, indices: list[int]) -> TensorDiff:
        dtype_a = _one_or_mixed(self.rows[index].dtype_a for index in indices)
        dtype_b = _one_or_mixed(self.rows[index].dtype_b for index in indices)
        table_rows = [row for index in indices for row in self._table_rows[index] or ()]
        compared = any(self._table_rows[index] is not None for index in indices)
        if not compared:
            return TensorDiff(path, (0,), (0,), dtype_a, dtype_b, 0, *(None,) * 6)
        fields = self._table.merged_fields(table_rows)
        numel = fields[0]
        return TensorDiff(path, (numel,), (numel,), dtype_a, dtype_b, *fields)

    def table(self, depth: int | None = None) -> str:
        """The text table: a row per tensor (with ``depth``: per module, see :meth:`by_module`),
        differing rows first, then the names on one side only and the verdict."""
        rows = self.rows if depth is None else self.by_module(depth)
        return text_table(rows, self._notes())

    def _notes(self) -> list[str]:
        """The lines under the table: the names on one side only, then the verdict."""
        notes = [
            _names_note(title, names)
            for title, names in (("only in a", self.only_a), ("only in b", self.only_b))
            if names
        ]
        tolerances = f"atol={self.atol:g}, rtol={self.rtol:g}"
        if self.equal:
            return [*notes, f"equal within {tolerances}: {_count(len(self.rows))} compared"]
        not_compared = sum(
            row.shape_a == row.shape_b and row.mismatches is None for row in self.rows
        )
        counts = [
            f"{sum(map(differs, self.rows))} of {_count(len(self.rows))} differ",
            f"{len(self.only_a)} only in a" if self.only_a else "",
            f"{len(self.only_b)} only in b" if self.only_b else "",
            f"{not_compared} not compared (no values: meta, complex, or a dtype torch lacks)"
            if not_compared
            else "",
        ]
        verdict = f"not equal ({tolerances}): {', '.join(count for count in counts if count)}"
        return [*notes, verdict]

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """``{"only_a": [...], "only_b": [...], "rows": [...], "equal": ...}``, the rows with
        the fields of :class:`TensorDiff`; with ``depth``, also ``"by_module"``, the rows of
        :meth:`by_module`.

        NaN and Inf figures stay floats (``json`` writes them as ``NaN`` and
        ``Infinity``, as JavaScript reads them).
        """
        result: dict[str, Any] = {
            "only_a": list(self.only_a),
            "only_b": list(self.only_b),
            "rows": [asdict(row) for row in self.rows],
            "equal": self.equal,
        }
        if depth is not None:
            result["by_module"] = [asdict(row) for row in self.by_module(depth)]
        return result

    def to_json(self, depth: int | None = None, indent: int | None = None) -> str:
        """The JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(depth), indent=indent)

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        return html_table(self.rows, self._notes())

    def __repr__(self) -> str:
        return (
            f"Diff(rows={len(self.rows)}, only_a={len(self.only_a)}, "
            f"only_b={len(self.only_b)}, equal={self.equal})"
        )


MAX_NAMES_SHOWN = 10
"""How many one-sided names a note under the table names before it counts the rest."""


def _names_note(title: str, names: list[str]) -> str:
    """``title: the first few names and N more``."""
    more = len(names) - MAX_NAMES_SHOWN
    shown = ", ".join(names[:MAX_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
    return f"{title}: {shown}"


def _count(tensors: int) -> str:
    return f"{tensors} tensor" if tensors == 1 else f"{tensors} tensors"


def _one_or_mixed(dtypes: Any) -> str:
    found = set(dtypes)
    return found.pop() if len(found) == 1 else "mixed"


def diff(
    a: Source,
    b: Source,
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Diff:
    """Compare every tensor of ``a`` with the tensor of the same name in ``b``.

    Args:
        a, b (nn.Module, Mapping[str, Tensor] or path): the sources, of any
            kind :func:`torchwalk.walk` takes. A module gives its parameters
            (named and de-duplicated as ``named_parameters()`` does; lazy ones
            left out), then the buffers its ``state_dict`` holds (named as
            ``named_buffers()`` names them): non-persistent buffers are left
            out, as checkpoints leave them. A mapping (a state dict, a loaded
            checkpoint) gives its items, each key a name. A path is opened as
            :func:`torchwalk.checkpoints.open_checkpoint` opens it, and its
            tensors are read in batches (see below).
        atol, rtol (float): the tolerances of the mismatch counts, as
            ``torch.isclose`` takes them. Default: 0.0 (only equal values, and
            NaN against NaN, are close).
        allow_pickle (bool): for a distributed checkpoint's path: read its
            ``.metadata``, a pickle. Default: ``False``.
        trust_remote_code (bool): for a transformers config's path: let
            transformers run the model code it names. Default: ``False``.

    Returns:
        Diff: the names on one side only, and a :class:`TensorDiff` per name
        on both sides, in ``a``'s order.

    Raises:
        TypeError: if a source is none of these, or a mapping holds a
            non-tensor or a non-str key.
        ValueError: if a tolerance is negative or NaN, or the kernel cannot
            read a tensor (sparse, nested, or a wrapper subclass without
            storage, such as a DTensor).
        CheckpointError: if a path holds no readable checkpoint; the message
            names the file and the fault.

    Both tensors of a pair are read once, together, in C++, with no
    temporaries the size of a tensor. A checkpoint's tensors are read in
    batches of about 64 MiB a side, mapped and unmapped (a tensor larger
    than that, in pieces), so that two sharded checkpoints compare in
    bounded memory whatever their shard layouts; a distributed checkpoint's
    tensors are loaded whole. A pair whose tensors lie on different devices
    is compared on the accelerator (``a``'s device, unless ``a`` is on the
    CPU: then ``b``'s), the other side copied there a batch at a time.
    """
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"tolerances must be 0 or more, got atol={atol}, rtol={rtol}")
    named_a = _named_tensors(a, allow_pickle, trust_remote_code)
    named_b = _named_tensors(b, allow_pickle, trust_remote_code)
    shared = [name for name in named_a if name in named_b]
    pairs: list[Pair] = []
    pair_of_row: list[int | None] = []
    for name in shared:
        side_a, side_b = named_a[name], named_b[name]
        if _shape(side_a) == _shape(side_b) and _has_values(side_a) and _has_values(side_b):
            pair_of_row.append(len(pairs))
            pairs.append(Pair(name, side_a, side_b))
        else:
            pair_of_row.append(None)
    table, table_rows = compare_pairs(pairs, rtol=rtol, atol=atol)
    rows = []
    for name, pair in zip(shared, pair_of_row, strict=True):
        side_a, side_b = named_a[name], named_b[name]
        fields = _not_compared(side_a) if pair is None else table.merged_fields(table_rows[pair])
        shape_a, shape_b = _shape(side_a), _shape(side_b)
        dtype_a, dtype_b = _dtype_name(side_a), _dtype_name(side_b)
        rows.append(TensorDiff(name, shape_a, shape_b, dtype_a, dtype_b, *fields))
    return Diff(
        rows,
        [name for name in named_a if name not in named_b],
        [name for name in named_b if name not in named_a],
        table,
        [None if pair is None else table_rows[pair] for pair in pair_of_row],
        atol=atol,
        rtol=rtol,
    )


def _named_tensors(
    source: Source, allow_pickle: bool, trust_remote_code: bool
) -> dict[str, torch.Tensor | TensorEntry]:
    """The tensors of ``source`` by name, in its walk order (see :func:`diff`)."""
    if is_path(source):
        with gc_paused():  # tens of thousands of header entries
            opened = open_checkpoint(
                source,  # type: ignore[arg-type]
                allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code,
            )
        return _named_tensors(opened, allow_pickle, trust_remote_code)
    if isinstance(source, nn.Module):
        return dict(_module_state(source))
    if isinstance(source, Mapping):
        for name, value in source.items():
            if not isinstance(name, str) or not isinstance(value, (torch.Tensor, TensorEntry)):
                raise TypeError(
                    "torchwalk.diff() expects a mapping of str names to tensors, got "
                    f"{type(name).__name__} -> {type(value).__name__}"
                )
        return dict(source)
    raise TypeError(
        "torchwalk.diff() expects nn.Modules, mappings of names to tensors or checkpoints' "
        f"paths, got {type(source).__name__}"
    )


def _module_state(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The parameters, then the persistent buffers, named as the walk names them."""
    tree = walk(module)
    modules = dict(tree.named_modules())
    named: list[tuple[str, torch.Tensor]] = list(tree.named_parameters())
    for name, buffer in tree.named_buffers():
        path, _, leaf = name.rpartition(".")
        owner = modules.get(path)
        if owner is None or leaf not in owner._non_persistent_buffers_set:
            named.append((name, buffer))
    return without_lazy(named)


_ValueFields = tuple[
    int, bool | None, float | None, float | None, float | None, float | None, int | None
]
"""``numel`` and the value fields of a :class:`TensorDiff`, in order."""


def _not_compared(side_a: torch.Tensor | TensorEntry) -> _ValueFields:
    """``numel`` and the value fields of a row whose tensors were not compared."""
    return (numel_of(side_a), None, None, None, None, None, None)


def _shape(side: torch.Tensor | TensorEntry) -> tuple[int, ...]:
    return tuple(side.shape)


def _dtype_name(side: torch.Tensor | TensorEntry) -> str:
    return str(side.dtype) if isinstance(side, torch.Tensor) else side.dtype


def _has_values(side: torch.Tensor | TensorEntry) -> bool:
    """Whether the kernel can read ``side``'s values: not meta, not complex, a dtype torch reads."""
    if isinstance(side, torch.Tensor):
        return not side.is_meta and not side.is_complex()
    dtype = readable_dtype(side)
    return dtype is not None and not dtype.is_complex


__all__ = ["Diff", "TensorDiff", "diff"]
