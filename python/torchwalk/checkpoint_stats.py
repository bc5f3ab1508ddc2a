"""Value statistics of a checkpoint's tensors, read from its files in chunks.

Memory stays bounded by :data:`CHUNK_BYTES`, whatever the size of a shard or
of a tensor: each file is read front to back into one reusable buffer, each
tensor cut into pieces of whole elements that fit in it; a full buffer goes
to the kernels at once (``_C.tensor_stats``), and the pieces of a tensor are
merged at the end exactly as if they were one tensor (the moments merge).

Tensors whose dtype torch lacks (``F4``, ``F6_E2M3``, ...) are not read:
their rows hold the element count alone, as a meta tensor's do, and the
total leaves them out.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from torchwalk import _C
from torchwalk.checkpoint_entries import Checkpoint, CheckpointError, TensorEntry
from torchwalk.value_stats import Stats

CHUNK_BYTES = 32 * 1024**2
"""The buffer a checkpoint's data is read into, and so the most a read holds at once."""

_ALIGNMENT = 64  # each piece starts on a cache line, as the kernels' loads prefer

_TORCH_DTYPES = {
    str(dtype): dtype
    for dtype in vars(torch).values()
    if isinstance(dtype, torch.dtype) and dtype.itemsize > 0
}


def checkpoint_stats(
    checkpoint: Checkpoint, *, progress: Callable[[int], None] | None = None
) -> Stats:
    """The statistics of every tensor of ``checkpoint``, a row each, in its order.

    Args:
        checkpoint (Checkpoint): what :func:`torchwalk.checkpoints.open_checkpoint` gave.
        progress (callable, optional): called with the bytes read after each
            buffer of data.

    Returns:
        Stats: a row per tensor, named by its key.

    Raises:
        CheckpointError: if a file is shorter than its header says, or a
            distributed checkpoint (whose data this does not read) is given.
    """
    reader = _ChunkReader(progress)
    names = list(checkpoint)
    unreadable: set[int] = set()
    by_file: dict[str, list[tuple[int, TensorEntry]]] = {}
    for index, value in enumerate(checkpoint.values()):
        if isinstance(value, torch.Tensor):
            reader.add_tensor(index, value)  # memory-mapped: read in place
        elif value.offset < 0:
            raise CheckpointError(
                value.file,
                "statistics of a distributed checkpoint need its data loaded: "
                "load it with torch.distributed.checkpoint and pass the state dict",
            )
        else:
            by_file.setdefault(value.file, []).append((index, value))
    for file, entries in by_file.items():
        entries.sort(key=lambda item: item[1].offset)  # read front to back
        unreadable.update(reader.read_file(file, entries))
    readable = [index for index in range(len(names)) if index not in unreadable]
    return Stats(names, reader.finish(len(names)), total_rows=readable if unreadable else None)


class _ChunkReader:
    """Pieces of tensors gathered in one buffer, handed to the kernels whenever it is full."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.buffer = bytearray(CHUNK_BYTES)
        self.view = memoryview(self.buffer)
        self.used = 0
        self.pending: list[torch.Tensor] = []  # pieces read, not yet described
        self.owners: list[int] = []  # the tensor each piece belongs to, pending and done
        self.tables: list[_C.StatsTable] = []
        self.progress = progress
        self.bytes_read = 0

    def add_tensor(self, index: int, tensor: torch.Tensor) -> None:
        self.pending.append(tensor)
        self.owners.append(index)

    def read_file(self, path: str, entries: list[tuple[int, TensorEntry]]) -> list[int]:
        """Read the entries of one file (in offset order); returns those torch cannot read."""
        unreadable = []
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise CheckpointError(path, error.strerror or str(error)) from None
        try:
            for index, entry in entries:
                dtype = _TORCH_DTYPES.get(entry.dtype)
                numel = torch.Size(entry.shape).numel()
                if dtype is None or dtype.itemsize * numel != entry.nbytes:
                    # Nothing torch can read: the row counts the elements.
                    self.add_tensor(index, torch.empty(numel, device="meta"))
                    unreadable.append(index)
                else:
                    self._read(descriptor, path, index, entry.offset, dtype, numel)
        finally:
            os.close(descriptor)
        return unreadable

    def _read(
        self, descriptor: int, path: str, index: int, position: int, dtype: torch.dtype, numel: int
    ) -> None:
        """Read one tensor into the buffer, in pieces where it does not fit."""
        if numel == 0:
            self.add_tensor(index, torch.empty(0, dtype=dtype))
            return
        remaining = numel
        while remaining:
            start = -(-self.used // _ALIGNMENT) * _ALIGNMENT
            count = min(remaining, max(0, CHUNK_BYTES - start) // dtype.itemsize)
            if count == 0:
                self._describe_pending()
                continue
            nbytes = count * dtype.itemsize
            try:
                got = os.preadv(descriptor, [self.view[start : start + nbytes]], position)
            except OSError as error:
                raise CheckpointError(path, error.strerror or str(error)) from None
            if got != nbytes:
                raise CheckpointError(
                    path,
                    f"truncated: tensor data ends at byte {position + got:,}, "
                    f"its header says {position + nbytes:,}",
                )
            piece = torch.frombuffer(self.buffer, dtype=dtype, count=count, offset=start)
            self.add_tensor(index, piece)
            self.used = start + nbytes
            position += nbytes
            remaining -= count

    def _describe_pending(self) -> None:
        if self.pending:
            self.tables.append(_C.tensor_stats(self.pending))
            read = sum(piece.nbytes for piece in self.pending if piece.device.type != "meta")
            self.pending = []  # the pieces view the buffer, which is reused from here on
            self.bytes_read += read
            if self.progress is not None:
                self.progress(read)
        self.used = 0

    def finish(self, count: int) -> _C.StatsTable:
        """One row per tensor, in the checkpoint's order."""
        self._describe_pending()
        pieces: list[list[int]] = [[] for _ in range(count)]
        for row, owner in enumerate(self.owners):
            pieces[owner].append(row)
        return _C.StatsTable.concatenated(self.tables).grouped(pieces)


__all__ = ["CHUNK_BYTES", "checkpoint_stats"]
