"""A slow, obviously correct Python model of the walk-once records (``_C.TreeRecords``).

``OracleRecords`` has exactly the methods of ``TreeRecords`` in ``_C.pyi`` and
computes them with plain PyTorch calls from an ``nn.Module``: positions in the
order of ``named_modules(remove_duplicate=False)``, leaves from the raw
``_parameters`` / ``_buffers`` dicts, identity with ``is`` (``id``), storages by
``untyped_storage()._cdata`` (the StorageImpl, so meta and empty tensors work).
It is the oracle the C++ records are checked against, and lets the summary
and the drawing be tested before the C++ exists.

Choices where the stub leaves room, which the C++ must share:

- ``module_totals`` and ``totals`` count parameters and buffers apart, each
  object once among its kind (as ``sum(p.numel() for p in m.parameters())``
  and the same over ``m.buffers()`` do). Lazy tensors count in no figure;
  ``uninitialized`` counts lazy *parameter* objects.
- Lazy tensors have no storage: one held at several names is a ``"shared"``
  group of 0 bytes (keyed by the object), and distinct ones never tie.
- ``params_unique`` / ``bytes_unique`` (parameters only): within one storage,
  identical views count once, and views whose byte spans overlap (chained
  into components) count as the union of their spans (in elements: that
  union over the first view's itemsize). A view that overlaps no other counts
  its own ``numel``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torchwalk import _C

Span = tuple[int, int]
"""A byte range ``[start, end)`` in a storage."""

_TIE_KIND_STRENGTH = ("packed", "overlap", "alias", "shared")


def byte_span(tensor: torch.Tensor) -> Span | None:
    """The bytes a view can address in its storage, None when it is empty."""
    if tensor.numel() == 0:
        return None
    itemsize = tensor.element_size()
    last = tensor.storage_offset() + sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    return tensor.storage_offset() * itemsize, (last + 1) * itemsize


def union_nbytes(spans: Iterable[Span | None]) -> int:
    """The number of bytes covered by the union of ``spans``."""
    covered, reach = 0, -1
    for start, end in sorted(span for span in spans if span is not None):
        start = max(start, reach)
        if end > start:
            covered += end - start
            reach = end
    return covered


def _storage_key(tensor: torch.Tensor) -> int:
    """The address of the tensor's StorageImpl: shared by all views of one storage."""
    return int(tensor.untyped_storage()._cdata)


