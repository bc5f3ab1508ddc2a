"""The training-framework callbacks, driven by the real frameworks for a few CPU steps."""

from __future__ import annotations

import math

import pytest
import torch
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
    """Keeps what was logged at each optimizer step (the logged metrics after it)."""

    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []
        self.gradients: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # type: ignore[no-untyped-def]
        self.gradients.append(
            {name: p.grad.clone() for name, p in pl_module.named_parameters() if p.grad is not None}
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def _fit(monitor: lightning.Callback, steps: int = 4) -> _Recorder:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    recorder = _Recorder()
    trainer = lightning.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, recorder],
    )
    trainer.fit(_Regression(), DataLoader(data, batch_size=8))
    return recorder


def test_lightning_stats_monitor_logs_every_nth_optimizer_step() -> None:
    from torchwalk.integrations.lightning import StatsMonitor

    recorder = _fit(StatsMonitor(every=2, depth=2, optimizer_states=True), steps=4)
    logged_steps = [
        index for index, metrics in enumerate(recorder.logged) if "grad/total/l2" in metrics
    ]
    assert logged_steps[0] == 1  # the second optimizer step is the first logged
    last = recorder.logged[1]
    grads = recorder.gradients[1]
    expected = float(
        torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads.values()]).double())
    )
    assert math.isclose(last["grad/total/l2"], expected, rel_tol=1e-5)
    assert "grad/body.0/absmax" in last and "exp_avg/total/l2" in last


def test_lightning_stats_monitor_refuses_bad_options() -> None:
    from torchwalk.integrations.lightning import StatsMonitor

    with pytest.raises(ValueError, match="every must be a positive int"):
        StatsMonitor(every=0)
