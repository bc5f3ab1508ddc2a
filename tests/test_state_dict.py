"""`tw.state_dict` gives what `module.state_dict()` gives.

Same result type, keys in the same order (shared modules at every position),
the same tensors (detached views of the same memory, or the very objects with
``keep_vars=True``), the same ``_metadata``, the same hook calls and errors.
PyTorch is the oracle throughout.
"""

from __future__ import annotations

import io
import sys
import warnings
from collections import OrderedDict
from functools import partial
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import run_isolated
from helpers.state_dict_oracle import (
    assert_same_call,
    assert_same_state_dict,
    check_state_dict,
    decorated_trees,
)
from hypothesis import given
from torch import nn
from torch.overrides import TorchFunctionMode


@given(tree=decorated_trees())
def test_state_dict_matches_pytorch_on_random_trees(tree: nn.Module) -> None:
    check_state_dict(tree, lambda **flags: tw.state_dict(tree, **flags))


@given(tree=decorated_trees())
def test_state_dict_matches_pytorch_from_every_submodule(tree: nn.Module) -> None:
    for module in list(tree.modules())[1:]:
        check_state_dict(module, partial(tw.state_dict, module), prefixes=("",))


REAL_MODULES = {
    "seed": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)),
    "transformer": lambda: nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16), 2, enable_nested_tensor=False
    ),
    "lstm": lambda: nn.LSTM(4, 4, num_layers=2),
    "norms": lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.InstanceNorm2d(2)),
    "attention": lambda: nn.MultiheadAttention(8, 2),
}


@pytest.mark.parametrize("name", REAL_MODULES)
def test_real_modules_match_and_survive_a_round_trip(name: str) -> None:
    module = REAL_MODULES[name]()
    check_state_dict(module, lambda **flags: tw.state_dict(module, **flags))
    buffer = io.BytesIO()
    torch.save(tw.state_dict(module), buffer)
    buffer.seek(0)
    target = REAL_MODULES[name]()
    target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    loaded, saved = tw.state_dict(target), module.state_dict()
    assert list(loaded) == list(saved)
    for key, tensor in saved.items():
        assert loaded[key].dtype == tensor.dtype and loaded[key].shape == tensor.shape, key
        assert torch.equal(loaded[key], tensor), key


def test_non_persistent_buffers_are_left_out_and_versions_recorded() -> None:
    module = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3))
    module[1].register_buffer("scratch", torch.zeros(1), persistent=False)
    ours = tw.state_dict(module)
    assert "1.scratch" not in ours
    assert ours._metadata["0"] == {"version": 2}
    assert_same_state_dict(ours, module.state_dict(), keep_vars=False)


def test_shared_modules_appear_at_every_position() -> None:
    layer = nn.Linear(2, 2)
    module = nn.Sequential(layer, nn.ReLU(), layer)
    ours = tw.state_dict(module)
    assert list(ours) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert_same_state_dict(ours, module.state_dict(), keep_vars=False)


def test_destination_is_filled_and_returned() -> None:
    module = nn.Linear(2, 2)
    destination: dict[str, Any] = {"kept": 1}
    assert tw.state_dict(module, destination=destination, prefix="m.") is destination
    assert list(destination) == ["kept", "m.weight", "m.bias"]


def test_positional_arguments_warn_and_work_as_pytorch() -> None:
    module = nn.Linear(2, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = tw.state_dict(module, None, "p.", True)
        theirs = module.state_dict(None, "p.", True)
    assert [w.category for w in caught] == [FutureWarning, FutureWarning]
    assert str(caught[0].message) == str(caught[1].message)
    assert caught[0].filename == __file__
    assert_same_state_dict(ours, theirs, keep_vars=True)


def test_legacy_hook_result_replaces_the_root_result_only() -> None:
    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    module._register_state_dict_hook(lambda m, state, prefix, meta: {"replaced": 1})
    module[1]._register_state_dict_hook(lambda m, state, prefix, meta: {"ignored": 1})
    assert tw.state_dict(module) == {"replaced": 1} == module.state_dict()


def test_public_post_hook_returning_a_value_raises_as_pytorch() -> None:
    module = nn.Sequential(nn.Linear(2, 2))
    module[0].register_state_dict_post_hook(lambda *args: {"not": "allowed"})
    assert_same_call(lambda **f: tw.state_dict(module, **f), module.state_dict)


def test_get_extra_state_errors_are_pytorch_errors() -> None:
    class Broken(nn.Linear):
        def get_extra_state(self) -> Any:
            raise ValueError("no extra state today")

    module = nn.Sequential(nn.Linear(2, 2), Broken(2, 2))
    with pytest.raises(ValueError, match="no extra state today"):
        tw.state_dict(module)


class LoggedTensor(torch.Tensor):
    """A tensor subclass whose `detach` goes through `__torch_function__`."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclasses_and_torch_function_modes_detach_as_pytorch() -> None:
    module = nn.Linear(2, 2)
    module.register_buffer("logged", torch.zeros(2).as_subclass(LoggedTensor))
    ours, theirs = tw.state_dict(module), module.state_dict()
    assert type(ours["logged"]) is LoggedTensor
    assert_same_state_dict(ours, theirs, keep_vars=False)

    class CountDetach(TorchFunctionMode):
        calls = 0

        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            if func is torch.Tensor.detach:
                CountDetach.calls += 1
            return func(*args, **(kwargs or {}))

    with CountDetach():
        ours = tw.state_dict(module)
    ours_calls, CountDetach.calls = CountDetach.calls, 0
    with CountDetach():
        theirs = module.state_dict()
    assert ours_calls == CountDetach.calls == 3
    assert_same_state_dict(ours, theirs, keep_vars=False)


def test_non_bool_keep_vars_and_odd_prefixes_are_handed_to_pytorch() -> None:
    module = nn.Sequential(nn.Linear(2, 2))
    for flags in ({"keep_vars": 1}, {"keep_vars": None}, {"prefix": "ß."}):
        assert_same_state_dict(
            tw.state_dict(module, **flags), module.state_dict(**flags), keep_vars=False
        )


def test_a_module_cycle_raises_recursion_error() -> None:
    outer = nn.Sequential(nn.Linear(2, 2))
    inner = nn.Sequential(outer)
    outer.add_module("back", inner)
    with pytest.raises(RecursionError, match="cycle"):
        tw.state_dict(outer)


def deep_chain_state_dict() -> None:
    root = link = nn.Sequential()
    for _ in range(100_000):
        child = nn.Sequential()
        link.add_module("0", child)
        link = child
    link.add_module("0", nn.Linear(1, 1))
    state = tw.state_dict(root)
    assert len(state) == 2 and len(state._metadata) == 100_002
    assert next(iter(state)).endswith("0.weight")
    assert sys.getrecursionlimit() < 100_000


def test_a_100000_deep_chain_saves() -> None:
    run_isolated(deep_chain_state_dict)


def test_the_result_is_an_ordered_dict_with_ordered_metadata() -> None:
    ours = tw.state_dict(nn.Linear(2, 2))
    assert type(ours) is OrderedDict and type(ours._metadata) is OrderedDict
