"""Summary and statistics of an FSDP2-sharded model, inside a torchrun job.

    torchrun --standalone --nproc-per-node 2 examples/sharded_summary.py

Every rank walks its own model (the walk is local, like named_parameters());
the figures are those of the global tensors, and every rank gets the same
ones. The statistics merge each rank's shards with torch.distributed
collectives, so every rank of the mesh must call tw.stats together.
Runs on CPUs (gloo) as well as on GPUs (nccl).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torchwalk as tw
from torch import nn
from torch.distributed.fsdp import fully_shard


def build_model() -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank
    layers = [nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64)) for _ in range(4)]
    return nn.Sequential(*layers, nn.LayerNorm(64), nn.Linear(64, 10))


def main() -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    device = torch.device("cuda" if backend == "nccl" else "cpu")
    model = build_model().to(device)
    for layer in model[:4]:
        fully_shard(layer)
    fully_shard(model)

    model(torch.randn(8, 64, device=device)).square().mean().backward()

    summary = tw.summary(model)  # global figures, plus this rank's local_params/local_bytes
    gradients = tw.stats(model, grads=True)  # collective: every rank calls it
    if dist.get_rank() == 0:
        print(summary)
        print(gradients)
        print(f"global gradient norm: {gradients.total.l2:.6g}")
    local = [0] * dist.get_world_size()
    dist.all_gather_object(local, summary.totals.local_params)
    if dist.get_rank() == 0:
        print(f"parameters held per rank: {local} (global {summary.totals.params})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Leave without the interpreter's teardown. In torch 2.13 a gloo worker thread
    # releases a finished collective's tensors some time after the collective
    # returns; when that falls inside the teardown, it cannot take the GIL and the
    # rank aborts ("terminate called without an active exception"), about once in
    # ten runs here, with or without torchwalk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
