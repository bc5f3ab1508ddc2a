"""How fast any exact ``state_dict`` could be: the cost of its result alone.

Issue 5 asks ``tw.state_dict`` to be at least 4x faster than
``m.state_dict()`` on llama-7b and deepseek-v3. Whatever walks the model, an
exact ``state_dict`` must return the same object: an OrderedDict with one
``tensor.detach()`` per key, and a ``_metadata`` OrderedDict with one
``{"version": ...}`` dict per module. This suite times building just that,
with the keys, tensors and versions already at hand (no walk, no key text,
no checks; C loops through ``map`` and ``zip``), next to PyTorch's call and
torchwalk's, in the same run. PyTorch's median over this floor's is the
largest speed-up any implementation can reach; the table at the end shows it
against the 4x target. No timing is asserted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchwalk as tw
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

MODELS = ["llama-7b", "deepseek-v3"]
FLOOR = "state_dict: its result alone (the most any implementation can gain)"


def result_alone(model: nn.Module) -> Callable[[], OrderedDict[str, Any]]:
    """A function building what ``model.state_dict()`` returns, from parts gathered beforehand."""
    kept = model.state_dict(keep_vars=True)
    keys, tensors = list(kept), list(kept.values())
    metadata = kept._metadata  # type: ignore[attr-defined]
    metadata_keys, versions = list(metadata), list(metadata.values())

    def build() -> OrderedDict[str, Any]:
        destination = OrderedDict(zip(keys, map(torch.Tensor.detach, tensors), strict=True))
        destination._metadata = OrderedDict(  # type: ignore[attr-defined]
            zip(metadata_keys, map(dict.copy, versions), strict=True)
        )
        return destination

    return build


def assert_same_result(built: OrderedDict[str, Any], expected: OrderedDict[str, Any]) -> None:
    """The floor builds the very result it claims to be the cost of."""
    assert list(built) == list(expected)
    for key, tensor in expected.items():
        assert type(built[key]) is type(tensor)
        assert built[key].data_ptr() == tensor.data_ptr()
        assert built[key].requires_grad == tensor.requires_grad
    assert built._metadata == expected._metadata  # type: ignore[attr-defined]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("implementation", ["torch", "torchwalk", "floor"])
def test_state_dict_against_its_floor(
    benchmark: BenchmarkFixture,
    zoo_model: Callable[[str], nn.Module],
    record_benchmark: Callable[..., None],
    model_name: str,
    implementation: str,
) -> None:
    model = zoo_model(model_name)
    benchmark.group = f"{model_name} state_dict and its floor"
    if implementation == "floor":
        build = result_alone(model)
        assert_same_result(build(), model.state_dict())
        benchmark(build)
        record_benchmark(benchmark, model_name, FLOOR, "torchwalk")
    elif implementation == "torch":
        benchmark(model.state_dict)
        record_benchmark(benchmark, model_name, "state_dict", "torch", target=4.0)
        record_benchmark(benchmark, model_name, FLOOR, "torch", target=4.0)
    else:
        benchmark(lambda: tw.state_dict(model))
        record_benchmark(benchmark, model_name, "state_dict", "torchwalk")
