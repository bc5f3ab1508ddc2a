"""Statistics of sharded tensors (DTensor, as FSDP2's ``fully_shard`` makes them).

Each rank reads only its local shard with the same fused kernels as for any
tensor; the mergeable partial results of all DTensor rows are then combined
over each mesh with ``torch.distributed`` collectives, one per reduction kind
(sum, min, max, and one gather of the moments), not one per tensor. Every
rank gets the same figures, those of the global tensor.

A replicated placement would count its elements once per replica: only the
ranks at coordinate 0 along replicated mesh dimensions contribute. A partial
placement (values still to be summed across ranks) is materialised with
``full_tensor()`` and read once. Means and variances are merged from each
shard's count, mean and sum of squared deviations (Chan et al.), in rank
order, which keeps ``std`` accurate where raw sums of squares would not.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

RawStats = tuple[int, str, int, float, float, float, float, float, float, int, int, int]


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
    if dtensor is None:
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
    tensors: Sequence[torch.Tensor], raw_rows: list[RawStats], sharded: Sequence[int]
) -> list[RawStats]:
    """``raw_rows`` with each sharded tensor's row replaced by its global row."""
    meshes: dict[int, Any] = {}  # by id: the same mesh object on every rank's tensors
    by_mesh: dict[int, list[int]] = {}
    for position in sharded:
        mesh = getattr(tensors[position], "device_mesh")  # noqa: B009 (a DTensor attribute)
        meshes[id(mesh)] = mesh
        by_mesh.setdefault(id(mesh), []).append(position)
    merged = list(raw_rows)
    for mesh_id, positions in by_mesh.items():
        rows = [raw_rows[position] for position in positions]
        for position, row in zip(positions, _merge_rows(meshes[mesh_id], rows), strict=True):
            # The global tensor's element count, in place of the shard's.
            merged[position] = (tensors[position].numel(), *row[1:])
    return merged


def _merge_rows(mesh: Any, rows: list[RawStats]) -> list[RawStats]:
    """The rows of one mesh's tensors, merged over the mesh's ranks (collectives)."""
    import torch.distributed as dist

    if mesh.ndim == 1:
        group = mesh.get_group()
    elif mesh.size() == dist.get_world_size():
        group = None  # the default group: the same ranks
    else:
        raise NotImplementedError(
            "torchwalk.stats: sharded tensors on a multi-dimensional device mesh that does not "
            f"span all {dist.get_world_size()} ranks are not supported (mesh {mesh})"
        )
    device = torch.device(mesh.device_type)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())

    def float64(values: list[Any]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=device)

    additive = float64(  # count, zeros, nans, infs, sum of squares
        [[row[2], row[9], row[10], row[11], row[5]] for row in rows]
    )
    # A rank that read nothing of a tensor must not move its extremes.
    lows = float64([row[6] if row[2] else math.inf for row in rows])
    highs = float64([[row[7], row[8]] if row[2] else [-math.inf, -math.inf] for row in rows])
    moments = float64(  # count, mean, sum of squared deviations
        [[row[2], row[3] / row[2] if row[2] else 0.0, row[4]] for row in rows]
    )
    gathered = [torch.empty_like(moments) for _ in range(dist.get_world_size(group))]
    dist.all_reduce(additive, dist.ReduceOp.SUM, group=group)
    dist.all_reduce(lows, dist.ReduceOp.MIN, group=group)
    dist.all_reduce(highs, dist.ReduceOp.MAX, group=group)
    dist.all_gather(gathered, moments, group=group)

    additive_rows, low_rows, high_rows = additive.tolist(), lows.tolist(), highs.tolist()
    shard_moments = [part.tolist() for part in gathered]
    merged: list[RawStats] = []
    for index, row in enumerate(rows):
        count, mean, m2 = 0.0, 0.0, 0.0
        for shard in shard_moments:  # rank order: the same result on every rank
            count, mean, m2 = _chan_merge((count, mean, m2), tuple(shard[index]))
        total_count, zeros, nans, infs, sum_squares = additive_rows[index]
        merged.append(
            (
                row[0],
                row[1],
                int(total_count),
                mean * count,
                m2,
                sum_squares,
                low_rows[index],
                high_rows[index][0],
                high_rows[index][1],
                int(zeros),
                int(nans),
                int(infs),
            )
        )
    return merged


def _chan_merge(
    left: tuple[float, float, float], right: tuple[float, ...]
) -> tuple[float, float, float]:
    """Two (count, mean, M2) summaries merged into the summary of both."""
    left_count, left_mean, left_m2 = left
    right_count, right_mean, right_m2 = right
    if right_count == 0:
        return left
    if left_count == 0:
        return right_count, right_mean, right_m2
    count = left_count + right_count
    delta = right_mean - left_mean
    mean = left_mean + delta * right_count / count
    m2 = left_m2 + right_m2 + delta * delta * left_count * right_count / count
    return count, mean, m2


__all__ = ["local_parts", "merge_across_ranks", "sharded_tensor_class"]
