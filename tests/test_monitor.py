"""`tw.Monitor`: per-module figures every N steps, each equal to torch's float64 reduction.

The oracle rolls the tensors of each module path up by concatenating them
(flattened) and reducing in float64, as the figures promise.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import module_trees
from helpers.monitor_oracle import assert_figures_close, expected_figures
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchwalk.monitor import ROOT_PATH


def _with_random_grads(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if isinstance(parameter, nn.UninitializedParameter):
            continue
        if not parameter.is_meta and parameter.dtype.is_floating_point:
            grad = torch.randn(parameter.shape, generator=generator).to(parameter.dtype)
            grad[grad.abs() < 0.3] = 0  # some zeros to count
            parameter.grad = grad
    return model


def _tensors(model: nn.Module, kind: str) -> dict[str, torch.Tensor]:
    """The model's gradients (``kind`` "grad") or weights with values, by parameter name."""
    found = {}
    for name, parameter in model.named_parameters():
        if isinstance(parameter, nn.UninitializedParameter):
            continue
        tensor = parameter.grad if kind == "grad" else parameter.detach()
        if tensor is not None and not tensor.is_meta:
            found[name] = tensor
    return found


def _expected(model: nn.Module, depth: int, kind: str) -> dict[str, float]:
    return expected_figures(_tensors(model, kind), kind=kind, depth=depth)


@settings(max_examples=40, deadline=None)
@given(module_trees(), st.integers(0, 3), st.integers(0, 1000))
def test_figures_equal_torch_per_module_path(root: nn.Module, depth: int, seed: int) -> None:
    model = _with_random_grads(root, seed)
    figures = tw.Monitor(model, depth=depth, weights=True).step()
    assert figures is not None
    assert_figures_close(
        figures, {**_expected(model, depth, "grad"), **_expected(model, depth, "weight")}
    )


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)), nn.Linear(2, 1)
    )


def test_only_every_nth_step_is_measured() -> None:
    model = _with_random_grads(_net(), 0)
    monitor = tw.Monitor(model, every=3)
    results = [monitor.step() for _ in range(7)]
    assert [result is not None for result in results] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
    ]


def test_default_depth_is_the_roots_children() -> None:
    model = _with_random_grads(_net(), 1)
    figures = tw.Monitor(model).step()
    assert figures is not None
    paths = {key.split("/")[1] for key in figures}
    assert paths == {"0", "2", "3", "total"}
    assert_figures_close(figures, _expected(model, 1, "grad"))


def test_depth_zero_rolls_everything_into_the_root() -> None:
    model = _with_random_grads(_net(), 2)
    figures = tw.Monitor(model, depth=0).step()
    assert figures is not None
    assert {key.split("/")[1] for key in figures} == {ROOT_PATH, "total"}


def test_optimizer_states_are_kinds_of_their_own() -> None:
    model = _net()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    monitor = tw.Monitor(model, optimizer=optimizer, depth=1)
    figures = monitor.step()
    assert figures is not None
    kinds = {key.split("/")[0] for key in figures}
    assert kinds == {"grad", "exp_avg", "exp_avg_sq"}
    for state in ("exp_avg", "exp_avg_sq"):
        values = torch.cat([optimizer.state[p][state].flatten() for p in model.parameters()])
        assert math.isclose(
            figures[f"{state}/total/l2"], float(torch.linalg.vector_norm(values.double()))
        )


def test_nonfinite_names_the_modules_deepest_first_in_backward_order() -> None:
    model = _with_random_grads(_net(), 3)
    model[0].bias.grad[1] = float("nan")
    model[2][1].weight.grad[0, 0] = float("inf")
    model[2][0].bias.grad[0] = float("nan")
    model[3].weight.grad[0, 0] = float("-inf")
    monitor = tw.Monitor(model)
    figures = monitor.step()
    assert figures is not None
    assert monitor.nonfinite == ["2.1", "2.0", "3", "0"]
    assert figures["grad/2/nonfinite"] == 2 and figures["grad/total/nonfinite"] == 4
    model.zero_grad()
    _with_random_grads(model, 4)
    monitor.step()
    assert monitor.nonfinite == []


def test_last_holds_the_rows_of_the_step() -> None:
    model = _with_random_grads(_net(), 5)
    monitor = tw.Monitor(model, weights=True)
    assert monitor.last is None
    monitor.step()
    assert monitor.last is not None
    names = [row.name for row in monitor.last.rows]
    parameter_names = [name for name, _ in model.named_parameters()]
    assert names == [f"grad/{n}" for n in parameter_names] + [
        f"weight/{n}" for n in parameter_names
    ]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"every": 0}, "every must be a positive int"),
        ({"every": 1.5}, "every must be a positive int"),
        ({"depth": -1}, "depth must be None or an int"),
        ({"grads": False}, "nothing to watch"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        tw.Monitor(_net(), **options)  # type: ignore[arg-type]


def test_a_monitor_watches_a_module() -> None:
    with pytest.raises(TypeError, match="watches an nn.Module"):
        tw.Monitor({"w": torch.zeros(1)})  # type: ignore[arg-type]


class _TaggedParameter(nn.Parameter):
    """A Parameter subclass: its `.grad` is read through Python's attribute access."""


def test_gradients_of_parameter_subclasses_and_meta_tensors() -> None:
    model = _net()
    model[0].weight = _TaggedParameter(model[0].weight.detach().clone())
    _with_random_grads(model, 6)
    model[3].bias = nn.Parameter(torch.empty(1, device="meta"))
    model[3].bias.grad = torch.empty(1, device="meta")  # no values: no row
    figures = tw.Monitor(model, depth=1).step()
    assert figures is not None
    expected = _expected(model, 1, "grad")
    assert_figures_close(figures, expected)
