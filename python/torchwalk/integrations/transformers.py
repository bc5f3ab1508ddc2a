"""A transformers ``TrainerCallback`` that logs :class:`torchwalk.Monitor` figures.

::

    from torchwalk.integrations.transformers import StatsCallback

    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    StatsCallback(every=50, weights=True).attach(trainer)
    trainer.train()

Importing this module needs ``transformers`` (and its Trainer, ``accelerate``).

Why ``attach(trainer)``: the figures go through the Trainer's own
``Trainer.log``, the one call that both appends to ``state.log_history`` and
runs every callback's ``on_log``. A callback cannot add its keys to the
Trainer's ``logs`` in ``on_log`` instead: ``Trainer.log`` copies ``logs``
into ``log_history`` before any ``on_log`` runs, and the ``report_to``
integrations (WandbCallback, TensorBoardCallback, ...) come before the
callbacks a user adds, so they would have reported without the keys. And the
Trainer gives its callbacks neither itself nor its callback handler (only the
model, the processing class, the optimizer, the scheduler and the
dataloaders), so the Trainer is handed over explicitly, as transformers does
for its own ``JITCheckpointCallback`` (``set_trainer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from torchwalk.monitor import Monitor, check_options

if TYPE_CHECKING:
    from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments


class StatsCallback(TrainerCallback):
    """Log per-module gradient (and weight, and optimizer-state) figures while a Trainer trains.

    It samples each optimizer step in ``on_pre_optimizer_step``: after the
    backward of the step's last micro-batch (the gradients summed over the
    ``gradient_accumulation_steps``), after the gradients are unscaled under
    fp16 mixed precision (the Trainer's clipping, or its norm when it does not
    clip, unscales them), **after** gradient clipping to ``max_grad_norm``,
    and before ``optimizer.step()`` and ``zero_grad()``. transformers has no
    callback event between backward and clipping, so with clipping on,
    ``grad/total/l2`` is at most ``max_grad_norm``, whereas the Trainer's own
    ``grad_norm`` is the norm before clipping.

    On every ``every``-th optimizer step (global steps ``every``,
    ``2 * every``, ...; gradient accumulation counts optimizer steps, and a
    resumed run keeps the same steps) it logs the :class:`torchwalk.Monitor`
    figures with the Trainer's ``log`` at the end of that step, so at the
    same global step as the Trainer's own ``loss`` and ``grad_norm`` of those
    gradients: as a log entry of its own, into ``trainer.state.log_history``
    and to every callback's ``on_log`` (the ``report_to`` integrations, and
    the Trainer's console printer, included).

    Args:
        every, depth, grads, weights, formats: as :class:`torchwalk.Monitor`'s.
        optimizer_states (bool): also log the optimizer's state tensors
            (``exp_avg``, ``exp_avg_sq``, ...). Default: ``False``.

    Attributes:
        monitor (Monitor or None): the monitor of the current ``train()``
            (made at its first optimizer step), whose ``nonfinite`` and
            ``last`` can be read.
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
        self._every = every
        self._options: dict[str, Any] = {
            "depth": depth,
            "grads": grads,
            "weights": weights,
            "formats": formats,
        }
        self._optimizer_states = optimizer_states
        self._trainer: Trainer | None = None
        self._figures: dict[str, float] | None = None  # sampled, logged at the step's end
        self.monitor: Monitor | None = None

    def attach(self, trainer: Trainer) -> None:
        """Log through ``trainer``, and add this callback to its callbacks unless already there.

        Call it before ``trainer.train()``; ``train()`` raises RuntimeError
        for a callback attached to no Trainer, or to another one.
        """
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._trainer is None or self._trainer.state is not state:
            raise RuntimeError(
                "StatsCallback logs through the Trainer that trains: call "
                "`callback.attach(trainer)` with that Trainer before `trainer.train()`"
            )
        self.monitor = None
        self._figures = None

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # global_step counts the optimizer steps done before this one.
        if (state.global_step + 1) % self._every:
            return
        if self.monitor is None:
            # The steps are counted here, by the global step: the monitor measures at each call.
            self.monitor = Monitor(
                kwargs["model"],
                every=1,
                optimizer=kwargs["optimizer"] if self._optimizer_states else None,
                **self._options,
            )
        self._figures = self.monitor.step()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl | None:
        # Logged here, not when sampled: global_step now counts this step, as it
        # does when the Trainer logs the grad_norm of the same gradients.
        if self._figures is None:
            return None
        assert self._trainer is not None  # on_train_begin made sure
        figures, self._figures = self._figures, None
        # Trainer.log ends with the callbacks' on_log, which clears should_log:
        # keep the Trainer's own decision to log its loss at this step.
        should_log = control.should_log
        self._trainer.log(figures)
        control.should_log = should_log
        return control


__all__ = ["StatsCallback"]
