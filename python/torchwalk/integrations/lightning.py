"""A Lightning callback that logs :class:`torchwalk.Monitor` figures.

::

    from torchwalk.integrations.lightning import StatsMonitor

    trainer = lightning.Trainer(callbacks=[StatsMonitor(every=50, weights=True)])

Importing this module needs ``lightning`` (``lightning.pytorch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from torchwalk.monitor import Monitor, check_options


class StatsMonitor(pl.Callback):
    """Log per-module gradient (and weight, and optimizer-state) figures while training.

    It samples each optimizer step in ``on_before_optimizer_step``: after
    backward and, under mixed precision, after the gradients are unscaled;
    **before** gradient clipping and before ``optimizer.step()``. Every
    ``every``-th optimizer step (gradient accumulation counts one step per
    optimizer step) it logs the :class:`torchwalk.Monitor` figures straight
    to each of ``trainer.loggers``, with ``log_metrics(figures,
    step=trainer.global_step)``, at that step only (not through
    ``log_dict``, which from this hook would log them again at every later
    step). The global step does not count the sampled step yet: the figures
    of optimizer step ``n`` are logged at step ``n - 1``.

    Args:
        every, depth, grads, weights, formats: as :class:`torchwalk.Monitor`'s.
        optimizer_states (bool): also log the optimizer's state tensors
            (``exp_avg``, ``exp_avg_sq``, ...) of the step's optimizer.
            Default: ``False``.

    Attributes:
        monitors (dict): the monitors of the current fit (made at its first
            optimizer step; one per optimizer with ``optimizer_states``),
            whose ``nonfinite`` and ``last`` can be read.
    """

    def __init__(
        self,
        *,
        every: int = 1,
        depth: int | None = None,
        grads: bool = True,
        weights: bool = False,
        optimizer_states: bool = False,
        formats: Sequence[str | torch.dtype] = (),
    ) -> None:
        check_options(
            every=every,
            depth=depth,
            grads=grads,
            weights=weights,
            states=optimizer_states,
            formats=formats,
        )
        self._options: dict[str, Any] = {
            "every": every,
            "depth": depth,
            "grads": grads,
            "weights": weights,
            "formats": formats,
        }
        self._optimizer_states = optimizer_states
        self.monitors: dict[int, Monitor] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.monitors = {}

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # With optimizer states, one monitor (and one step count) per optimizer.
        key = id(optimizer) if self._optimizer_states else 0
        monitor = self.monitors.get(key)
        if monitor is None:
            monitor = Monitor(
                pl_module,
                optimizer=optimizer if self._optimizer_states else None,
                **self._options,
            )
            self.monitors[key] = monitor
        figures = monitor.step()
        if figures:
            # Straight to the loggers, at this step only: values given to
            # `log_dict` from a hook are logged again at every later step.
            for logger in trainer.loggers:
                logger.log_metrics(figures, step=trainer.global_step)


__all__ = ["StatsMonitor"]
