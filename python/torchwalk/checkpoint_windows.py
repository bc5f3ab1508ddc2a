"""Reading a checkpoint's tensors in bounded memory: windows of files mapped, DCP loaded by name.

A tensor of a ``.safetensors`` file is read as :class:`Piece` s: runs of
whole elements that lie one after the other in the file. The pieces of a
:func:`window` are mapped together (:func:`mapped`) as tensors over the page
cache, nothing copied, and unmapped when the caller is done with them, so
that what is held at once is bounded by the window, not by the file.
:func:`load_distributed` loads named tensors of a distributed checkpoint,
whole (that format gives no smaller unit).

The statistics (:mod:`torchwalk.checkpoint_stats`) and the comparison
(:mod:`torchwalk.diff`) both read checkpoints through these.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, NamedTuple

import torch

from torchwalk.checkpoint_entries import CheckpointError, TensorEntry

TORCH_DTYPES = {
    str(dtype): dtype
    for dtype in vars(torch).values()
    if isinstance(dtype, torch.dtype) and dtype.itemsize > 0
}
"""torch's dtypes by ``str(dtype)``, the name a :class:`TensorEntry` gives them."""


def readable_dtype(entry: TensorEntry) -> torch.dtype | None:
    """The dtype torch reads ``entry`` as; None where torch lacks it (``F4``, ``F6_E2M3``, ...)
    or the bytes in the file do not hold its shape's elements in it."""
    dtype = TORCH_DTYPES.get(entry.dtype)
    if dtype is None or dtype.itemsize * torch.Size(entry.shape).numel() != entry.nbytes:
        return None
    return dtype


class Piece(NamedTuple):
    """``numel`` elements of one tensor, stored one after the other from byte ``offset`` of a file.

    Attributes:
        owner (int): what the piece belongs to, in the caller's numbering.
        dtype (torch.dtype): the elements' dtype.
        offset (int): where the piece's first byte is in the file.
        numel (int): the number of elements.
    """

    owner: int
    dtype: torch.dtype
    offset: int
    numel: int

    @property
    def end(self) -> int:
        """The byte after the piece's last one."""
        return self.offset + self.numel * self.dtype.itemsize


def pieces_of(
    owner: int, entry: TensorEntry, dtype: torch.dtype, first: int, count: int, limit: int
) -> list[Piece]:
    """Elements ``[first, first + count)`` of ``entry`` as pieces of at most ``limit`` bytes
    (at least one element each)."""
    per_piece = max(1, limit // dtype.itemsize)
    return [
        Piece(
            owner,
            dtype,
            entry.offset + start * dtype.itemsize,
            min(per_piece, first + count - start),
        )
        for start in range(first, first + count, per_piece)
    ]


def windows(pieces: Sequence[Piece], limit: int) -> Iterator[list[Piece]]:
    """``pieces`` (of one file) in offset order, in runs that span at most ``limit`` bytes each
    (or one piece, if that is larger)."""
    window: list[Piece] = []
    for piece in sorted(pieces, key=lambda piece: piece.offset):
        if window and piece.end - window[0].offset > limit:
            yield window
            window = []
        window.append(piece)
    if window:
        yield window


def open_for_reading(path: str) -> BinaryIO:
    """``path`` opened for binary reading.

    Raises:
        CheckpointError: if it cannot be opened, naming it.
    """
    try:
        return open(path, "rb")
    except OSError as error:
        raise CheckpointError(path, error.strerror or str(error)) from None


@contextmanager
def mapped(file: BinaryIO, path: str, window: Sequence[Piece]) -> Iterator[list[torch.Tensor]]:
    """The pieces of ``window`` as 1-D tensors over one map of ``file``'s bytes, in order.

    Mapped, not copied: whoever reads the tensors reads the page cache in
    place. Private and writable only because ``torch.frombuffer`` wants a
    writable buffer; nothing writes to it. The map is closed on exit, after
    the list yielded is emptied; the caller must hold no other reference to
    the tensors by then.

    Raises:
        CheckpointError: if the file is shorter than the pieces say, or cannot be mapped.
    """
    size = os.fstat(file.fileno()).st_size
    end = max(piece.end for piece in window)
    if end > size:
        raise CheckpointError(
            path, f"truncated: {size:,} bytes, where its header places data up to byte {end:,}"
        )
    begin = window[0].offset // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(
            file.fileno(),
            end - begin,
            flags=mmap.MAP_PRIVATE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=begin,
        )
    except OSError as error:
        raise CheckpointError(path, error.strerror or str(error)) from None
    tensors = [
        torch.frombuffer(mapping, dtype=piece.dtype, count=piece.numel, offset=piece.offset - begin)
        for piece in window
    ]
    try:
        yield tensors
    finally:
        tensors.clear()
        try:
            mapping.close()
        except BufferError:
            # A tensor over it is still referenced (a traceback in flight can
            # hold one): the map goes when the last of them is freed.
            pass


def load_distributed(path: str, entries: Sequence[tuple[str, TensorEntry]]) -> list[torch.Tensor]:
    """The named tensors of the distributed checkpoint in folder ``path``, loaded whole, in order.

    Raises:
        CheckpointError: if its data cannot be loaded.
    """
    from torch.distributed.checkpoint.state_dict_loader import load

    batch = {
        name: torch.empty(entry.shape, dtype=TORCH_DTYPES[entry.dtype]) for name, entry in entries
    }
    try:
        load(batch, checkpoint_id=path, no_dist=True)
    except Exception as error:  # whatever a damaged checkpoint makes it raise
        raise CheckpointError(path, f"cannot load its data: {error}") from error
    return list(batch.values())


__all__ = [
    "TORCH_DTYPES",
    "Piece",
    "load_distributed",
    "mapped",
    "open_for_reading",
    "pieces_of",
    "readable_dtype",
    "windows",
]
