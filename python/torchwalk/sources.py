"""What the command line walks: a built-in model, a model factory or a checkpoint file.

A source is named by one string:

- a built-in model, one of :func:`torchwalk.zoo.names` (``seed``, ``gpt2``,
  ``llama-7b``, ``deepseek-v3``, ...);
- ``package.module:callable``, imported and called with no arguments, which
  must return an ``nn.Module``;
- a checkpoint file: ``.pt``, ``.pth`` or ``.bin`` in ``torch.save``'s zip
  format, or ``.safetensors``. Both are memory-mapped, never read whole.

::

    >>> from torchwalk.sources import load_source
    >>> load_source("seed")
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=1, bias=True)
    )
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from torchwalk import zoo

Device = torch.device | str

DEFAULT_SOURCE = "llama-7b"
"""The source used when none is named: the 7B Llama-shaped model, on meta."""

TORCH_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin")
"""File suffixes opened with ``torch.load``."""

SAFETENSORS_SUFFIX = ".safetensors"
"""The file suffix opened with ``safetensors``."""

STATE_DICT_KEYS = ("state_dict", "model", "module")
"""Keys under which training checkpoints nest the state dict, tried in this order.

``state_dict`` is PyTorch Lightning's, ``model`` the common hand-written
``{"model": ..., "optimizer": ...}``, ``module`` DeepSpeed's.
"""

MAX_NESTING = 3
"""How many :data:`STATE_DICT_KEYS` levels deep a state dict is looked for."""


class SourceError(Exception):
    """A source that cannot be loaded; the message is one line that names the source."""


class Checkpoint(dict[str, torch.Tensor]):
    """The tensors of a checkpoint file by dotted name, and the entries that were not tensors.

    A ``dict``, so it is walked as any state dict is.

    Attributes:
        path (str): the file.
        skipped (tuple of str): the names of the state dict's entries that were
            left out because they are not tensors (or their key is not a str),
            in file order.
    """

    def __init__(
        self, path: str, tensors: Mapping[str, torch.Tensor], skipped: Iterable[str] = ()
    ) -> None:
        super().__init__(tensors)
        self.path = path
        self.skipped = tuple(skipped)


def load_source(text: str | None, *, device: Device = "meta") -> nn.Module | Checkpoint:
    """Load the model or checkpoint that ``text`` names.

    ``text`` is tried, in this order, as a built-in model name, a checkpoint
    file (by its suffix: ``.pt``, ``.pth``, ``.bin``, ``.safetensors``),
    ``package.module:callable``, and finally as any existing file, which is
    opened with ``torch.load`` (e.g. Lightning's ``.ckpt``). A file whose name
    is also a built-in model's needs a path: ``./gpt2``.

    Args:
        text (str, optional): the source. ``None`` means :data:`DEFAULT_SOURCE`.
        device (torch.device or str): where built models live (built-in ones and
            those a callable makes, which is called inside ``with
            torch.device(device)``). Default: ``"meta"``, which allocates no
            memory. Checkpoints ignore it: their tensors stay memory-mapped on
            the CPU, so that tensors sharing a storage in the file still share it.

    Returns:
        nn.Module or Checkpoint: the model, or the tensors of a checkpoint (a
        ``dict`` of dotted names to tensors, found also when nested under
        :data:`STATE_DICT_KEYS`) with the names of the non-tensor entries it
        left out in ``skipped``.

    Raises:
        SourceError: if the source cannot be loaded, for whatever reason (unknown
            name, module that does not import, missing attribute, callable that
            raises or returns something else than an ``nn.Module``, missing
            file, file that is not a checkpoint or that ``torch.load(...,
            weights_only=True)`` refuses). The message is one line.
    """
    source = DEFAULT_SOURCE if text is None else text
    if source in zoo.names():
        return zoo.build(source, device)
    suffix = os.path.splitext(source)[1].lower()
    if suffix in TORCH_CHECKPOINT_SUFFIXES:
        return _load_torch_checkpoint(source)
    if suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(source)
    if ":" in source and not os.path.exists(source):
        return _build_from_factory(source, device)
    if os.path.isfile(source):
        return _load_torch_checkpoint(source)
    raise SourceError(
        f"cannot load {source!r}: not a built-in model ({', '.join(zoo.names())}), "
        "a package.module:callable or an existing checkpoint file"
    )


def _build_from_factory(source: str, device: Device) -> nn.Module:
    """Import ``package.module``, call ``callable()`` under ``torch.device(device)``, check it.

    The callable may be a dotted path inside the module (``module:Class.create``).
    An attribute that already is an ``nn.Module`` is returned as it is: calling
    it would run its ``forward``.
    """
    module_name, _, attribute_path = source.partition(":")
    if not module_name or not attribute_path:
        raise SourceError(f"cannot load {source!r}: expected package.module:callable")
    try:
        factory: Any = importlib.import_module(module_name)
    except Exception as error:  # the user's module runs: it may raise anything
        raise SourceError(
            f"cannot load {source!r}: importing {module_name!r} raised {_describe(error)}"
        ) from error
    for attribute in attribute_path.split("."):
        try:
            factory = getattr(factory, attribute)
        except AttributeError:
            raise SourceError(
                f"cannot load {source!r}: "
                f"module {module_name!r} has no attribute {attribute_path!r}"
            ) from None
    if isinstance(factory, nn.Module):
        return factory
    if not callable(factory):
        raise SourceError(
            f"cannot load {source!r}: {attribute_path} is not callable "
            f"({type(factory).__name__!r} object)"
        )
    try:
        with torch.device(device):
            built = factory()
    except Exception as error:  # the user's code: anything it raises is about this source
        raise SourceError(
            f"cannot load {source!r}: {attribute_path}() raised {_describe(error)}"
        ) from error
    if not isinstance(built, nn.Module):
        raise SourceError(
            f"cannot load {source!r}: {attribute_path}() returned a {type(built).__name__}, "
            "not an nn.Module"
        )
    return built


def _load_torch_checkpoint(path: str) -> Checkpoint:
    """Memory-map a ``torch.save`` file with ``weights_only=True`` and find its state dict."""
    _check_is_file(path)
    # torch.load(mmap=True) accepts only the zip format; saying so beats its
    # message, which blames the file's name on torch.save.
    if not zipfile.is_zipfile(path):
        raise SourceError(
            f"cannot load {path!r}: not a checkpoint in torch.save's zip format "
            "(the only one that can be memory-mapped)"
        )
    try:
        loaded = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise SourceError(
            f"cannot load {path!r}: torch.load(weights_only=True) refuses it: {_refusal(error)}"
        ) from error
    except Exception as error:  # the file's contents decide what torch.load raises
        raise SourceError(f"cannot load {path!r}: torch.load raised {_describe(error)}") from error
    if not isinstance(loaded, Mapping):
        raise SourceError(
            f"cannot load {path!r}: it holds a {type(loaded).__name__}, not a state dict"
        )
    state_dict = _find_state_dict(loaded, MAX_NESTING)
    if state_dict is None:
        raise SourceError(f"cannot load {path!r}: it holds no tensors")
    tensors: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for name, value in state_dict.items():
        if isinstance(name, str) and isinstance(value, torch.Tensor):
            tensors[name] = value
        else:
            skipped.append(str(name))
    return Checkpoint(path, tensors, skipped)


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


def _load_safetensors(path: str) -> Checkpoint:
    """Memory-map a ``.safetensors`` file (every entry of which is a tensor)."""
    _check_is_file(path)
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise SourceError(
            f"cannot load {path!r}: reading .safetensors needs the safetensors package "
            "(pip install safetensors)"
        ) from None
    try:
        tensors = load_file(path)  # memory-mapped: no tensor's bytes are read here
    except Exception as error:  # SafetensorError and whatever else a bad file causes
        raise SourceError(
            f"cannot load {path!r}: not a safetensors file: {_describe(error)}"
        ) from error
    return Checkpoint(path, tensors)


def _check_is_file(path: str) -> None:
    """Raise :class:`SourceError` unless ``path`` is an existing file."""
    if not os.path.exists(path):
        raise SourceError(f"cannot load {path!r}: no such file")
    if not os.path.isfile(path):
        raise SourceError(f"cannot load {path!r}: not a file")


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
    return _describe(error)


def _describe(error: BaseException) -> str:
    """``error`` as ``Type: first line of its message``, for a one-line report."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
