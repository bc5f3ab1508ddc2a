"""`tw.Monitor.step()` against what users log gradients with today, and its cost in Lightning.

A model of 100 modules × 100 parameters of 1,000 float32, every parameter
with a gradient. A logging step of the monitor (every figure of every
module: l2, absmax, mean, std, zeros, non-finite count, and totals) against:

- ``lightning.pytorch.utilities.grad_norm(model, 2)``, norms alone;
  target: 5×;
- the per-tensor op loop of OLMo's ``clip_grads_and_collect_metrics``: the
  min and max of each gradient's magnitudes, its mean and its L2 norm, each
  brought to the host with ``.item()``, as OLMo's trainer logs them;
- ``isnan().any().item()`` per gradient, the usual NaN check (a full scan:
  there is no NaN to stop at); the monitor's ``nonfinite`` figures and
  ``Monitor.nonfinite`` answer it per module.

And a step between logging steps, which only counts.

Then the monitor inside a real ``lightning.Trainer`` on the CPU: 100 steps
of a model of 100 ``Linear(8, 8)`` children (200 parameters, 7,200 values)
trained with AdamW, without the callback and with
``StatsMonitor(every=1)`` and ``StatsMonitor(every=50)``; there is no
logger, so the figures are computed and not written. Each round is one
``fit`` of a fresh trainer, model and callback (made outside the timing),
so the seconds per step include ``fit``'s own start, a hundredth of it
each. The runs are timed one after the other, so on a shared machine
their difference is noisy; the callback's hook is also timed inside the
runs with it, and its share of their steps printed ("hook's share": a
step's median over the hook's).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import lightning.pytorch as pl
import pytest
import torch
import torchwalk as tw
from lightning.pytorch.utilities import grad_norm
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchwalk.integrations.lightning import StatsMonitor

GRADS = "10,000 grads"
"""The model the logging step is timed on, in the speed-up table."""


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


@functools.cache
def monitor_of(model: nn.Module) -> tw.Monitor:
    """The model's monitor, made once and kept, as a training loop keeps it."""
    return tw.Monitor(model)


def monitor_step(model: nn.Module) -> dict[str, float] | None:
    """torchwalk: a logging step, the figures of the root's 100 children and their total."""
    return monitor_of(model).step()


def lightning_grad_norm(model: nn.Module) -> dict[str, float]:
    """Lightning: each gradient's L2 norm and the total norm."""
    return grad_norm(model, 2)


def olmo_figures(model: nn.Module) -> dict[str, float]:
    """OLMo: min and max of the magnitudes, mean and L2 norm of each gradient, on the host."""
    figures: dict[str, float] = {}
    for name, parameter in model.named_parameters():
        grad = parameter.grad
        magnitudes = grad.abs()
        figures[f"grad/{name}.min"] = magnitudes.min().item()
        figures[f"grad/{name}.max"] = magnitudes.max().item()
        figures[f"grad/{name}.avg"] = grad.mean().item()
        figures[f"grad/{name}.norm"] = torch.linalg.vector_norm(grad).item()
    return figures


def any_nan(model: nn.Module) -> bool:
    """The usual NaN check: one ``isnan().any().item()`` per gradient."""
    return any(parameter.grad.isnan().any().item() for parameter in model.parameters())


LOGGING_STEPS: dict[str, Callable[[nn.Module], object]] = {
    "torchwalk": monitor_step,
    "grad_norm": lightning_grad_norm,
    "OLMo per-tensor ops": olmo_figures,
    "isnan().any().item()": any_nan,
}
TARGETS = {"grad_norm": 5.0}
"""The speed-up the monitor's logging step must reach over an implementation."""


@pytest.mark.parametrize("implementation", LOGGING_STEPS)
def test_logging_step_of_10000_parameters(
    benchmark: BenchmarkFixture,
    record_benchmark: Callable[..., None],
    model: nn.Module,
    implementation: str,
) -> None:
    benchmark.group = "monitor logging step, 10,000 parameters"
    benchmark.pedantic(LOGGING_STEPS[implementation], args=(model,), rounds=21, warmup_rounds=2)
    record_benchmark(
        benchmark, GRADS, "monitor step", implementation, target=TARGETS.get(implementation)
    )


