"""Training code unchanged, with and without ``tw.install()`` (pytest-benchmark).

What an optimizer step's bookkeeping costs: ``model.parameters()`` consumed
by ``torch.optim.AdamW(...)`` construction and by ``clip_grad_norm_``, on the
zoo's large models (meta device: no gradients, so the walk is the work). The
session's ratio table compares the two runs of each group. No timing is
asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import pytest
import torch
import torchwalk as tw
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

MODELS = ("llama-7b", "deepseek-v3")


def _adamw(model: nn.Module) -> object:
    return torch.optim.AdamW(model.parameters(), lr=1e-3)


def _clip(model: nn.Module) -> object:
    return torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)


USES: dict[str, Callable[[nn.Module], object]] = {"AdamW(...)": _adamw, "clip_grad_norm_": _clip}


@pytest.mark.parametrize("implementation", ["torch", "torchwalk"])
@pytest.mark.parametrize("use", USES)
@pytest.mark.parametrize("model", MODELS)
def test_training_bookkeeping(
    benchmark: BenchmarkFixture,
    zoo_model: Callable[[str], nn.Module],
    record_median: Callable[[str, str, str, float], None],
    model: str,
    use: str,
    implementation: str,
) -> None:
    module, call = zoo_model(model), USES[use]
    benchmark.group = f"{model} {use} (install)"
    with tw.installed() if implementation == "torchwalk" else nullcontext():
        benchmark(call, module)
    if benchmark.stats is not None:  # None under --benchmark-disable
        record_median(model, f"{use} (install)", implementation, benchmark.stats.stats.median)
