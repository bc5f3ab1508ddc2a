"""What a ``.safetensors`` file holds, read from its header alone.

The format: 8 bytes, a little-endian unsigned header length ``N``; ``N``
bytes of JSON, ``{name: {"dtype": ..., "shape": [...], "data_offsets":
[begin, end]}, "__metadata__": {str: str}}``; then the data, which the
offsets index from its start. :func:`read_header` reads the header and
checks it as strictly as the safetensors library does when it loads the
file: known dtypes, offsets that cover the data exactly (no holes, no
overlaps, nothing after the last tensor), and a byte count per tensor that
its shape and dtype agree with. Python's json module parses the header; the
per-tensor checks run in C++ (``_C.safetensors_entries``), since a large
checkpoint has tens of thousands of tensors. No tensor data is read.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, NamedTuple

import torch

from torchwalk import _C
from torchwalk.checkpoint_entries import CheckpointError, TensorEntry


class SafetensorsDtype(NamedTuple):
    bits: int
    torch_dtype: torch.dtype | None  # None where torch has no such dtype (or packs it otherwise)


def _torch_dtype(name: str) -> torch.dtype | None:
    dtype = getattr(torch, name, None)
    return dtype if isinstance(dtype, torch.dtype) else None


DTYPES: dict[str, SafetensorsDtype] = {
    "BOOL": SafetensorsDtype(8, torch.bool),
    "F4": SafetensorsDtype(4, None),  # torch's float4_e2m1fn_x2 counts pairs
    "F6_E2M3": SafetensorsDtype(6, None),
    "F6_E3M2": SafetensorsDtype(6, None),
    "U8": SafetensorsDtype(8, torch.uint8),
    "I8": SafetensorsDtype(8, torch.int8),
    "F8_E5M2": SafetensorsDtype(8, _torch_dtype("float8_e5m2")),
    "F8_E4M3": SafetensorsDtype(8, _torch_dtype("float8_e4m3fn")),
    "F8_E5M2FNUZ": SafetensorsDtype(8, _torch_dtype("float8_e5m2fnuz")),
    "F8_E4M3FNUZ": SafetensorsDtype(8, _torch_dtype("float8_e4m3fnuz")),
    "F8_E8M0": SafetensorsDtype(8, _torch_dtype("float8_e8m0fnu")),
    "I16": SafetensorsDtype(16, torch.int16),
    "U16": SafetensorsDtype(16, _torch_dtype("uint16")),
    "F16": SafetensorsDtype(16, torch.float16),
    "BF16": SafetensorsDtype(16, torch.bfloat16),
    "I32": SafetensorsDtype(32, torch.int32),
    "U32": SafetensorsDtype(32, _torch_dtype("uint32")),
    "F32": SafetensorsDtype(32, torch.float32),
    "C64": SafetensorsDtype(64, torch.complex64),
    "F64": SafetensorsDtype(64, torch.float64),
    "I64": SafetensorsDtype(64, torch.int64),
    "U64": SafetensorsDtype(64, _torch_dtype("uint64")),
}
"""Every dtype the format names: its bits per element, and the torch dtype that holds it."""

DTYPE_KEYS = {
    name: str(dtype.torch_dtype) if dtype.torch_dtype is not None else name
    for name, dtype in DTYPES.items()
}
"""The name each dtype is counted under: torch's where torch has it, else the file's."""

_DTYPE_TABLE = {name: (dtype.bits, DTYPE_KEYS[name]) for name, dtype in DTYPES.items()}
"""What the C++ check reads of each dtype: (bits per element, the name it is counted under)."""

MAX_HEADER_BYTES = 100_000_000
"""The largest header the safetensors library accepts."""


class SafetensorsHeader(NamedTuple):
    """A parsed header: the tensors by name (in name order), and the free-form metadata."""

    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int  # where the data begins in the file


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and check the header of a ``.safetensors`` file.

    Args:
        path (str or os.PathLike): the file.

    Returns:
        SafetensorsHeader: its tensors, by name in header order, and metadata.

    Raises:
        CheckpointError: if the file is missing, truncated, or its header is
            not what the format allows; the message says which and where.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            prefix = file.read(8)
            if len(prefix) < 8:
                raise CheckpointError(path, f"truncated: {file_size} bytes, no header length")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > MAX_HEADER_BYTES:
                raise CheckpointError(
                    path,
                    f"header length {header_size:,} exceeds the {MAX_HEADER_BYTES:,} bytes "
                    "safetensors allows (not a .safetensors file?)",
                )
            if 8 + header_size > file_size:
                raise CheckpointError(
                    path,
                    f"truncated header: it says {header_size:,} bytes, the file has "
                    f"{file_size - 8:,} after the length",
                )
            text = file.read(header_size)
    except OSError as error:
        raise CheckpointError(path, error.strerror or str(error)) from None
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, f"header is a JSON {type(header).__name__}, not an object")
    data_start = 8 + header_size
    metadata = _metadata(path, header.pop("__metadata__", {}))
    try:
        entries = _C.safetensors_entries(
            header, path, data_start, file_size - data_start, _DTYPE_TABLE, TensorEntry
        )
    except ValueError as error:
        raise CheckpointError(path, str(error)) from None
    return SafetensorsHeader(dict(entries), metadata, data_start)


def _metadata(path: str, metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise CheckpointError(path, "__metadata__ must map str to str")
    return metadata


__all__ = ["DTYPES", "DTYPE_KEYS", "SafetensorsHeader", "read_header"]