def test_step_between_logging_steps(benchmark: BenchmarkFixture, model: nn.Module) -> None:
    benchmark.group = "monitor step between logging steps"
    monitor = tw.Monitor(model, every=10**9)
    benchmark(monitor.step)


STEPS, ROUNDS = 100, 11
"""Training steps per timed ``fit``, and timed ``fit`` calls."""
LAYERS, WIDTH, BATCH = 100, 8, 16
TRAINED = f"Lightning, {LAYERS} Linear({WIDTH}, {WIDTH})"
"""The model trained, in the speed-up table."""
CALLBACK_EVERY = (1, 50)
"""The ``every`` of the runs with the callback, each compared with the run without it."""


class Chain(pl.LightningModule):
    """``LAYERS`` linear layers with tanh between them, each a child of the root."""

    def __init__(self) -> None:
        super().__init__()
        for index in range(LAYERS):
            self.add_module(str(index), nn.Linear(WIDTH, WIDTH))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        values, targets = batch
        for layer in self.children():
            values = torch.tanh(layer(values))
        return nn.functional.mse_loss(values, targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


@pytest.fixture(scope="module")
def batches() -> DataLoader[tuple[torch.Tensor, ...]]:
    """``STEPS`` batches of random inputs and targets, one epoch of a timed ``fit``."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(STEPS * BATCH, WIDTH, generator=generator)
    targets = torch.randn(STEPS * BATCH, WIDTH, generator=generator)
    return DataLoader(TensorDataset(inputs, targets), batch_size=BATCH)


class TimedStatsMonitor(StatsMonitor):
    """A ``StatsMonitor`` that adds up the seconds its hook takes: the callback's own cost,
    measured inside the steps it slows, which the shared machine slows alike."""

    def __init__(self, *, every: int) -> None:
        super().__init__(every=every)
        self.seconds = 0.0

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        start = time.perf_counter()
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        self.seconds += time.perf_counter() - start


# Lightning's own code, under this torch, warns about torch's pytree API.
@pytest.mark.filterwarnings(
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"
)
@pytest.mark.parametrize(
    "every", [None, *CALLBACK_EVERY], ids=["no callback", *(f"every={n}" for n in CALLBACK_EVERY)]
)
def test_lightning_training_step(
    benchmark: BenchmarkFixture,
    record_median: Callable[..., None],
    batches: DataLoader[tuple[torch.Tensor, ...]],
    every: int | None,
) -> None:
    benchmark.group = f"{TRAINED}: {STEPS} training steps"
    monitors: list[TimedStatsMonitor] = []  # each round's, warm-up rounds first

    def fresh_fit() -> tuple[tuple[pl.Trainer, Chain, DataLoader[tuple[torch.Tensor, ...]]], dict]:
        callbacks = [] if every is None else [TimedStatsMonitor(every=every)]
        monitors.extend(callbacks)
        trainer = pl.Trainer(
            max_steps=STEPS,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        torch.manual_seed(0)
        return (trainer, Chain(), batches), {}

    benchmark.pedantic(pl.Trainer.fit, setup=fresh_fit, rounds=ROUNDS, warmup_rounds=1)
    if benchmark.stats is None:  # None under --benchmark-disable
        return
    step_s = benchmark.stats.stats.median / STEPS
    if every is None:
        for compared in CALLBACK_EVERY:
            record_median(TRAINED, f"training step, every={compared}", "no callback", step_s)
        return
    record_median(TRAINED, f"training step, every={every}", "torchwalk", step_s)
    hook_s = statistics.median(monitor.seconds for monitor in monitors[-ROUNDS:]) / STEPS
    benchmark.extra_info["hook_s_per_step"] = hook_s
    # Read as how many times the hook's time goes into a step with it.
    record_median(TRAINED, f"hook's share, every={every}", "torchwalk", hook_s)
    record_median(TRAINED, f"hook's share, every={every}", "training step", step_s)
