"""Opening checkpoints as people hold them: files, index files, folders, DCP, configs.

:func:`open_checkpoint` takes a path to

- one file: ``.safetensors`` (its header is read, no data), or ``.pt``,
  ``.pth``, ``.bin`` in ``torch.save``'s zip format (memory-mapped with
  ``weights_only=True``: no data is read);
- an index, ``*.safetensors.index.json`` or ``*.bin.index.json``: the shards
  its ``weight_map`` names, relative to its folder, checked against it;
- a folder holding such an index (the safetensors one when both are
  there), else its ``.safetensors`` files, all of them in name order;
- a ``torch.distributed.checkpoint`` folder (it holds ``.metadata``, a
  pickle: read only with ``allow_pickle=True``);
- a transformers model's ``config.json``, or a folder holding one and no
  weights: the model built from it on the meta device.

It returns a :class:`~torchwalk.checkpoint_entries.Checkpoint` (names to
tensors or header entries), or the ``nn.Module`` built from a config. A
source that cannot be read raises
:class:`~torchwalk.checkpoint_entries.CheckpointError` naming the file and
the fault.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from torchwalk.checkpoint_entries import Checkpoint, CheckpointError, TensorEntry
from torchwalk.safetensors_header import read_header

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
DCP_METADATA = ".metadata"
CONFIG_NAME = "config.json"
CHECKPOINT_SUFFIXES = (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES, *INDEX_SUFFIXES, CONFIG_NAME)
"""The names a checkpoint file ends with."""

STATE_DICT_KEYS = ("state_dict", "model", "module")
"""Keys under which training checkpoints nest the state dict, tried in this order.

