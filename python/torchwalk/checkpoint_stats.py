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

import mmap
import os
from collections.abc import Callable

import torch

from torchwalk import _C
from torchwalk.checkpoint_entries import Checkpoint, CheckpointError, TensorEntry
from torchwalk.value_stats import Stats

CHUNK_BYTES = 64 * 1024**2
"""The most of a file mapped at once (a window)."""

_TORCH_DTYPES = {
    str(dtype): dtype
    for dtype in vars(torch).values()
    if isinstance(dtype, torch.dtype) and dtype.itemsize > 0
}


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
        """Read the entries of one file (in offset order); returns those torch cannot read."""
        unreadable = []
        pieces: list[tuple[int, torch.dtype, int, int]] = []  # (tensor, dtype, offset, count)
        for index, entry in entries:
            dtype = _TORCH_DTYPES.get(entry.dtype)
            numel = torch.Size(entry.shape).numel()
            if dtype is None or dtype.itemsize * numel != entry.nbytes:
                # Nothing torch can read: the row counts the elements.
                self.add_tensor(index, torch.empty(numel, device="meta"))
                unreadable.append(index)
            elif numel == 0:
                self.add_tensor(index, torch.empty(0, dtype=dtype))
            else:
                per_piece = max(1, CHUNK_BYTES // dtype.itemsize)
                for first in range(0, numel, per_piece):
                    count = min(per_piece, numel - first)
                    pieces.append((index, dtype, entry.offset + first * dtype.itemsize, count))
        self._describe_pending()
        try:
            with open(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                window: list[tuple[int, torch.dtype, int, int]] = []
                for piece in pieces:
                    _, dtype, offset, count = piece
                    if offset + count * dtype.itemsize > size:
                        raise CheckpointError(
                            path,
                            f"truncated: {size:,} bytes, where its header places data up to "
                            f"byte {offset + count * dtype.itemsize:,}",
                        )
                    if window and _end(piece) - window[0][2] > CHUNK_BYTES:
                        self._read_window(file.fileno(), window)
                        window = []
                    window.append(piece)
                if window:
                    self._read_window(file.fileno(), window)
        except OSError as error:
            raise CheckpointError(path, error.strerror or str(error)) from None
        return unreadable

    def _read_window(
        self, descriptor: int, window: list[tuple[int, torch.dtype, int, int]]
    ) -> None:
        """Map the bytes of ``window``'s pieces, describe them, unmap them.

        Mapped, not copied: the kernels read the page cache in place. Private
        and writable only because torch.frombuffer wants a writable buffer;
        nothing writes to it.
        """
        begin = window[0][2] // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
        length = _end(window[-1]) - begin
        mapped = mmap.mmap(
            descriptor,
            length,
            flags=mmap.MAP_PRIVATE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=begin,
        )
        try:
            for index, dtype, offset, count in window:
                self.add_tensor(
                    index, torch.frombuffer(mapped, dtype=dtype, count=count, offset=offset - begin)
                )
            self._describe_pending()
        finally:
            self.pending = []
            mapped.close()  # the pieces are gone: nothing exports the mapping any more
        if self.progress is not None:
            self.progress(sum(count * dtype.itemsize for _, dtype, _, count in window))

    def load_distributed(self, path: str, entries: list[tuple[int, str, TensorEntry]]) -> None:
        """Load a distributed checkpoint's tensors a batch of about a window's bytes at a time.

        torch.distributed.checkpoint loads into tensors it is given, whole: a
        tensor larger than a window is loaded alone, so the memory held is
        the larger of a window and the largest tensor.
        """
        from torch.distributed.checkpoint.state_dict_loader import load as load_distributed

        batch: dict[str, torch.Tensor] = {}
        owners: list[int] = []
        held = 0

        def load() -> None:
            try:
                load_distributed(batch, checkpoint_id=path, no_dist=True)
            except Exception as error:  # whatever a damaged checkpoint makes it raise
                raise CheckpointError(path, f"cannot load its data: {error}") from error
            for index, tensor in zip(owners, batch.values(), strict=True):
                self.add_tensor(index, tensor)
            self._describe_pending()
            if self.progress is not None:
                self.progress(held)

        for index, name, entry in entries:
            if batch and held + entry.nbytes > CHUNK_BYTES:
                load()
                batch, owners, held = {}, [], 0
            batch[name] = torch.empty(entry.shape, dtype=_TORCH_DTYPES[entry.dtype])
            owners.append(index)
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


def _end(piece: tuple[int, torch.dtype, int, int]) -> int:
    _, dtype, offset, count = piece
    return offset + count * dtype.itemsize


__all__ = ["CHUNK_BYTES", "checkpoint_stats"]
