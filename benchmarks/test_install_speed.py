"""Training code unchanged, with and without ``tw.install()`` (pytest-benchmark).

Two kinds of measurement; the session's ratio table compares the two runs
of each group. No timing is asserted.

- What collecting the parameters costs, on the zoo's large models on the
  meta device (no data, so the walk is all the work): ``model.parameters()``
  consumed by ``torch.optim.AdamW(...)`` construction, and by
  ``clip_grad_norm_`` (which, without gradients, returns right after
  collecting them).
- What it changes in real training: ``clip_grad_norm_`` with real gradients,
  and a whole training step (forward, backward, clipping, AdamW's step) of
  GPT-2 (124M) on the CPU, where the walk is a small share of the work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import nullcontext

import pytest
import torch
import torchwalk as tw
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

MODELS = ("llama-7b", "deepseek-v3")
TRAINING_JOBS = ("clip_grad_norm_", "training step")


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


@functools.cache
def _trained_gpt2() -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """GPT-2 (transformers') on the CPU with real gradients, its optimizer and token ids."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (1, 64))
    model(ids, labels=ids).loss.backward()
    return model, optimizer, ids


def _training_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    optimizer.zero_grad()
    model(ids, labels=ids).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


@pytest.mark.parametrize("implementation", ["torch", "torchwalk"])
@pytest.mark.parametrize("job", TRAINING_JOBS)
def test_training_with_real_gradients(
    benchmark: BenchmarkFixture,
    record_median: Callable[[str, str, str, float], None],
    job: str,
    implementation: str,
) -> None:
    model, optimizer, ids = _trained_gpt2()
    benchmark.group = f"gpt2 (cpu) {job} (install)"
    with tw.installed() if implementation == "torchwalk" else nullcontext():
        if job == "clip_grad_norm_":
            # max_norm so large that nothing is scaled: each round clips the same gradients
            benchmark(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
        else:
            benchmark.pedantic(_training_step, (model, optimizer, ids), rounds=5, warmup_rounds=1)
    if benchmark.stats is not None:
        record_median(
            "gpt2 (cpu)", f"{job} (install)", implementation, benchmark.stats.stats.median
        )