``state_dict`` is PyTorch Lightning's, ``model`` the common hand-written
``{"model": ..., "optimizer": ...}``, ``module`` DeepSpeed's.
"""

MAX_NESTING = 3
"""How many :data:`STATE_DICT_KEYS` levels deep a state dict is looked for."""


def is_path(source: object) -> bool:
    """Whether ``source`` names a path (``str`` or ``os.PathLike``)."""
    return isinstance(source, (str, os.PathLike))


def open_checkpoint(
    path: str | os.PathLike[str], *, allow_pickle: bool = False, trust_remote_code: bool = False
) -> Checkpoint | nn.Module:
    """Open the checkpoint at ``path`` (see the module's docstring for what it may be).

    Args:
        path (str or os.PathLike): a file or a folder.
        allow_pickle (bool): read a distributed checkpoint's ``.metadata``,
            which is a pickle (unpickling runs code the file names). Default: ``False``.
        trust_remote_code (bool): let transformers run a config's own model
            code. Default: ``False``.

    Returns:
        Checkpoint or nn.Module: the tensors by name (header entries, or
        memory-mapped tensors for ``torch.save`` files), or the model a config
        describes, built on the meta device.

    Raises:
        CheckpointError: if the path is missing or holds no checkpoint, or
            the checkpoint is inconsistent or damaged.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _open_folder(path, allow_pickle, trust_remote_code)
    if not os.path.exists(path):
        raise CheckpointError(path, "no such file or directory")
    name = os.path.basename(path)
    if name.endswith(INDEX_SUFFIXES):
        return _open_index(path)
    if name == CONFIG_NAME:
        return _build_from_config(os.path.dirname(path) or ".", trust_remote_code)
    if name.endswith(SAFETENSORS_SUFFIX):
        return _open_safetensors(path, [path])
    if name.endswith(TORCH_SUFFIXES) or zipfile.is_zipfile(path):
        return _open_torch_file(path)  # also what trainers name .ckpt, .tar, ...
    raise CheckpointError(
        path,
        "unknown format: not .safetensors, an index (.safetensors.index.json, "
        ".bin.index.json) or config.json, and not in torch.save's zip format",
    )


# -- folders ----------------------------------------------------------------------------------


def _open_folder(path: str, allow_pickle: bool, trust_remote_code: bool) -> Checkpoint | nn.Module:
    for suffix in INDEX_SUFFIXES:
        indexes = sorted(glob.glob(os.path.join(glob.escape(path), "*" + suffix)))
        if len(indexes) > 1:
            raise CheckpointError(path, f"holds several indexes: {', '.join(indexes)}")
        if indexes:
            return _open_index(indexes[0])
    shards = sorted(glob.glob(os.path.join(glob.escape(path), "*" + SAFETENSORS_SUFFIX)))
    if shards:
        return _open_safetensors(path, shards)
    if os.path.isfile(os.path.join(path, DCP_METADATA)):
        return _open_distributed(path, allow_pickle)
    if os.path.isfile(os.path.join(path, CONFIG_NAME)):
        return _build_from_config(path, trust_remote_code)
    raise CheckpointError(
        path,
        "holds no checkpoint: no index, no .safetensors file, no .metadata "
        "(distributed checkpoint) and no config.json",
    )


def _open_safetensors(path: str, shards: list[str]) -> Checkpoint:
    """The tensors of ``.safetensors`` shards, each name in one shard only."""
    entries: dict[str, TensorEntry] = {}
    for shard in shards:
        for name, entry in read_header(shard).entries.items():
            if name in entries:
                raise CheckpointError(
                    shard, f"holds {name!r}, which {entries[name].file} holds too"
                )
            entries[name] = entry
    return Checkpoint(path, entries, shards)


def _open_index(path: str) -> Checkpoint:
    """The shards an index names, checked against it both ways."""
    weight_map = _read_weight_map(path)
    folder = os.path.dirname(path)
    shards: dict[str, str] = {}  # as the index names it -> the path
    for shard in weight_map.values():
        if shard not in shards:
            shard_path = os.path.join(folder, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(path, f"names shard {shard!r}, which is missing")
            shards[shard] = shard_path
    held: dict[str, dict[str, torch.Tensor | TensorEntry]] = {}
    for shard, shard_path in shards.items():
        if shard.endswith(SAFETENSORS_SUFFIX):
            held[shard] = dict(read_header(shard_path).entries)
        else:
            held[shard] = dict(_open_torch_file(shard_path))
    tensors: dict[str, torch.Tensor | TensorEntry] = {}
    for name, shard in weight_map.items():
        in_shard = held[shard]
        if name not in in_shard:
            raise CheckpointError(shards[shard], f"lacks {name!r}, which {path} places there")
        tensors[name] = in_shard[name]
    # Each name the index places was found where it says; with as many
    # tensors in the shards as names in the index, there is no other.
    if sum(len(names) for names in held.values()) != len(weight_map):
        for shard, names in held.items():
            for name in names:
                if weight_map.get(name) != shard:
                    where = (
                        f"places it in {weight_map[name]}"
                        if name in weight_map
                        else "does not name it"
                    )
                    raise CheckpointError(shards[shard], f"holds {name!r}, but {path} {where}")
    return Checkpoint(path, tensors, shards.values())


def _read_weight_map(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as file:
            index = json.load(file)
    except OSError as error:
        raise CheckpointError(path, error.strerror or str(error)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"not valid JSON ({error})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(name, str) and isinstance(shard, str) for name, shard in weight_map.items()
    ):
        raise CheckpointError(path, 'expected {"weight_map": {tensor name: shard file}}')
    for shard in set(weight_map.values()):
        if os.path.isabs(shard) or os.pardir in shard.split("/"):
            raise CheckpointError(path, f"names shard {shard!r} outside its folder")
    return weight_map


# -- torch.save files -------------------------------------------------------------------------


def _open_torch_file(path: str) -> Checkpoint:
    """Memory-map a ``torch.save`` file with ``weights_only=True`` and find its state dict."""
    # torch.load(mmap=True) accepts only the zip format; saying so beats its
    # message, which blames the file's name on torch.save.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            path, "not in torch.save's zip format (the only one that can be memory-mapped)"
        )
    try:
        loaded = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            path, f"torch.load(weights_only=True) refuses it: {_refusal(error)}"
        ) from error
    except Exception as error:  # the file's contents decide what torch.load raises
        raise CheckpointError(path, f"torch.load raised {describe_error(error)}") from error
    if not isinstance(loaded, Mapping):
        raise CheckpointError(path, f"holds a {type(loaded).__name__}, not a state dict")
    state_dict = _find_state_dict(loaded, MAX_NESTING)
    if state_dict is None:
        raise CheckpointError(path, "holds no tensors")
    tensors: dict[str, torch.Tensor | TensorEntry] = {}
    skipped: list[str] = []
    for name, value in state_dict.items():
        if isinstance(name, str) and isinstance(value, torch.Tensor):
            tensors[name] = value
        else:
            skipped.append(str(name))
    return Checkpoint(path, tensors, [path], skipped)


def _find_state_dict(candidate: Mapping[Any, Any], levels: int) -> Mapping[Any, Any] | None:
    """The state dict in ``candidate``: one nested under :data:`STATE_DICT_KEYS` (up to
    ``levels`` deep) that holds a tensor, else ``candidate`` itself if it holds one, else None.

    Nested ones come first so that a checkpoint such as ``{"model": state_dict,
    "rng_state": tensor}`` gives the model's tensors, not the wrapper's.
    """
    if levels > 0:
        for key in STATE_DICT_KEYS:
            nested = candidate.get(key)
            if isinstance(nested, Mapping):
                found = _find_state_dict(nested, levels - 1)
                if found is not None:
                    return found
    if any(isinstance(value, torch.Tensor) for value in candidate.values()):
        return candidate
    return None


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_WEIGHTS_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error: ([^\n]+)")


def _refusal(error: pickle.UnpicklingError) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words.

    Its message is a dozen lines of advice; the line that matters names the
    object it would not unpickle.
    """
    message = str(error)
    unsupported = _UNSUPPORTED_GLOBAL.search(message)
    if unsupported:
        return f"{unsupported.group(1)} is not a tensor or a plain container"
    unpickler_error = _WEIGHTS_UNPICKLER_ERROR.search(message)
    if unpickler_error:
        return unpickler_error.group(1).strip()
    return describe_error(error)


def describe_error(error: BaseException) -> str:
    """``error`` as ``Type: first line of its message``, for a one-line report."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


# -- distributed checkpoints ------------------------------------------------------------------


def _open_distributed(path: str, allow_pickle: bool) -> Checkpoint:
    """The tensors a ``torch.distributed.checkpoint`` folder records, with their global shapes."""
    metadata_path = os.path.join(path, DCP_METADATA)
    if not allow_pickle:
        raise CheckpointError(
            metadata_path,
            "a distributed checkpoint's metadata is a pickle, which can run code when read: "
            "pass allow_pickle=True (command line: --allow-pickle) if you trust it",
        )
    try:
        from torch.distributed.checkpoint.filesystem import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        metadata = FileSystemReader(path).read_metadata()
    except Exception as error:  # a damaged pickle can raise anything
        raise CheckpointError(metadata_path, f"cannot be read: {describe_error(error)}") from error
    tensors: dict[str, torch.Tensor | TensorEntry] = {}
    skipped: list[str] = []
    for name, stored in metadata.state_dict_metadata.items():
        if not isinstance(stored, TensorStorageMetadata):
            skipped.append(name)  # bytes: pickled non-tensor state
            continue
        dtype = stored.properties.dtype
        shape = tuple(stored.size)
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        tensors[name] = TensorEntry(str(dtype), shape, nbytes, path, -1)
    return Checkpoint(path, tensors, [path], skipped)


# -- transformers configs ---------------------------------------------------------------------


def _build_from_config(folder: str, trust_remote_code: bool) -> nn.Module:
    """The model a transformers ``config.json`` describes, built on the meta device."""
    config_path = os.path.join(folder, CONFIG_NAME)
    try:
        import transformers
    except ImportError:
        raise CheckpointError(
            config_path, "building a model from its config needs transformers"
        ) from None
    try:
        config = transformers.AutoConfig.from_pretrained(
            folder, trust_remote_code=trust_remote_code
        )
    except Exception as error:  # transformers' own messages say what is wrong
        raise CheckpointError(config_path, describe_error(error)) from error
    architectures = getattr(config, "architectures", None) or []
    model_class = next(
        (getattr(transformers, name) for name in architectures if hasattr(transformers, name)),
        None,
    )
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    try:
        with torch.device("meta"):
            if model_class is None:
                model = transformers.AutoModel.from_config(  # type: ignore[no-untyped-call]
                    config, trust_remote_code=trust_remote_code
                )
            else:
                model = model_class(config)
    except Exception as error:  # a config transformers cannot build
        raise CheckpointError(
            config_path, f"cannot build the model: {describe_error(error)}"
        ) from error
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    built: nn.Module = model
    return built


__all__ = ["CHECKPOINT_SUFFIXES", "describe_error", "is_path", "open_checkpoint"]
