"""Fused statistics against torch, medians of the same run (issue 4's targets).

- 1 GiB of float32 in 16 tensors: at most 1.2x one ``torch.sum`` pass over
  them, and at least 50x faster than the naive nine-op loop;
- 0.5 GiB of bfloat16: at most 1.5x one ``torch.sum`` pass;
- 10,000 tensors of 1,000 float32: at least 50x faster than the naive loop;
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
from torchwalk import _C

GiB = 1024**3


def naive_stats(tensors: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
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
        for x in tensors
    ]


def sum_pass(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """One read of every element: the floor a fused pass is compared with."""
    return [x.sum() for x in tensors]


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
    data = tensor_set(tensors, device)
    benchmark.group = f"stats {tensors} {device} vs {against}"
    slow = against == "naive" and implementation == "other"
    rounds = 3 if slow else 7
    if implementation == "torchwalk":
        median = _measure(benchmark, lambda: _C.tensor_stats(data), device, rounds)
        record_median(f"{tensors}/{device}", f"stats vs {against}", "torchwalk", median)
    else:
        function = naive_stats if against == "naive" else sum_pass
        median = _measure(benchmark, lambda: function(data), device, rounds)
        record_median(f"{tensors}/{device}", f"stats vs {against}", against, median, target=target)


_PEAK_SCRIPT = """
import resource, sys, torch
from torchwalk import _C
tensors = [torch.randn(64 * 1024**2) for _ in range(16)]  # 4 GiB of float32
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "torchwalk":
    _C.tensor_stats(tensors)
else:
    for x in tensors:
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
