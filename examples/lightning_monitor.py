"""Per-module gradient statistics while Lightning trains, every N optimizer steps.

    python examples/lightning_monitor.py

A small regression model trains for a few steps on the CPU with
torchwalk's StatsMonitor callback, which logs, every 2 optimizer steps, the
L2 norm, largest magnitude, mean, std, fraction of zeros and count of
non-finite values of the gradients (and of AdamW's moments) of each of the
model's blocks, to the Trainer's loggers. The CSV logger's file
is printed at the end.
"""

from __future__ import annotations

import csv
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchwalk.integrations.lightning import StatsMonitor


class Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64))
        self.head = nn.Linear(64, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self.head(self.encoder(inputs)), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def main() -> None:
    warnings.filterwarnings("ignore")  # Lightning's advice about workers and logging
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 16), torch.randn(256, 1))
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            max_steps=6,
            accelerator="cpu",
            logger=CSVLogger(folder, name="run"),
            log_every_n_steps=1,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[StatsMonitor(every=2, depth=2, optimizer_states=True)],
        )
        trainer.fit(Regression(), DataLoader(data, batch_size=32))
        metrics = next(Path(folder).rglob("metrics.csv"))
        with open(metrics, newline="") as file:
            rows = [row for row in csv.DictReader(file) if row.get("grad/total/l2")]
    print(f"{len(rows)} logged steps; the last one:")
    for key, value in sorted(rows[-1].items()):
        if value and "/" in key:
            print(f"  {key:32s} {float(value):.4g}")


if __name__ == "__main__":
    main()
