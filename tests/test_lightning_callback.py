"""The Lightning callback, driven by a real lightning.Trainer for a few CPU steps."""

from __future__ import annotations

import pytest
import torch
from helpers.command_line import run_example
from helpers.monitor_oracle import assert_figures_close, expected_figures
from torch import nn

lightning = pytest.importorskip("lightning.pytorch")

# Lightning's own code, under this torch, warns about torch's pytree API.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"
)


class _Regression(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self.body(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.01)


class _Recorder(lightning.Callback):
    """Keeps each optimizer step's gradients."""

    def __init__(self) -> None:
        self.gradients: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # type: ignore[no-untyped-def]
        self.gradients.append(
            {name: p.grad.clone() for name, p in pl_module.named_parameters() if p.grad is not None}
        )


class _MemoryLogger(lightning.loggers.Logger):
    """Keeps what is logged, by step."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.setdefault(step or 0, {}).update(metrics)

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        pass


FORMATS = [torch.bfloat16, torch.float8_e4m3fn]


def _fit(monitor: lightning.Callback, steps: int = 4) -> tuple[_Recorder, _MemoryLogger]:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    recorder = _Recorder()
    logger = _MemoryLogger()
    trainer = lightning.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, recorder],
    )
    trainer.fit(_Regression(), DataLoader(data, batch_size=8))
    return recorder, logger


def test_lightning_stats_monitor_logs_every_nth_optimizer_step() -> None:
    from torchwalk.integrations.lightning import StatsMonitor

    monitor = StatsMonitor(every=2, depth=2, optimizer_states=True, formats=FORMATS)
    recorder, logger = _fit(monitor, steps=6)
    logged = {step: m for step, m in logger.logged.items() if "grad/total/l2" in m}
    # Optimizer steps 2, 4 and 6, sampled before the global step counts them.
    assert sorted(logged) == [1, 3, 5]
    for step, metrics in logged.items():
        assert_figures_close(
            metrics,
            expected_figures(recorder.gradients[step], kind="grad", depth=2, formats=FORMATS),
        )
        assert "exp_avg/total/l2" in metrics


def test_lightning_stats_monitor_refuses_bad_options() -> None:
    from torchwalk.integrations.lightning import StatsMonitor

    with pytest.raises(ValueError, match="every must be a positive int"):
        StatsMonitor(every=0)
    with pytest.raises(ValueError, match="formats are names of floating-point dtypes"):
        StatsMonitor(formats=["int8"])


def test_the_lightning_example_runs() -> None:
    completed = run_example("lightning_monitor.py")
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "3 logged steps" in completed.stdout
    assert "exp_avg/encoder.0/l2" in completed.stdout
