"""Statistics of sharded tensors (DTensor, as FSDP2's ``fully_shard`` makes them).

Each rank reads only its local shard with the same fused kernels as for any
tensor; the mergeable partial results of all DTensor rows of a mesh are then
gathered with one ``torch.distributed`` all-gather over the mesh (not one
per tensor), and every rank merges them, in rank order, with the same C++
merge that makes totals (``_C.StatsTable.merged_across_ranks``). Every rank
gets the same figures, those of the global tensor.

A replicated placement would count its elements once per replica: only the
ranks at coordinate 0 along replicated mesh dimensions contribute. A partial
placement (values still to be summed across ranks) is materialised with
``full_tensor()`` and read once. Means and variances are merged from each
shard's count, sum and sum of squared deviations (Chan et al.), which keeps
``std`` accurate where raw sums of squares would not.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

from torchwalk import _C


def sharded_tensor_class() -> type | None:
    """DTensor if ``torch.distributed.tensor`` is loaded (no DTensor can exist otherwise)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def local_parts(tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """What this rank reads of each tensor, and the positions of the sharded ones.

    A sharded tensor is replaced by its local shard, or by an empty tensor on
    a rank whose shard is a replica another rank already counts.
    """
    dtensor = sharded_tensor_class()
    # isinstance per tensor costs more than the statistics of a small one:
    # each type is tested once.
    if dtensor is None or not any(issubclass(kind, dtensor) for kind in {type(t) for t in tensors}):
        return list(tensors), []
    parts: list[torch.Tensor] = []
    sharded: list[int] = []
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, dtensor):
            parts.append(tensor)
            continue
        sharded.append(position)
        sharded_tensor: Any = tensor  # a DTensor: mypy sees only its Tensor base
        placements = sharded_tensor.placements
        coordinate = sharded_tensor.device_mesh.get_coordinate()
        if any(placement.is_partial() for placement in placements):
            local = sharded_tensor.full_tensor()
            replicated_dims = list(range(len(placements)))
        else:
            local = sharded_tensor.to_local()
            replicated_dims = [d for d, p in enumerate(placements) if p.is_replicate()]
        counted_here = coordinate is not None and all(coordinate[d] == 0 for d in replicated_dims)
        parts.append(local if counted_here else local.new_empty(0))
    return parts, sharded


def merge_across_ranks(
    tensors: Sequence[torch.Tensor], table: _C.StatsTable, sharded: Sequence[int]
) -> _C.StatsTable:
    """``table`` with each sharded tensor's row replaced by its global row."""
    # Grouped by mesh value (DeviceMesh compares and hashes its ranks and
    # layout), not by object: every init_device_mesh call, so every
    # fully_shard call, makes a new mesh, and which of the equal ones a tensor
    # holds is up to DTensor's caches (FSDP2 left two among one model's
    # tensors), so by id the gathers would follow that accident.
    by_mesh: dict[Any, list[int]] = {}
    for position in sharded:
        mesh = getattr(tensors[position], "device_mesh")  # noqa: B009 (a DTensor attribute)
        by_mesh.setdefault(mesh, []).append(position)
    for mesh, positions in by_mesh.items():
        # Exponent counts vary in length: they take a second collective, when counted.
        exponents = table.exponent_lists(positions) if table.counts_exponents else None
        table = table.merged_across_ranks(
            positions,
            _gather(mesh, table.partials(positions)),
            [tensors[position].numel() for position in positions],
            None if exponents is None else _gather_objects(mesh, exponents),
        )
    return table


def _group(mesh: Any) -> Any:
    """The process group of a mesh's ranks (None: the default group)."""
    import torch.distributed as dist

    if mesh.ndim == 1:
        return mesh.get_group()
    if mesh.size() == dist.get_world_size():
        return None  # the default group: the same ranks
    raise NotImplementedError(
        "torchwalk.stats: sharded tensors on a multi-dimensional device mesh that does not "
        f"span all {dist.get_world_size()} ranks are not supported (mesh {mesh})"
    )


def _gather_objects(mesh: Any, local: list[Any]) -> list[list[Any]]:
    """Every rank's ``local`` list, in rank order: one all_gather_object over the mesh's ranks."""
    import torch.distributed as dist

    group = _group(mesh)
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, local, group=group)
    return gathered


def _gather(mesh: Any, local: Sequence[tuple[float, ...]]) -> list[list[list[float]]]:
    """Every rank's ``local`` rows, in rank order: one all-gather over the mesh's ranks."""
    import torch.distributed as dist

    group = _group(mesh)
    device = torch.device(mesh.device_type)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    # float64 holds the counts exactly up to 2**53 elements.
    mine = torch.tensor(local, dtype=torch.float64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    return [part.tolist() for part in gathered]


__all__ = ["local_parts", "merge_across_ranks", "sharded_tensor_class"]
