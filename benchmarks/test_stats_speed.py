"""``tw.stats(model)`` against torch, end to end, medians of the same run.

Each tensor set is held by a model (as its parameters, not copied); every
call, ours and torch's, starts from the model: ours is the public
``tw.stats(model)``, theirs loops over ``model.parameters()``. Targets:

- 1 GiB of float32 in 16 tensors: at most 1.2x one ``torch.sum`` pass over
  them, and at least 50x faster than the naive nine-op loop;
- 0.5 GiB of bfloat16: at most 1.5x one ``torch.sum`` pass;
- 10,000 tensors of 1,000 float32: at least 50x faster than the naive loop
  and 1.5x faster than ``torch.nn.utils.get_total_norm`` (one number);
- the peak extra memory (RSS high-water mark, in a fresh process) of a 4 GiB
  model: under 16 MB, against the naive loop's.

The CUDA cases run only where a GPU is.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torchwalk as tw
from torch import nn

GiB = 1024**3


def naive_stats(model: nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """What users write today: nine torch ops per tensor, each a pass over memory."""
    return [
        (
            x.norm(),
            x.min(),
            x.max(),
            x.mean(),
            x.std(),
            (x == 0).sum(),
            x.isnan().sum(),
            x.isinf().sum(),
            x.abs().max(),
        )
        for x in model.parameters()
    ]


def sum_pass(model: nn.Module) -> list[torch.Tensor]:
    """One read of every element: the floor a fused pass is compared with."""
    return [x.sum() for x in model.parameters()]


def total_norm(model: nn.Module) -> torch.Tensor:
    """The one figure PyTorch computes over all parameters at once."""
    return torch.nn.utils.get_total_norm(model.parameters())


COMPARED = {"naive": naive_stats, "sum": sum_pass, "total_norm": total_norm}


@functools.cache
def tensor_set(name: str, device: str = "cpu") -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if name == "1GiB-f32-16":
        shapes, dtype = [(GiB // 4 // 16,)] * 16, torch.float32
    elif name == "0.5GiB-bf16-16":
        shapes, dtype = [(GiB // 2 // 2 // 16,)] * 16, torch.bfloat16
    else:  # "10k-small"
        shapes, dtype = [(1000,)] * 10_000, torch.float32
    return [torch.randn(shape, generator=generator).to(dtype).to(device) for shape in shapes]


@functools.cache
def model_of(name: str, device: str = "cpu") -> nn.Module:
    """A model holding the tensor set as its parameters, 100 to a submodule."""
    model = nn.Module()
    for index, tensor in enumerate(tensor_set(name, device)):
        block = index // 100
        if str(block) not in model._modules:
            model.add_module(str(block), nn.Module())
        parameter = nn.Parameter(tensor, requires_grad=False)
        model.get_submodule(str(block)).register_parameter(f"p{index % 100}", parameter)
    return model


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _measure(benchmark, function: Callable[[], object], device: str, rounds: int) -> float:  # type: ignore[no-untyped-def]
    def run() -> None:
        function()
        _sync(device)

    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    return float(benchmark.stats.stats.median)


CASES = [
    # (tensor set, comparison, target), target as in the module docstring
    ("1GiB-f32-16", "sum", 1 / 1.2),
    ("1GiB-f32-16", "naive", 50.0),
    ("0.5GiB-bf16-16", "sum", 1 / 1.5),
    ("10k-small", "naive", 50.0),
    ("10k-small", "total_norm", 1.5),
]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("tensors", "against", "target"), CASES)
@pytest.mark.parametrize("implementation", ["torchwalk", "other"])
def test_stats_speed(
    benchmark, record_median, tensors, against, target, implementation, device
) -> None:  # type: ignore[no-untyped-def]
    model = model_of(tensors, device)
    benchmark.group = f"stats {tensors} {device} vs {against}"
    slow = against == "naive" and implementation == "other"
    rounds = 3 if slow else 15
    if implementation == "torchwalk":
        median = _measure(benchmark, lambda: tw.stats(model), device, rounds)
        record_median(f"{tensors}/{device}", f"stats vs {against}", "torchwalk", median)
    else:
        function = COMPARED[against]
        median = _measure(benchmark, lambda: function(model), device, rounds)
        record_median(f"{tensors}/{device}", f"stats vs {against}", against, median, target=target)


_PEAK_SCRIPT = """
import resource, sys, torch
import torchwalk as tw
from torch import nn
model = nn.Module()
for i in range(16):  # 4 GiB of float32
    model.register_parameter(f"p{i}", nn.Parameter(torch.randn(64 * 1024**2), requires_grad=False))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "torchwalk":
    tw.stats(model)
else:
    for x in model.parameters():
        (x.norm(), x.min(), x.max(), x.mean(), x.std(), (x == 0).sum(), x.isnan().sum(),
         x.isinf().sum(), x.abs().max())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


@pytest.mark.parametrize("implementation", ["torchwalk", "naive"])
def test_peak_extra_memory_4GiB(implementation: str) -> None:
    """Peak RSS growth while computing the statistics of a 4 GiB model, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, implementation],
        capture_output=True,
        text=True,
        check=True,
    )
    extra = int(done.stdout.strip())
    print(f"peak extra RSS, {implementation}: {extra / 1e6:.1f} MB")
    if implementation == "torchwalk":
        assert extra < 16e6
