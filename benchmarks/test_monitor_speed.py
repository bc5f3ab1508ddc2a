"""`tw.Monitor.step()` on a logging step, against Lightning's `grad_norm`.

A model of 100 modules × 100 parameters of 1,000 float32, every parameter
with a gradient: a logging step of the monitor (every figure of every
module: l2, absmax, mean, std, zeros, non-finite count, and totals) against
``lightning.pytorch.utilities.grad_norm(model, 2)``, which computes norms
alone; target: 5×. And a step between logging steps, which only counts.
"""

from __future__ import annotations

import pytest
import torch
import torchwalk as tw
from torch import nn


@pytest.fixture(scope="module")
def model() -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    root = nn.Module()
    for block in range(100):
        module = nn.Module()
        for index in range(100):
            parameter = nn.Parameter(torch.randn(1000, generator=generator))
            parameter.grad = torch.randn(1000, generator=generator)
            module.register_parameter(f"p{index}", parameter)
        root.add_module(str(block), module)
    return root


@pytest.mark.parametrize("implementation", ["torchwalk", "lightning grad_norm"])
def test_logging_step_of_10000_parameters(
    benchmark, record_median, model: nn.Module, implementation: str
) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "monitor logging step, 10,000 parameters"
    if implementation == "torchwalk":
        monitor = tw.Monitor(model)
        benchmark.pedantic(monitor.step, rounds=21, warmup_rounds=2)
        record_median("10,000 grads", "monitor step", "torchwalk", benchmark.stats.stats.median)
    else:
        from lightning.pytorch.utilities import grad_norm

        benchmark.pedantic(lambda: grad_norm(model, 2), rounds=21, warmup_rounds=2)
        record_median(
            "10,000 grads", "monitor step", "grad_norm", benchmark.stats.stats.median, target=5.0
        )


def test_step_between_logging_steps(benchmark, model: nn.Module) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "monitor step between logging steps"
    monitor = tw.Monitor(model, every=10**9)
    benchmark(monitor.step)
