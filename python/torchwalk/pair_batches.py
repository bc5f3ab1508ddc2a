"""Comparing pairs of tensors in batches of bounded size: what :func:`torchwalk.diff` reads.

Each side of a pair is a tensor (a module's, a mapping's, a memory-mapped
``torch.save`` file's) or a checkpoint's header entry: a ``.safetensors``
file's bytes, or a distributed checkpoint's tensor. The pairs are handed to
the comparison kernel (``_C.pair_stats``) in batches that read about
:data:`BATCH_BYTES` of files (or copy that much to another device) per side:
the file bytes of a batch are mapped (:mod:`torchwalk.checkpoint_windows`)
and unmapped once the kernel has read them, so two sharded checkpoints of
any size and any shard layouts compare in bounded memory.

A pair that must be read or moved and is larger than a batch is compared in
pieces, the same element range of both sides at a time; the kernel merges
the pieces' rows exactly, as if they were one tensor. Pairs of tensors
already together on one device are read whole, in place, with no cost to a
batch; a distributed checkpoint's tensors are loaded whole (the format has
no smaller unit).

A pair whose sides lie on different devices is compared on the accelerator:
``a``'s device unless ``a`` is on the CPU, else ``b``'s; the other side's
pieces are copied there a batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import NamedTuple

import torch

from torchwalk import _C
from torchwalk.checkpoint_entries import TensorEntry
from torchwalk.checkpoint_windows import (
    TORCH_DTYPES,
    Piece,
    load_distributed,
    mapped,
    open_for_reading,
    windows,
)

BATCH_BYTES = 64 * 1024**2
"""About the most each side of a batch reads from files (or copies between devices)."""

Side = torch.Tensor | TensorEntry
"""One side of a pair: a tensor, or a checkpoint's entry whose dtype torch reads."""


class Pair(NamedTuple):
    """Two tensors of equal shapes to compare, under the name they share."""

    name: str
    a: Side
    b: Side


class _Span(NamedTuple):
    """Elements ``[first, first + numel)`` (in row-major order) of both sides of a pair."""

    pair: int
    first: int
    numel: int


def compare_pairs(
    pairs: Sequence[Pair], *, rtol: float, atol: float
) -> tuple[_C.PairTable, list[list[int]]]:
    """Compare every pair, in batches.

    Args:
        pairs (sequence of Pair): the pairs; both sides of each hold the same
            number of elements, of real dtypes torch reads.
        rtol, atol (float): the tolerances of the mismatch count.

    Returns:
        (PairTable, list of list of int): a row per piece compared, and for
        each pair the rows of its pieces (merge them with ``merged_fields``).

    Raises:
        CheckpointError: if a checkpoint's file cannot be read.
    """
    tables: list[_C.PairTable] = []
    owners: list[int] = []
    for batch in _batches(pairs):
        tables.append(_compare_batch(pairs, batch, rtol, atol))
        owners += [span.pair for span in batch]
    rows: list[list[int]] = [[] for _ in pairs]
    for row, owner in enumerate(owners):
        rows[owner].append(row)
    return _C.PairTable.concatenated(tables), rows


def _batches(pairs: Sequence[Pair]) -> Iterator[list[_Span]]:
    """The spans of all pairs, in order, in batches that read about :data:`BATCH_BYTES` a side."""
    batch: list[_Span] = []
    held_a = held_b = 0
    for index, pair in enumerate(pairs):
        device = _meeting_device(pair)
        for span in _spans(index, pair, device):
            cost_a = _read_bytes(pair.a, span.numel, device)
            cost_b = _read_bytes(pair.b, span.numel, device)
            if batch and (held_a + cost_a > BATCH_BYTES or held_b + cost_b > BATCH_BYTES):
                yield batch
                batch, held_a, held_b = [], 0, 0
            batch.append(span)
            held_a += cost_a
            held_b += cost_b
    if batch:
        yield batch


