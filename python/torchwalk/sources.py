"""What the command line walks: a built-in model, a model factory or a checkpoint.

A source is named by one string:

- a built-in model, one of :func:`torchwalk.zoo.names` (``seed``, ``gpt2``,
  ``llama-7b``, ``deepseek-v3``, ...);
- ``package.module:callable``, imported and called with no arguments, which
  must return an ``nn.Module``;
- a path to a checkpoint: a file, an index, a folder of shards, a
  distributed checkpoint or a transformers config, as
  :func:`torchwalk.checkpoints.open_checkpoint` opens them (headers only,
  or memory-mapped: never read whole).

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
from typing import Any

import torch
from torch import nn

from torchwalk import zoo
from torchwalk.checkpoint_entries import Checkpoint
from torchwalk.checkpoints import CHECKPOINT_SUFFIXES, describe_error, open_checkpoint

Device = torch.device | str

DEFAULT_SOURCE = "llama-7b"
"""The source used when none is named: the 7B Llama-shaped model, on meta."""


class SourceError(Exception):
    """A source that cannot be loaded; the message is one line that names the source."""


def load_source(
    text: str | None,
    *,
    device: Device = "meta",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> nn.Module | Checkpoint:
    """Load the model or checkpoint that ``text`` names.

    ``text`` is tried, in this order, as a built-in model name,
    ``package.module:callable`` (when no such path exists), and a checkpoint
    path, opened by :func:`torchwalk.checkpoints.open_checkpoint` (a file, an
    index, a folder, a distributed checkpoint, a transformers config). A
    path whose name is also a built-in model's needs a ``./``.

    Args:
        text (str, optional): the source. ``None`` means :data:`DEFAULT_SOURCE`.
        device (torch.device or str): where built models live (built-in ones and
            those a callable makes, which is called inside ``with
            torch.device(device)``). Default: ``"meta"``, which allocates no
            memory. Checkpoints ignore it: they are read from their headers,
            or memory-mapped on the CPU.
        allow_pickle (bool): read a distributed checkpoint's pickled metadata.
        trust_remote_code (bool): let transformers run a config's own code.

    Returns:
        nn.Module or Checkpoint: the model, or the tensors of a checkpoint.

    Raises:
        SourceError: if a built-in model or a callable cannot be loaded (unknown
            name, module that does not import, missing attribute, callable that
            raises or returns something else than an ``nn.Module``).
        CheckpointError: if a path holds no readable checkpoint. Either
            message is one line.
    """
    source = DEFAULT_SOURCE if text is None else text
    if source in zoo.names():
        return zoo.build(source, device)
    if ":" in source and not os.path.exists(source):
        return _build_from_factory(source, device)
    if not os.path.exists(source) and not _looks_like_a_path(source):
        raise SourceError(
            f"cannot load {source!r}: not a built-in model ({', '.join(zoo.names())}), "
            "a package.module:callable or an existing checkpoint"
        )
    return open_checkpoint(source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)


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
            f"cannot load {source!r}: importing {module_name!r} raised {describe_error(error)}"
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
            f"cannot load {source!r}: {attribute_path}() raised {describe_error(error)}"
        ) from error
    if not isinstance(built, nn.Module):
        raise SourceError(
            f"cannot load {source!r}: {attribute_path}() returned a {type(built).__name__}, "
            "not an nn.Module"
        )
    return built


def _looks_like_a_path(source: str) -> bool:
    """A missing source that was meant as a path: it names a folder or a checkpoint's suffix."""
    return os.sep in source or source.endswith(CHECKPOINT_SUFFIXES)
