"""The transformers callback, driven by a real transformers.Trainer for a few steps."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.command_line import run_example
from helpers.monitor_oracle import assert_figures_close, expected_figures
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # its import warns about optional dependencies
    transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer's

from torchwalk.integrations.transformers import StatsCallback  # noqa: E402

MAX_GRAD_NORM = 0.01
"""Far below the gradients' norm: every step is clipped."""

FORMATS = [torch.bfloat16, torch.float8_e4m3fn]


class _Regression(nn.Module):
    """A two-block regression model that returns its loss, as the Trainer expects."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 1)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.head(self.encoder(features)), labels)}


class _Recorder(transformers.TrainerCallback):
    """By optimizer step, the gradients and Adam's first moments where the callback samples."""

    def __init__(self) -> None:
        self.gradients: dict[int, dict[str, torch.Tensor]] = {}
        self.exp_avgs: dict[int, dict[str, torch.Tensor]] = {}

    def on_pre_optimizer_step(self, args, state, control, model, optimizer, **kwargs) -> None:  # type: ignore[no-untyped-def]
        step = state.global_step + 1
        parameters = list(model.named_parameters())
        self.gradients[step] = {
            name: p.grad.clone() for name, p in parameters if p.grad is not None
        }
        moments = {name: optimizer.state.get(p, {}).get("exp_avg") for name, p in parameters}
        self.exp_avgs[step] = {name: m.clone() for name, m in moments.items() if m is not None}


class _Reporter(transformers.TrainerCallback):
    """An in-memory ``report_to`` integration: what on_log gives it, by global step."""

    def __init__(self) -> None:
        self.logged: dict[int, dict[str, float]] = {}

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.logged.setdefault(state.global_step, {}).update(logs)


@dataclass
class _Run:
    trainer: Any
    reporter: _Reporter
    recorder: _Recorder
    callback: StatsCallback


def _trainer(folder: Path, callbacks: list[Any], **arguments: Any) -> Any:
    """A Trainer of _Regression: 6 optimizer steps of 2 micro-batches of 4 samples."""
    torch.manual_seed(0)
    features, labels = torch.randn(64, 4), torch.randn(64, 1)
    data = [{"features": x, "labels": y} for x, y in zip(features, labels, strict=True)]
    settings = {
        "output_dir": str(folder),
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 0.01,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        **arguments,
    }
    trainer = transformers.Trainer(
        model=_Regression(),
        args=transformers.TrainingArguments(**settings),
        train_dataset=data,
        callbacks=callbacks,
    )
    trainer.remove_callback(transformers.PrinterCallback)
    return trainer


def _train(folder: Path, callback: StatsCallback, **arguments: Any) -> _Run:
    """Train with a reporter and a recorder registered before the attached callback."""
    reporter, recorder = _Reporter(), _Recorder()
    trainer = _trainer(folder, [reporter, recorder], **arguments)
    callback.attach(trainer)
    trainer.train()
    return _Run(trainer, reporter, recorder, callback)


def _figures_by_step(logged: list[dict[str, float]]) -> dict[int, dict[str, float]]:
    """The callback's log entries, by global step, its figures alone."""
    return {
        int(entry["step"]): {key: value for key, value in entry.items() if "/" in key}
        for entry in logged
        if "grad/total/l2" in entry
    }


def _grad_norms(run: _Run) -> dict[int, float]:
    """The Trainer's own grad_norm, by global step."""
    history = run.trainer.state.log_history
    return {int(entry["step"]): entry["grad_norm"] for entry in history if "grad_norm" in entry}


@pytest.fixture(scope="module")
def clipped_run(tmp_path_factory: pytest.TempPathFactory) -> _Run:
    """Figures every 2 optimizer steps, gradients clipped to MAX_GRAD_NORM."""
    callback = StatsCallback(every=2, depth=2, optimizer_states=True, formats=FORMATS)
    return _train(tmp_path_factory.mktemp("clipped"), callback, max_grad_norm=MAX_GRAD_NORM)


