"""What a checkpoint holds, as torchwalk reads it: names mapped to tensors or to header entries.

:class:`Checkpoint` is what opening any checkpoint gives (see
:mod:`torchwalk.checkpoints`): a ``dict`` from dotted names to tensors (a
``torch.save`` file, memory-mapped) or to :class:`TensorEntry` (what a
``.safetensors`` header or a distributed checkpoint's metadata says of a
tensor, without its data), with the files it came from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the fault."""

    def __init__(self, path: str | os.PathLike[str], fault: str) -> None:
        super().__init__(f"{os.fspath(path)}: {fault}")
        self.path = os.fspath(path)
        self.fault = fault


class TensorEntry(NamedTuple):
    """One tensor of a checkpoint, as its file's header (or metadata) describes it.

    Attributes:
        dtype (str): torch's name for the dtype where torch has it
            (``"torch.bfloat16"``), else the file's own (``"F6_E2M3"``).
        shape (tuple[int, ...]): the tensor's shape.
        nbytes (int): the bytes it takes in the file.
        file (str): the file that holds it (for a distributed checkpoint, its folder).
        offset (int): where its bytes begin in that file (-1 where the
            format keeps them elsewhere, as a distributed checkpoint does).
    """

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str
    offset: int


class Checkpoint(dict[str, "torch.Tensor | TensorEntry"]):
    """The tensors of a checkpoint by dotted name; a ``dict``, so it walks as a state dict does.

    Attributes:
        path (str): what was opened (a file or a folder).
        files (tuple of str): the files holding the tensors, in the order read.
        skipped (tuple of str): the names of entries left out because they are
            not tensors (or their key is not a str), in file order.
    """

    def __init__(
        self,
        path: str,
        tensors: Mapping[str, torch.Tensor | TensorEntry],
        files: Iterable[str] = (),
        skipped: Iterable[str] = (),
    ) -> None:
        super().__init__(tensors)
        self.path = path
        self.files = tuple(files) or (path,)
        self.skipped = tuple(skipped)

    def bytes_by_file(self) -> dict[str, int]:
        """The bytes of the tensors each file holds (header entries only; else empty)."""
        by_file: dict[str, int] = {}
        for value in self.values():
            if isinstance(value, TensorEntry):
                by_file[value.file] = by_file.get(value.file, 0) + value.nbytes
        return by_file


__all__ = ["Checkpoint", "CheckpointError", "TensorEntry"]
