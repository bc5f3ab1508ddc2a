"""Every drop-in gives what the nn.Module method gives: same names, same order,
the very same objects, as an iterator, under every flag combination.

PyTorch is the oracle throughout: random trees from `module_trees()` and the
seed's networks are walked both ways and compared item by item.
"""

from __future__ import annotations

import inspect
import pickle

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import (
    assert_same_items,
    check_children,
    check_every_dropin,
    check_lookups,
    check_members,
    check_modules,
    module_trees,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn


def seed_network() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def shared_layer_network() -> nn.Sequential:
    layer = nn.Linear(8, 8)
    return nn.Sequential(layer, nn.ReLU(), layer)


def tied_weight_network() -> nn.Sequential:
    first, second = nn.Linear(8, 8), nn.Linear(8, 8)
    second.weight = first.weight
    return nn.Sequential(first, nn.ReLU(), second)


# --- random trees: 5 tests x the profile's max_examples (150 in CI: 750 trees) ---------


@given(tree=module_trees())
def test_named_parameters_and_parameters_match_pytorch(tree: nn.Module) -> None:
    check_members(tree, "parameters")


@given(tree=module_trees())
def test_named_buffers_and_buffers_match_pytorch(tree: nn.Module) -> None:
    check_members(tree, "buffers")


@given(tree=module_trees(), data=st.data())
def test_named_modules_and_modules_match_pytorch(tree: nn.Module, data: st.DataObject) -> None:
    every_module = list(tree.modules())
    seeds = data.draw(st.lists(st.sampled_from(every_module), max_size=3), label="memo")
    check_modules(tree, memo_seeds=seeds)


@given(tree=module_trees())
def test_children_and_lookups_match_pytorch_at_every_module(tree: nn.Module) -> None:
    for module in tree.modules():
        check_children(module)
    check_lookups(tree)


@given(tree=module_trees())
def test_walks_from_every_submodule_match_pytorch(tree: nn.Module) -> None:
    for module in list(tree.modules())[1:]:
        check_members(module, "parameters", prefixes=("",))
        check_members(module, "buffers", prefixes=("",))
        check_modules(module, prefixes=("",))


@pytest.mark.slow
@settings(max_examples=2000)
@given(tree=module_trees(max_depth=7, max_modules=150))
def test_large_random_trees_match_pytorch(tree: nn.Module) -> None:
    check_every_dropin(tree)


# --- the seed's networks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [seed_network, shared_layer_network, tied_weight_network], ids=lambda f: f.__name__
)
def test_seed_networks_match_pytorch(build) -> None:
    check_every_dropin(build())


def test_shared_layer_is_walked_once_unless_duplicates_are_kept() -> None:
    net = shared_layer_network()
    assert_same_items(list(tw.named_modules(net)), list(net.named_modules()), named=True)
    kept = list(tw.named_modules(net, remove_duplicate=False))
    assert_same_items(kept, list(net.named_modules(remove_duplicate=False)), named=True)
    assert kept[1][1] is kept[3][1] is net[0]
    assert_same_items(
        list(tw.named_parameters(net, remove_duplicate=False)),
        list(net.named_parameters(remove_duplicate=False)),
        named=True,
    )


def test_tied_weight_keeps_the_first_name() -> None:
    net = tied_weight_network()
    assert_same_items(list(tw.named_parameters(net)), list(net.named_parameters()), named=True)
    assert "2.weight" not in dict(tw.named_parameters(net))
    assert "2.weight" in dict(tw.named_parameters(net, remove_duplicate=False))


def test_results_are_iterators_not_lists() -> None:
    net = seed_network()
    for result in (
        tw.named_parameters(net),
        tw.parameters(net),
        tw.named_buffers(net),
        tw.buffers(net),
        tw.named_modules(net),
        tw.modules(net),
        tw.named_children(net),
        tw.children(net),
    ):
        assert not isinstance(result, list)
        assert iter(result) is result
    assert next(tw.parameters(net)) is next(net.parameters())
    assert next(tw.named_modules(net))[1] is net
    with pytest.raises(StopIteration):
        next(tw.buffers(net))


def test_root_is_yielded_under_the_prefix_object() -> None:
    net = seed_network()
    prefix = "".join(["ro", "ot"])  # a str object of its own
    name, module = next(tw.named_modules(net, prefix=prefix))
    assert module is net
    assert name == prefix
    their_name, _ = next(net.named_modules(prefix=prefix))
    assert their_name is prefix
    assert name is prefix


def test_named_modules_fills_the_memo_as_pytorch_does() -> None:
    net = shared_layer_network()
    ours, theirs = {net[1]}, {net[1]}
    assert_same_items(
        list(tw.named_modules(net, ours, "p")), list(net.named_modules(theirs, "p")), named=True
    )
    assert ours == theirs == set(net.modules())
    ours, theirs = {net[1]}, {net[1]}
    assert_same_items(
        list(tw.named_modules(net, ours, "p", False)),
        list(net.named_modules(theirs, "p", False)),
        named=True,
    )
    assert ours == theirs == {net[1]}


def test_lookups_on_lazy_parametrized_and_meta_modules() -> None:
    lazy = nn.LazyLinear(3)
    meta = nn.Linear(2, 2, device="meta")
    parametrized = nn.utils.parametrizations.weight_norm(nn.Linear(3, 3))
    root = nn.ModuleDict({"lazy": lazy, "meta": meta, "parametrized": parametrized})
    root.register_buffer("nothing", None)
    check_every_dropin(root)
    assert tw.get_parameter(root, "lazy.weight") is lazy.weight
    assert isinstance(tw.get_parameter(root, "lazy.weight"), nn.UninitializedParameter)
    assert tw.get_buffer(root, "nothing") is root.get_buffer("nothing") is None
    assert tw.get_parameter(root, "meta.weight").device == torch.device("meta")


DROPIN_NAMES = [
    "named_parameters",
    "parameters",
    "named_buffers",
    "buffers",
    "named_modules",
    "modules",
    "named_children",
    "children",
    "get_submodule",
    "get_parameter",
    "get_buffer",
]


@pytest.mark.parametrize("name", DROPIN_NAMES)
def test_signature_is_the_methods_with_the_module_first(name: str) -> None:
    ours = list(inspect.signature(getattr(tw, name)).parameters.values())
    theirs = list(inspect.signature(getattr(nn.Module, name)).parameters.values())
    assert ours[0].name == "module" and theirs[0].name == "self"
    assert [(p.name, p.kind, p.default) for p in ours[1:]] == [
        (p.name, p.kind, p.default) for p in theirs[1:]
    ]


@pytest.mark.parametrize("name", [*DROPIN_NAMES, "state_dict"])
def test_drop_ins_pickle_by_name_and_say_what_they_are(name: str) -> None:
    dropin = getattr(tw, name)
    assert pickle.loads(pickle.dumps(dropin)) is dropin
    assert dropin.__name__ == name and dropin.__module__ == "torchwalk.dropin"
    assert dropin.__doc__ and f"module.{name}(" in dropin.__doc__
    assert name in repr(dropin)