def _spans(index: int, pair: Pair, device: torch.device) -> list[_Span]:
    """The pair whole where it costs no reading or where it can only be loaded whole, else
    pieces of at most :data:`BATCH_BYTES` a side."""
    numel = numel_of(pair.a)
    in_place = _in_place(pair.a, device) and _in_place(pair.b, device)
    if numel == 0 or in_place or _is_distributed(pair.a) or _is_distributed(pair.b):
        return [_Span(index, 0, numel)]
    per_span = max(1, BATCH_BYTES // max(_dtype(pair.a).itemsize, _dtype(pair.b).itemsize))
    return [
        _Span(index, first, min(per_span, numel - first)) for first in range(0, numel, per_span)
    ]


def _read_bytes(side: Side, count: int, device: torch.device) -> int:
    """What comparing ``count`` elements on ``device`` reads of ``side`` from files, or copies."""
    return 0 if _in_place(side, device) else count * _dtype(side).itemsize


def _in_place(side: Side, device: torch.device) -> bool:
    """Whether ``side`` is a tensor on ``device`` already, read there in place."""
    return isinstance(side, torch.Tensor) and side.device == device


def _compare_batch(
    pairs: Sequence[Pair], batch: list[_Span], rtol: float, atol: float
) -> _C.PairTable:
    """One kernel call over the batch's spans; the files it mapped are unmapped on return."""
    with ExitStack() as maps:
        sides_a = _read_side(
            [(pairs[span.pair].name, pairs[span.pair].a) for span in batch], batch, maps
        )
        sides_b = _read_side(
            [(pairs[span.pair].name, pairs[span.pair].b) for span in batch], batch, maps
        )
        together = [
            _together(a, b, _meeting_device(pairs[span.pair]))
            for a, b, span in zip(sides_a, sides_b, batch, strict=True)
        ]
        table = _C.pair_stats([a for a, _ in together], [b for _, b in together], rtol, atol)
        # The maps close as the stack unwinds: no tensor over them may be held then.
        del sides_a, sides_b, together
    return table


def _read_side(
    named_sides: list[tuple[str, Side]], batch: list[_Span], maps: ExitStack
) -> list[torch.Tensor]:
    """The tensors of one side of the batch's spans: tensors sliced in place, file bytes mapped
    (kept open by ``maps``), distributed tensors loaded."""
    tensors: dict[int, torch.Tensor] = {}  # by position in the batch
    by_file: dict[str, list[Piece]] = {}
    by_folder: dict[str, list[tuple[int, str, TensorEntry]]] = {}
    for position, ((name, side), span) in enumerate(zip(named_sides, batch, strict=True)):
        if isinstance(side, torch.Tensor):
            tensors[position] = _elements(side, span)
        elif span.numel == 0:
            tensors[position] = torch.empty(0, dtype=_dtype(side))
        elif _is_distributed(side):
            by_folder.setdefault(side.file, []).append((position, name, side))
        else:
            dtype = _dtype(side)
            piece = Piece(position, dtype, side.offset + span.first * dtype.itemsize, span.numel)
            by_file.setdefault(side.file, []).append(piece)
    for path, pieces in by_file.items():
        file = maps.enter_context(open_for_reading(path))
        for window in windows(pieces, BATCH_BYTES):
            views = maps.enter_context(mapped(file, path, window))
            for piece, view in zip(window, views, strict=True):
                tensors[piece.owner] = view
    for folder, entries in by_folder.items():
        loaded = load_distributed(folder, [(name, entry) for _, name, entry in entries])
        for (position, _, _), tensor in zip(entries, loaded, strict=True):
            tensors[position] = tensor
    return [tensors[position] for position in range(len(batch))]


def _elements(tensor: torch.Tensor, span: _Span) -> torch.Tensor:
    """The span's elements of ``tensor``: itself when the span is all of it, else a flat range."""
    if span.first == 0 and span.numel == tensor.numel():
        return tensor
    return flat_range(tensor.detach(), span.first, span.numel)


def flat_range(tensor: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """Elements ``[first, first + count)`` of ``tensor`` in row-major order, as a 1-D tensor.

    A view where the strides allow one; otherwise (a transposed or sliced
    view that no single stride steps through) a copy of those elements alone:
    the first row's tail and the last row's head, taken a dimension further
    down, and the whole rows between.
    """
    try:
        return tensor.view(-1)[first : first + count]
    except RuntimeError:
        pass  # not flat in memory: go down a dimension (0-d and 1-d tensors always are)
    row = tensor.numel() // tensor.shape[0]
    parts = []
    last = first + count
    while first < last:
        index, offset = divmod(first, row)
        if offset == 0 and last - first >= row:
            whole = (last - first) // row
            parts.append(tensor[index : index + whole].reshape(-1))
            first += whole * row
        else:
            take = min(row - offset, last - first)
            parts.append(flat_range(tensor[index], offset, take))
            first += take
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _together(
    a: torch.Tensor, b: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` on ``device``, of one shape, as the kernel wants them: both flat where
    one is (a piece of a file against a whole tensor no larger than a batch)."""
    if a.shape != b.shape:
        a, b = a.reshape(-1), b.reshape(-1)
    return a.to(device), b.to(device)


def _meeting_device(pair: Pair) -> torch.device:
    """Where the pair is compared: ``a``'s device unless it is the CPU, else ``b``'s."""
    device_a, device_b = _device(pair.a), _device(pair.b)
    return device_a if device_a.type != "cpu" else device_b


def _device(side: Side) -> torch.device:
    return side.device if isinstance(side, torch.Tensor) else torch.device("cpu")


def _dtype(side: Side) -> torch.dtype:
    return side.dtype if isinstance(side, torch.Tensor) else TORCH_DTYPES[side.dtype]


def numel_of(side: Side) -> int:
    """The number of elements of a tensor, or of the tensor a checkpoint's entry describes."""
    return torch.Size(side.shape).numel()


def _is_distributed(side: Side) -> bool:
    """A distributed checkpoint's tensor: its entry places no bytes in a file."""
    return isinstance(side, TensorEntry) and side.offset < 0


__all__ = ["BATCH_BYTES", "Pair", "Side", "compare_pairs", "flat_range", "numel_of"]