def test_figures_are_logged_every_nth_optimizer_step_under_accumulation(
    clipped_run: _Run,
) -> None:
    # 12 micro-batches make 6 optimizer steps: `every` counts the optimizer steps.
    assert sorted(clipped_run.recorder.gradients) == [1, 2, 3, 4, 5, 6]
    assert sorted(_figures_by_step(clipped_run.trainer.state.log_history)) == [2, 4, 6]


def test_a_reporter_registered_before_the_callback_receives_the_figures(
    clipped_run: _Run,
) -> None:
    callbacks = clipped_run.trainer.callback_handler.callbacks
    assert callbacks.index(clipped_run.reporter) < callbacks.index(clipped_run.callback)
    logged = [{**logs, "step": step} for step, logs in clipped_run.reporter.logged.items()]
    assert _figures_by_step(logged) == _figures_by_step(clipped_run.trainer.state.log_history)


def test_the_figures_are_the_gradients_after_clipping(clipped_run: _Run) -> None:
    grad_norms = _grad_norms(clipped_run)
    for step, figures in _figures_by_step(clipped_run.trainer.state.log_history).items():
        gradients = clipped_run.recorder.gradients[step]
        expected = expected_figures(gradients, kind="grad", depth=2, formats=FORMATS)
        assert_figures_close(figures, expected)
        # The Trainer's grad_norm is the norm before clipping; the figures', after.
        assert grad_norms[step] > 10 * MAX_GRAD_NORM
        assert figures["grad/total/l2"] == pytest.approx(MAX_GRAD_NORM, rel=1e-4)


def test_the_optimizer_states_are_logged(clipped_run: _Run) -> None:
    for step, figures in _figures_by_step(clipped_run.trainer.state.log_history).items():
        moments = clipped_run.recorder.exp_avgs[step]
        assert_figures_close(figures, expected_figures(moments, kind="exp_avg", depth=2))
        assert "exp_avg_sq/encoder.0/l2" in figures


def test_the_trainers_own_log_entries_are_kept(clipped_run: _Run) -> None:
    # logging_steps=1: the Trainer logs its loss at every step, the callback's included.
    history = clipped_run.trainer.state.log_history
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3, 4, 5, 6]


def _same_norm(got: float, want: float) -> bool:
    return (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, rel_tol=1e-5)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ),
    ],
)
def test_unclipped_figures_measure_the_gradients_of_the_trainers_grad_norm(
    device: str, tmp_path: Path
) -> None:
    # On CUDA under fp16 mixed precision, grad_norm is measured after unscaling:
    # so are the figures (the loss scale starts at 65536).
    run = _train(
        tmp_path,
        StatsCallback(every=1),
        max_grad_norm=0,
        use_cpu=device == "cpu",
        fp16=device == "cuda",
    )
    grad_norms = _grad_norms(run)
    figures = _figures_by_step(run.trainer.state.log_history)
    assert sorted(figures) == [1, 2, 3, 4, 5, 6]
    for step, of_step in figures.items():
        assert _same_norm(of_step["grad/total/l2"], grad_norms[step]), step


@pytest.mark.parametrize("attached_to", ["no Trainer", "another Trainer"])
def test_a_callback_not_attached_to_the_training_trainer_refuses_to_train(
    attached_to: str, tmp_path: Path
) -> None:
    callback = StatsCallback()
    if attached_to == "another Trainer":
        callback.attach(_trainer(tmp_path / "other", []))
    trainer = _trainer(tmp_path, [callback])
    with pytest.raises(RuntimeError, match="attach"):
        trainer.train()


def test_attach_adds_the_callback_once(tmp_path: Path) -> None:
    given = StatsCallback()
    trainer = _trainer(tmp_path, [given])
    given.attach(trainer)
    added = StatsCallback()
    added.attach(trainer)
    callbacks = trainer.callback_handler.callbacks
    assert callbacks.count(given) == 1 and callbacks[-1] is added


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"every": 0}, "every must be a positive int"),
        ({"grads": False}, "nothing to watch"),
        ({"formats": ["int8"]}, "formats are names of floating-point dtypes"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        StatsCallback(**options)


def test_the_transformers_example_runs() -> None:
    completed = run_example("transformers_monitor.py")
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "3 logged steps" in completed.stdout
    assert "grad/transformer.h.1/l2" in completed.stdout
