"""Walk once, use many ways: :func:`walk` and the :class:`ParamTree` snapshot.

The walk runs in C++ and keeps flat records (module positions, the tensors
held at each, their storage keys and byte ranges, per-module figures), from
which the views, the ties, the summary and the drawing are read without
walking the model again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from torchwalk import _C
from torchwalk.checkpoint_entries import Checkpoint, TensorEntry
from torchwalk.checkpoint_stats import checkpoint_stats
from torchwalk.checkpoints import is_path, open_checkpoint
from torchwalk.drawing import render_records
from torchwalk.dropin import named_parameters
from torchwalk.gc_pause import gc_paused
from torchwalk.sharded import sharded_tensor_class
from torchwalk.summary_table import Summary, summarize
from torchwalk.tie_groups import TieGroup
from torchwalk.value_stats import Stats, stats_of_members

Source = nn.Module | Mapping[str, torch.Tensor | TensorEntry] | str | os.PathLike[str]
"""What :func:`walk` accepts: a module, dotted names mapped to tensors (a state
dict), or the path of a checkpoint (see :mod:`torchwalk.checkpoints`)."""


class ParamTree:
    """A snapshot of a module tree, taken by :func:`walk`.

    The views (``named_parameters()`` and the like, ``len``, ``tree[name]``)
    describe the tree as it was at walk time; the snapshot holds references
    to the modules and tensors it saw.
    """

    def __init__(
        self, records: _C.TreeRecords, *, modules: bool = True, checkpoint: Checkpoint | None = None
    ) -> None:
        self._records = records
        self._modules = modules  # walked from a module: its tensors know requires_grad
        self._checkpoint = checkpoint
        self._by_name: dict[str, torch.Tensor | nn.Module] | None = None

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The ``(name, parameter)`` pairs ``named_parameters()`` gave at walk time, as a list."""
        return self._records.named_parameters()

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        """The ``(name, buffer)`` pairs ``named_buffers()`` gave at walk time, as a list.

        Empty for a tree walked with ``buffers=False``.
        """
        return self._records.named_buffers()

    def named_modules(self) -> list[tuple[str, nn.Module]]:
        """The ``(name, module)`` pairs ``named_modules()`` gave at walk time, as a list.

        Empty for a tree built from a mapping, which has no module objects.
        """
        return self._records.named_modules()

    def __len__(self) -> int:
        """The number of unique leaves: distinct parameters, plus distinct buffers if walked."""
        return self._records.unique_leaf_count()

    def __getitem__(self, name: str) -> torch.Tensor | nn.Module:
        """The tensor (or, failing that, the module) at a dotted name.

        Every name a tensor can be reached by works, including the later
        names of a tied or shared tensor.

        Raises:
            KeyError: if nothing is held at ``name``.
        """
        if self._by_name is None:
            records = self._records
            by_name: dict[str, torch.Tensor | nn.Module] = {}
            for position in range(records.module_count()):
                module = records.module_object(position)
                if module is not None:
                    by_name.setdefault(records.module_path(position), module)
            # Tensors take precedence over modules of the same name (a
            # mapping can hold "a" and "a.b").
            for leaf in range(records.leaf_count()):
                by_name[records.leaf_path(leaf)] = records.leaf_tensor(leaf)
            self._by_name = by_name
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no parameter, buffer or module named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def ties(self) -> list[TieGroup]:
        """Every group of names that share memory, in walk order of their first name."""
        return [
            TieGroup(names, kind, nbytes, overcount_nbytes)
            for names, kind, nbytes, overcount_nbytes in self._records.tie_groups()
        ]

    def summary(self, depth: int | None = None) -> Summary:
        """The structural summary: rows down to ``depth`` (root 0; None: all)."""
        return summarize(
            self._records,
            depth,
            modules=self._modules,
            bytes_by_file=self._checkpoint.bytes_by_file() if self._checkpoint else None,
        )

    def stats(
        self,
        grads: bool = False,
        buffers: bool = False,
        *,
        exponents: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Stats:
        """The value statistics, all tensors read in one pass.

        Args:
            grads (bool): describe each parameter's ``.grad`` under the
                parameter's name instead (parameters without one get no row).
                Default: ``False``.
            buffers (bool): add a row per buffer (of a tree walked with
                buffers) after the parameters. Default: ``False``.
            exponents (bool): also count the binary exponents of each
                tensor's values (``TensorStats.exponents``), in the same
                pass. Default: ``False``.
            progress (callable, optional): called with the bytes read after
                each batch of tensors (see :func:`torchwalk.value_stats.compute_stats`).

        Returns:
            Stats: a row per parameter object (named as ``named_parameters()``
            names it; lazy ones left out), then per buffer. For a checkpoint
            opened from a path, a row per tensor, read from its files in
            chunks with memory bounded by a constant.

        Raises:
            ValueError: if ``grads`` is asked of a checkpoint (it holds none).
        """
        if self._checkpoint is not None:
            if grads:
                raise ValueError("a checkpoint holds no gradients: grads=True needs a module")
            return checkpoint_stats(self._checkpoint, progress=progress, exponents=exponents)
        return stats_of_members(
            self.named_parameters(),
            self.named_buffers() if buffers else [],
            grads=grads,
            progress=progress,
            exponents=exponents,
        )

    def render(self, name: str | None = None, depth: int | None = None, ascii: bool = False) -> str:
        """The tree drawing, headed ``NAME (Type)`` or just ``Type``."""
        return render_records(self._records, name=name, depth=depth, ascii=ascii)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return (
            f"ParamTree(modules={len(self.named_modules())}, "
            f"parameters={len(self.named_parameters())}, buffers={len(self.named_buffers())})"
        )


def walk(
    source: Source,
    *,
    buffers: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> ParamTree:
    """Walk a module tree once and keep a :class:`ParamTree` snapshot of it.

    Args:
        source (nn.Module or Mapping[str, Tensor]): the model, or a mapping of
            dotted names to tensors (a state dict, a loaded checkpoint), whose
            hierarchy comes from the dots. A mapping's tensors all count as
            parameters.
        buffers (bool): also walk buffers. Default: ``True``.
        allow_pickle (bool): for a distributed checkpoint's path: read its
            ``.metadata``, a pickle. Default: ``False``.
        trust_remote_code (bool): for a transformers config's path: let
            transformers run the model code it names. Default: ``False``.

    Returns:
        ParamTree: the snapshot.

    Raises:
        TypeError: if ``source`` is none of these, or a mapping holds a
            non-tensor or a non-str key.
        CheckpointError: if a path holds no readable checkpoint; the message
            names the file and the fault.
        RecursionError: if the module graph has a cycle.

    A path is read from headers only (``.safetensors`` headers, a distributed
    checkpoint's metadata; ``torch.save`` files are memory-mapped): no tensor
    data is read until :meth:`ParamTree.stats` asks for it.

    Sharded parameters (DTensor, as FSDP2's ``fully_shard`` makes them) count
    as the global tensors they stand for; ties look at the local shards'
    storage, and the totals add what the calling rank holds
    (``local_params``, ``local_bytes``).
    """
    if is_path(source):
        with gc_paused():  # tens of thousands of header entries, and their records
            opened = open_checkpoint(
                source,  # type: ignore[arg-type]
                allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code,
            )
            return walk(opened, buffers=buffers)
    sharded_class = sharded_tensor_class()
    if isinstance(source, nn.Module):
        records = _C.walk_module(source, buffers, sharded_class)
        if records is None:
            records = _records_by_pytorch(source, buffers, sharded_class)
        return ParamTree(records)
    if isinstance(source, Mapping):
        records = _C.walk_named([], list(source.items()), [], sharded_class)
        checkpoint = source if isinstance(source, Checkpoint) else None
        return ParamTree(records, modules=False, checkpoint=checkpoint)
    raise TypeError(
        "torchwalk.walk() expects an nn.Module, a mapping of names to tensors or a "
        f"checkpoint's path, got {type(source).__name__}"
    )


def _records_by_pytorch(
    module: nn.Module, buffers: bool, sharded_class: type | None
) -> _C.TreeRecords:
    """The records of a module whose traversal PyTorch's own methods must give.

    The C++ walk declines where a class on the way overrides part of the
    traversal (a root's own ``named_parameters``, a ``named_modules``
    anywhere), holds a dict subclass, or anything else the drop-ins hand
    back: the records are then built from the module's own methods, so that
    the snapshot lists what they list. Every position is asked for
    (``remove_duplicate=False``), as the walk does; an override that does not
    take that argument is called with its defaults.
    """

    def every_position(method: Callable[..., Iterator[tuple[str, Any]]]) -> list[tuple[str, Any]]:
        try:
            return list(method(remove_duplicate=False))
        except TypeError:
            return list(method())

    return _C.walk_named(
        every_position(module.named_modules),
        every_position(module.named_parameters),
        every_position(module.named_buffers) if buffers else [],
        sharded_class,
    )


def ties(source: Source, **open_options: bool) -> list[TieGroup]:
    """``walk(source).ties()``; ``open_options`` are :func:`walk`'s for paths."""
    return walk(source, **open_options).ties()


def summary(source: Source, depth: int | None = None, **open_options: bool) -> Summary:
    """``walk(source).summary(depth)``; ``open_options`` are :func:`walk`'s for paths."""
    return walk(source, **open_options).summary(depth)


def stats(
    source: Source, grads: bool = False, *, exponents: bool = False, **open_options: bool
) -> Stats:
    """``walk(source, buffers=False).stats(grads, exponents=exponents)``;
    ``open_options`` are :func:`walk`'s.

    A module's parameters are found by :func:`torchwalk.named_parameters`
    directly: the statistics need no snapshot.
    """
    if isinstance(source, nn.Module):
        return stats_of_members(named_parameters(source), [], grads=grads, exponents=exponents)
    return walk(source, buffers=False, **open_options).stats(grads=grads, exponents=exponents)


def render(
    source: Source,
    name: str | None = None,
    depth: int | None = None,
    ascii: bool = False,
    **open_options: bool,
) -> str:
    """``walk(source).render(name, depth, ascii)``; ``open_options`` are :func:`walk`'s."""
    return walk(source, **open_options).render(name=name, depth=depth, ascii=ascii)


__all__ = ["ParamTree", "Source", "TieGroup", "render", "stats", "summary", "ties", "walk"]
