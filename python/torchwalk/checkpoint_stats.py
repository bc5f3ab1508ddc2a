"""Value statistics of a checkpoint's tensors, read from its files in chunks.

Memory stays bounded by :data:`CHUNK_BYTES`, whatever the size of a shard or
of a tensor: each file is mapped one window at a time, front to back, and
unmapped once the kernels (``_C.tensor_stats``) have read the tensors in it,
all at once; a tensor larger than a window is cut into pieces of whole
elements, which are merged at the end exactly as if they were one tensor
(the moments merge). Nothing is copied: the kernels read the page cache.

Tensors whose dtype torch lacks (``F4``, ``F6_E2M3``, ...) are not read:
their rows hold the element count alone, as a meta tensor's do, and the
total leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchwalk import _C
from torchwalk.checkpoint_entries import Checkpoint, TensorEntry
from torchwalk.checkpoint_windows import (
    Piece,
    load_distributed,
    mapped,
    open_for_reading,
    pieces_of,
    readable_dtype,
    windows,
)
from torchwalk.value_stats import Stats

CHUNK_BYTES = 64 * 1024**2
"""The most of a file mapped at once (a window)."""


def checkpoint_stats(
    checkpoint: Checkpoint,
    *,
    progress: Callable[[int], None] | None = None,
    exponents: bool = False,
) -> Stats:
    """The statistics of every tensor of ``checkpoint``, a row each, in its order.

    Args:
        checkpoint (Checkpoint): what :func:`torchwalk.checkpoints.open_checkpoint` gave.
        progress (callable, optional): called with the bytes read after each
            window of a file.
        exponents (bool): also count each tensor's binary exponents.

    Returns:
        Stats: a row per tensor, named by its key.

    Raises:
        CheckpointError: if a file is shorter than its header says, or a
            distributed checkpoint's data cannot be loaded.
    """
    reader = _WindowReader(progress, exponents)
    names = list(checkpoint)
    unreadable: set[int] = set()
    by_file: dict[str, list[tuple[int, TensorEntry]]] = {}
    distributed: list[tuple[int, str, TensorEntry]] = []
    for index, (name, value) in enumerate(checkpoint.items()):
        if isinstance(value, torch.Tensor):
            reader.add_tensor(index, value)  # memory-mapped: read in place
        elif value.offset < 0:
            distributed.append((index, name, value))
        else:
            by_file.setdefault(value.file, []).append((index, value))
    for file, entries in by_file.items():
        entries.sort(key=lambda item: item[1].offset)  # read front to back
        unreadable.update(reader.read_file(file, entries))
    if distributed:
        reader.load_distributed(checkpoint.path, distributed)
    readable = [index for index in range(len(names)) if index not in unreadable]
    return Stats(names, reader.finish(len(names)), total_rows=readable if unreadable else None)


class _WindowReader:
    """Windows of a file mapped one at a time, their tensors handed to the kernels at once."""

    def __init__(self, progress: Callable[[int], None] | None, exponents: bool) -> None:
        self.pending: list[torch.Tensor] = []  # pieces to describe, in the current window
        self.owners: list[int] = []  # the tensor each piece belongs to, pending and done
        self.tables: list[_C.StatsTable] = []
        self.progress = progress
        self.exponents = exponents

    def add_tensor(self, index: int, tensor: torch.Tensor) -> None:
        self.pending.append(tensor)
        self.owners.append(index)

    def read_file(self, path: str, entries: list[tuple[int, TensorEntry]]) -> list[int]:
        """Read the entries of one file, front to back; returns those torch cannot read."""
        unreadable = []
        pieces: list[Piece] = []
        for index, entry in entries:
            dtype = readable_dtype(entry)
            numel = torch.Size(entry.shape).numel()
            if dtype is None:
                # Nothing torch can read: the row counts the elements.
                self.add_tensor(index, torch.empty(numel, device="meta"))
                unreadable.append(index)
            elif numel == 0:
                self.add_tensor(index, torch.empty(0, dtype=dtype))
            else:
                pieces += pieces_of(index, entry, dtype, 0, numel, CHUNK_BYTES)
        self._describe_pending()
        with open_for_reading(path) as file:
            for window in windows(pieces, CHUNK_BYTES):
                with mapped(file, path, window) as tensors:
                    try:
                        for piece, tensor in zip(window, tensors, strict=True):
                            self.add_tensor(piece.owner, tensor)
                        self._describe_pending()
                    finally:
                        self.pending = []  # the map closes next: nothing may view it then
                if self.progress is not None:
                    self.progress(sum(piece.numel * piece.dtype.itemsize for piece in window))
        return unreadable

    def load_distributed(self, path: str, entries: list[tuple[int, str, TensorEntry]]) -> None:
        """Load a distributed checkpoint's tensors a batch of about a window's bytes at a time.

        torch.distributed.checkpoint loads into tensors it is given, whole: a
        tensor larger than a window is loaded alone, so the memory held is
        the larger of a window and the largest tensor.
        """
        batch: list[tuple[int, str, TensorEntry]] = []
        held = 0

        def load() -> None:
            loaded = load_distributed(path, [(name, entry) for _, name, entry in batch])
            for (index, _, _), tensor in zip(batch, loaded, strict=True):
                self.add_tensor(index, tensor)
            self._describe_pending()
            if self.progress is not None:
                self.progress(held)

        for index, name, entry in entries:
            if batch and held + entry.nbytes > CHUNK_BYTES:
                load()
                batch, held = [], 0
            batch.append((index, name, entry))
            held += entry.nbytes
        if batch:
            load()

    def _describe_pending(self) -> None:
        if self.pending:
            self.tables.append(_C.tensor_stats(self.pending, exponents=self.exponents))
            self.pending = []

    def finish(self, count: int) -> _C.StatsTable:
        """One row per tensor, in the checkpoint's order."""
        self._describe_pending()
        pieces: list[list[int]] = [[] for _ in range(count)]
        for row, owner in enumerate(self.owners):
            pieces[owner].append(row)
        return _C.StatsTable.concatenated(self.tables).grouped(pieces)


__all__ = ["CHUNK_BYTES", "checkpoint_stats"]