def _view_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class OracleRecords:
    """The records of one walk of ``root``, as ``_C.walk_module(root, buffers)`` gives them."""

    def __init__(self, root: nn.Module, buffers: bool = True) -> None:
        self._modules: list[nn.Module] = []
        self._paths: list[str] = []
        self._names: list[str] = []
        self._parents: list[int] = []
        self._depths: list[int] = []
        self._children: list[list[int]] = []
        self._own_leaves: list[list[int]] = []
        self._module_first: list[int] = []
        self._leaf_paths: list[str] = []
        self._leaf_names: list[str] = []
        self._leaf_modules: list[int] = []
        self._leaf_is_buffer: list[bool] = []
        self._leaf_tensors: list[torch.Tensor] = []
        self._leaf_first: list[int] = []
        self._walk(root, buffers)
        self._tie_groups, self._tied_to = self._group_ties()
        self._hashes: dict[int, int] = {}
        self._subtree_totals: dict[int, tuple[int, int, int, int, int, int, int]] = {}

    # -- building ------------------------------------------------------------------------

    def _walk(self, root: nn.Module, buffers: bool) -> None:
        first_position: dict[int, int] = {}
        first_leaf: dict[tuple[int, bool], int] = {}  # by (tensor, is a buffer)
        stack: list[tuple[str, str, nn.Module, int]] = [("", "", root, -1)]
        while stack:
            path, name, module, parent = stack.pop()
            position = len(self._modules)
            self._modules.append(module)
            self._paths.append(path)
            self._names.append(name)
            self._parents.append(parent)
            self._depths.append(0 if parent < 0 else self._depths[parent] + 1)
            self._children.append([])
            self._module_first.append(first_position.setdefault(id(module), position))
            if parent >= 0:
                self._children[parent].append(position)
            members = [(key, t, False) for key, t in module._parameters.items() if t is not None]
            if buffers:
                members += [(key, t, True) for key, t in module._buffers.items() if t is not None]
            leaves = []
            for key, tensor, is_buffer in members:
                leaf = len(self._leaf_paths)
                leaves.append(leaf)
                self._leaf_paths.append(f"{path}.{key}" if path else key)
                self._leaf_names.append(key)
                self._leaf_modules.append(position)
                self._leaf_is_buffer.append(is_buffer)
                self._leaf_tensors.append(tensor)
                self._leaf_first.append(first_leaf.setdefault((id(tensor), is_buffer), leaf))
            self._own_leaves.append(leaves)
            children = [(key, child) for key, child in module._modules.items() if child is not None]
            for key, child in reversed(children):
                stack.append((f"{path}.{key}" if path else key, key, child, position))

    def _group_ties(self) -> tuple[list[tuple[list[str], str, int, int]], list[int]]:
        by_storage: dict[tuple[bool, int], list[int]] = {}
        for leaf, tensor in enumerate(self._leaf_tensors):
            key = (True, id(tensor)) if is_lazy(tensor) else (False, _storage_key(tensor))
            by_storage.setdefault(key, []).append(leaf)
        groups: list[tuple[int, list[str], str, int, int]] = []
        tied_to = [-1] * len(self._leaf_tensors)
        for (lazy, _), leaves in by_storage.items():
            if len(leaves) < 2:
                continue
            tensors = [self._leaf_tensors[leaf] for leaf in leaves]
            if lazy:
                kind, nbytes, overcount = "shared", 0, 0
            else:
                kind = _tie_kind(tensors)
                nbytes = union_nbytes(byte_span(tensor) for tensor in tensors)
                overcount = max(0, sum(_nbytes(tensor) for tensor in tensors) - nbytes)
            # Parameters first: the first name is the one named_parameters() keeps.
            named = sorted(leaves, key=lambda leaf: self._leaf_is_buffer[leaf])
            groups.append(
                (named[0], [self._leaf_paths[leaf] for leaf in named], kind, nbytes, overcount)
            )
            if kind != "packed":
                for leaf in leaves[1:]:
                    tied_to[leaf] = leaves[0]  # the leaf met first, drawn in full
        groups.sort(key=lambda group: group[0])
        return [group[1:] for group in groups], tied_to

    # -- module positions ----------------------------------------------------------------

    def module_count(self) -> int:
        return len(self._modules)

    def module_path(self, position: int, /) -> str:
        return self._paths[position]

    def module_name(self, position: int, /) -> str:
        return self._names[position]

    def module_type(self, position: int, /) -> str:
        return type(self._modules[position]).__name__

    def module_object(self, position: int, /) -> nn.Module | None:
        return self._modules[position]

    def module_parent(self, position: int, /) -> int:
        return self._parents[position]

    def module_depth(self, position: int, /) -> int:
        return self._depths[position]

    def module_children(self, position: int, /) -> list[int]:
        return list(self._children[position])

    def module_leaves(self, position: int, /) -> list[int]:
        return list(self._own_leaves[position])

    def module_first(self, position: int, /) -> int:
        return self._module_first[position]

    def module_shape_hash(self, position: int, /) -> int:
        if position not in self._hashes:
            # Children first, without recursion: positions below `position` in reverse walk order.
            below = self._subtree_positions(position)
            for inner in reversed(below):
                self._hashes[inner] = self._hash_one(inner)
        return self._hashes[position]

    def _hash_one(self, position: int) -> int:
        module_class = type(self._modules[position])
        leaves = tuple(
            (
                self._leaf_names[leaf],
                self._leaf_is_buffer[leaf],
                "lazy" if is_lazy(tensor) else tuple(tensor.shape),
                str(tensor.dtype),
                tensor.requires_grad,
            )
            for leaf in self._own_leaves[position]
            for tensor in (self._leaf_tensors[leaf],)
        )
        children = tuple(
            (self._names[child], self._hashes[child]) for child in self._children[position]
        )
        # The class itself (by identity), not its name: two classes can share a name.
        structure = repr((id(module_class), leaves, children))
        return int.from_bytes(hashlib.blake2b(structure.encode(), digest_size=8).digest(), "little")

    def _subtree_positions(self, position: int) -> list[int]:
        """``position`` and every position below it, in walk order."""
        found, stack = [], [position]
        while stack:
            current = stack.pop()
            found.append(current)
            stack.extend(reversed(self._children[current]))
        return found

    def module_totals(self, position: int, /) -> tuple[int, int, int, int, int, int, int]:
        if position not in self._subtree_totals:
            leaves = [
                leaf
                for inner in self._subtree_positions(position)
                for leaf in self._own_leaves[inner]
            ]
            params, buffers, lazy_params = self._objects(leaves)
            trainable = sum(p.numel() for p in params if p.requires_grad)
            self._subtree_totals[position] = (
                sum(p.numel() for p in params),
                trainable,
                sum(p.numel() for p in params) - trainable,
                sum(_nbytes(p) for p in params),
                sum(b.numel() for b in buffers),
                sum(_nbytes(b) for b in buffers),
                len(lazy_params),
            )
        return self._subtree_totals[position]

    def _objects(
        self, leaves: Iterable[int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The distinct parameter, buffer and lazy-parameter objects among ``leaves``."""
        seen: dict[tuple[int, bool], torch.Tensor] = {}
        for leaf in leaves:
            seen.setdefault(
                (id(self._leaf_tensors[leaf]), self._leaf_is_buffer[leaf]), self._leaf_tensors[leaf]
            )
        params = [t for (_, is_buffer), t in seen.items() if not is_buffer and not is_lazy(t)]
        buffers = [t for (_, is_buffer), t in seen.items() if is_buffer and not is_lazy(t)]
        lazy_params = [t for (_, is_buffer), t in seen.items() if not is_buffer and is_lazy(t)]
        return params, buffers, lazy_params

    # -- leaves --------------------------------------------------------------------------

    def leaf_count(self) -> int:
        return len(self._leaf_paths)

    def leaf_path(self, leaf: int, /) -> str:
        return self._leaf_paths[leaf]

    def leaf_name(self, leaf: int, /) -> str:
        return self._leaf_names[leaf]

    def leaf_module(self, leaf: int, /) -> int:
        return self._leaf_modules[leaf]

    def leaf_is_buffer(self, leaf: int, /) -> bool:
        return self._leaf_is_buffer[leaf]

    def leaf_tensor(self, leaf: int, /) -> torch.Tensor:
        return self._leaf_tensors[leaf]

    def leaf_first(self, leaf: int, /) -> int:
        return self._leaf_first[leaf]

    def leaf_is_lazy(self, leaf: int, /) -> bool:
        return bool(is_lazy(self._leaf_tensors[leaf]))

    def leaf_tied_to(self, leaf: int, /) -> int:
        return self._tied_to[leaf]

    # -- views ---------------------------------------------------------------------------

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (self._leaf_paths[leaf], tensor)
            for leaf, tensor in self._first_of_kind(is_buffer=False)
        ]

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        return [
            (self._leaf_paths[leaf], tensor) for leaf, tensor in self._first_of_kind(is_buffer=True)
        ]

    def _first_of_kind(self, is_buffer: bool) -> list[tuple[int, Any]]:
        seen: set[int] = set()
        found = []
        for leaf, tensor in enumerate(self._leaf_tensors):
            if self._leaf_is_buffer[leaf] == is_buffer and id(tensor) not in seen:
                seen.add(id(tensor))
                found.append((leaf, tensor))
        return found

    def named_modules(self) -> list[tuple[str, nn.Module]]:
        return [
            (self._paths[position], module)
            for position, module in enumerate(self._modules)
            if self._module_first[position] == position
        ]

    def tie_groups(self) -> list[tuple[list[str], str, int, int]]:
        return [(list(names), kind, nbytes, over) for names, kind, nbytes, over in self._tie_groups]

    def totals(self) -> dict[str, Any]:
        params, buffers, lazy_params = self._objects(range(len(self._leaf_tensors)))
        trainable = sum(p.numel() for p in params if p.requires_grad)
        params_unique, bytes_unique = _unique_figures(params)
        bytes_by_dtype: dict[str, int] = {}
        bytes_by_device: dict[str, int] = {}
        for tensor in params + buffers:
            key = str(tensor.dtype)
            bytes_by_dtype[key] = bytes_by_dtype.get(key, 0) + _nbytes(tensor)
            key = str(tensor.device)
            bytes_by_device[key] = bytes_by_device.get(key, 0) + _nbytes(tensor)
        return {
            "params": sum(p.numel() for p in params),
            "params_unique": params_unique,
            "bytes_unique": bytes_unique,
            "trainable": trainable,
            "frozen": sum(p.numel() for p in params) - trainable,
            "uninitialized": len(lazy_params),
            "bytes": sum(_nbytes(p) for p in params),
            "buffers": sum(b.numel() for b in buffers),
            "buffer_bytes": sum(_nbytes(b) for b in buffers),
            "bytes_by_dtype": bytes_by_dtype,
            "bytes_by_device": bytes_by_device,
            "local_params": sum(_local(p).numel() for p in params),
            "local_bytes": sum(_nbytes(_local(p)) for p in params),
        }


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The memory this rank holds of a tensor: a DTensor's local shard, else the tensor."""
    local = getattr(tensor, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else tensor


def _tie_kind(tensors: list[torch.Tensor]) -> str:
    """The strongest relation among tensors that share one storage."""
    if len({id(t) for t in tensors}) < len(tensors):
        return "shared"
    if len({_view_key(t) for t in tensors}) < len(tensors):
        return "alias"
    reach = -1
    for start, end in sorted(span for span in map(byte_span, tensors) if span is not None):
        if start < reach:
            return "overlap"
        reach = max(reach, end)
    return "packed"


def _unique_figures(params: list[torch.Tensor]) -> tuple[int, int]:
    """``params_unique`` and ``bytes_unique``: each storage element once (see the module doc)."""
    views_by_storage: dict[int, dict[tuple[Any, ...], torch.Tensor]] = {}
    for tensor in params:
        views = views_by_storage.setdefault(_storage_key(tensor), {})
        views.setdefault(_view_key(tensor), tensor)
    elements = nbytes = 0
    for views in views_by_storage.values():
        for component in _overlapping_components(list(views.values())):
            if len(component) == 1:
                elements += component[0].numel()
                nbytes += _nbytes(component[0])
            else:
                covered = union_nbytes(byte_span(tensor) for tensor in component)
                elements += covered // component[0].element_size()
                nbytes += covered
    return elements, nbytes


def _overlapping_components(views: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``views`` split into chains whose byte spans overlap; empty views stand alone."""
    spans = [(byte_span(view), index) for index, view in enumerate(views)]
    components: list[list[torch.Tensor]] = [[views[i]] for span, i in spans if span is None]
    reach = -1
    for span, index in sorted((span, i) for span, i in spans if span is not None):
        if span[0] < reach:
            components[-1].append(views[index])
        else:
            components.append([views[index]])
        reach = max(reach, span[1])
    return components


def records_of(module: nn.Module, buffers: bool = True) -> Any:
    """The C++ records of ``module`` (tests/test_records.py checks them against the oracle)."""
    return _C.walk_module(module, buffers)
