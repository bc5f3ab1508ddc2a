"""Errors are PyTorch's: get_* misses raise its exception type with its message,
and a first argument that is not a module raises what calling the method on it
raises (``tw.named_parameters(None)`` as ``None.named_parameters()``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import (
    MEMBER_NAMES,
    assert_same_lookup,
    assert_same_walk,
    check_members,
    check_modules,
    lookup_targets,
    module_trees,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchwalk import bench

LOOKUPS = ("get_submodule", "get_parameter", "get_buffer")


def network() -> nn.Module:
    """Parameters, buffers (one None), a non-persistent buffer, nesting and a
    parametrized module: every way a target can miss."""
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Sequential(nn.ReLU()))
    net.register_buffer("empty", None)
    net.register_buffer("scratch", torch.zeros(1), persistent=False)
    net.register_parameter("missing_weight", None)
    net.add_module("hole", None)
    net.plain_attribute = 3
    nn.utils.parametrizations.weight_norm(net[0])
    return net


MISSES = [
    "nope",
    "0.nope",
    "0.weight",  # a parametrized property, not a Parameter, not a module
    "0.bias",
    "0.weight.nope",
    "0.bias.data",
    "0.parametrizations.weight.original0",
    "0.parametrizations.weight.nope",
    "1.running_mean",
    "1.num_batches_tracked",
    "1.weight",
    "2.0",
    "2.0.weight",
    "2.1",
    "empty",
    "empty.x",
    "scratch",
    "missing_weight",
    "hole",
    "hole.weight",
    "plain_attribute",
    "plain_attribute.real",
    "training",
    "forward",
    "_modules",
    "_parameters",
    "__class__",
    "__dict__",
    "",
    ".",
    "..",
    "0.",
    ".0",
    "0..weight",
    "ß",
    "0.层",
    "🙂.weight",
]


@pytest.mark.parametrize("lookup", LOOKUPS)
@pytest.mark.parametrize("target", MISSES)
def test_lookup_misses_raise_pytorchs_error(lookup: str, target: str) -> None:
    net = network()
    assert_same_lookup(
        partial(getattr(tw, lookup), net, target), partial(getattr(net, lookup), target)
    )


@pytest.mark.parametrize("lookup", LOOKUPS)
@pytest.mark.parametrize("target", [None, 1, b"0", ("0",), b"0"], ids=repr)
def test_lookup_with_a_non_str_target_raises_pytorchs_error(lookup: str, target: Any) -> None:
    net = network()
    assert_same_lookup(
        partial(getattr(tw, lookup), net, target), partial(getattr(net, lookup), target)
    )


@given(tree=module_trees(max_modules=10), data=st.data())
def test_lookup_misses_in_random_trees_raise_pytorchs_error(
    tree: nn.Module, data: st.DataObject
) -> None:
    valid = lookup_targets(tree)
    # Mutate valid targets into near misses: a wrong last atom, an extra atom,
    # a dropped atom, a doubled dot.
    target = data.draw(st.sampled_from(valid), label="target")
    atom = data.draw(st.sampled_from(MEMBER_NAMES + ("weight", "bias", "training", "")))
    atoms = target.split(".")
    for miss in {
        ".".join(atoms[:-1] + [atom]),
        f"{target}.{atom}",
        ".".join(atoms[1:]),
        target.replace(".", "..", 1),
    }:
        for lookup in LOOKUPS:
            assert_same_lookup(
                partial(getattr(tw, lookup), tree, miss), partial(getattr(tree, lookup), miss)
            )


NOT_MODULES = [
    pytest.param(None, id="None"),
    pytest.param(1, id="int"),
    pytest.param({}, id="dict"),
    pytest.param("str", id="str"),
    pytest.param(torch.zeros(2), id="tensor"),
    pytest.param(nn.Parameter(torch.zeros(2)), id="parameter"),
    pytest.param(nn.Linear, id="module-class"),
    pytest.param([nn.Linear(1, 1)], id="list-of-modules"),
]

TARGETS = {"get_submodule": "", "get_parameter": "weight", "get_buffer": "running_mean"}
EVERY_DROPIN = list(bench.FUNCTIONS)


def outcome(call: Callable[[], Any]) -> tuple[type[BaseException], str] | None:
    """The type and message of the error `call()` raises (consuming an iterator), or None."""
    try:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
    except Exception as error:
        return type(error), str(error)
    return None


@pytest.mark.parametrize("not_a_module", NOT_MODULES)
@pytest.mark.parametrize("name", EVERY_DROPIN)
def test_non_module_first_argument_raises_what_the_method_call_raises(
    name: str, not_a_module: Any
) -> None:
    args = (TARGETS[name],) if name in TARGETS else ()
    theirs = outcome(lambda: getattr(not_a_module, name)(*args))
    assert theirs is not None
    assert outcome(lambda: getattr(tw, name)(not_a_module, *args)) == theirs


@pytest.mark.parametrize("name", [name for name in EVERY_DROPIN if name not in TARGETS])
def test_installed_methods_called_on_a_non_module_raise_pytorchs_error(name: str) -> None:
    args = (TARGETS[name],) if name in TARGETS else ()
    pytorch_method = nn.Module.__dict__[name]
    with tw.installed():
        ours = outcome(lambda: getattr(nn.Module, name)(None, *args))
    assert ours is not None
    assert ours == outcome(lambda: pytorch_method(None, *args))


def test_an_error_leaves_no_exception_set() -> None:
    """After an error the next call works (no error left half-set)."""
    net = network()
    for _ in range(3):
        with pytest.raises(AttributeError):
            list(tw.named_parameters(None))
        assert [n for n, _ in tw.named_parameters(net)] == [n for n, _ in net.named_parameters()]


# --- calls Python refuses to bind: Python's own error, as with the method ------------

BADLY_BOUND_CALLS = {
    "too many positional arguments": (tuple(range(5)), {}),
    "an unknown keyword": ((), {"bogus": 1}),
    "the module given twice": ((), {"self": "the module again"}),
}


@pytest.mark.parametrize(
    ("name", "call"),
    [
        (name, call)
        for name in EVERY_DROPIN
        for call in BADLY_BOUND_CALLS
        # state_dict takes *args (deprecated positional destination, prefix, keep_vars)
        if not (name == "state_dict" and call == "too many positional arguments")
    ],
)
def test_arguments_python_cannot_bind_raise_the_methods_type_error(name: str, call: str) -> None:
    """The C++ entrance leaves such calls to Python: the same TypeError as the
    method's, naming the function (``Module.named_modules()`` vs ``named_modules()``)."""
    net = network()
    args, kwargs = BADLY_BOUND_CALLS[call]
    ours_kwargs = {("module" if key == "self" else key): value for key, value in kwargs.items()}
    with pytest.raises(TypeError) as theirs:
        getattr(nn.Module, name)(net, *args, **kwargs)
    with pytest.raises(TypeError) as ours:
        getattr(tw, name)(net, *args, **ours_kwargs)
    their_words = str(theirs.value).split("() ", 1)[1].replace("'self'", "'module'")
    assert str(ours.value).split("() ", 1)[1] == their_words


@pytest.mark.parametrize("name", EVERY_DROPIN)
def test_a_missing_module_raises_type_error(name: str) -> None:
    with pytest.raises(TypeError, match=r"missing \d required positional arguments?: 'module'"):
        getattr(tw, name)()


# --- odd arguments: whatever PyTorch does with them ------------------------------------


class Shouting(str):
    """A str subclass prefix: ``prefix + "."`` calls its __add__."""

    def __add__(self, other: str) -> str:
        return str.__add__(self.upper(), other)


ODD_PREFIXES = [None, 1, b"x", ("x",), Shouting("pre"), "\ud800", "a\x00b"]


@pytest.mark.parametrize("prefix", ODD_PREFIXES, ids=repr)
@pytest.mark.parametrize("leaves", ["parameters", "buffers"])
def test_odd_prefixes_give_pytorchs_results(leaves: str, prefix: Any) -> None:
    check_members(network(), leaves, prefixes=[prefix])
    check_members(nn.BatchNorm1d(2), leaves, prefixes=[prefix])  # a leaf: the root's own only


@pytest.mark.parametrize("prefix", ODD_PREFIXES, ids=repr)
def test_odd_prefixes_for_named_modules_give_pytorchs_results(prefix: Any) -> None:
    check_modules(network(), prefixes=[prefix])
    check_modules(nn.ReLU(), prefixes=[prefix])


@pytest.mark.parametrize("flag", [None, 0, 1, "", "no", [], [0], 2.5], ids=repr)
def test_truthy_and_falsy_flags_act_as_pytorchs(flag: Any) -> None:
    net = network()
    for leaves in ("parameters", "buffers"):
        for name in (f"named_{leaves}", leaves):
            kwargs = {"recurse": flag}
            assert_same_walk(
                partial(getattr(tw, name), net, **kwargs),
                partial(getattr(net, name), **kwargs),
                named=name.startswith("named"),
            )
        kwargs = {"remove_duplicate": flag}
        assert_same_walk(
            partial(getattr(tw, f"named_{leaves}"), net, **kwargs),
            partial(getattr(net, f"named_{leaves}"), **kwargs),
            named=True,
        )
    assert_same_walk(
        partial(tw.named_modules, net, remove_duplicate=flag),
        partial(net.named_modules, remove_duplicate=flag),
        named=True,
    )
    assert_same_walk(partial(tw.modules, net, flag), partial(net.modules, flag), named=False)


class CountingSet(set):
    """A memo whose add() is observable."""

    def add(self, item: Any) -> None:
        super().add(item)
        super().add(("added", id(item)))


def odd_memos(net: nn.Module) -> list[Any]:
    return [
        [],
        [net[1]],
        frozenset({net[1]}),
        {net[1]: None},
        CountingSet({net[1]}),
        {"not a module", 3.5, net[2]},
        (net[0],),
    ]


@pytest.mark.parametrize("remove_duplicate", [True, False])
@pytest.mark.parametrize("index", range(7))
def test_odd_memos_act_as_in_pytorch(index: int, remove_duplicate: bool) -> None:
    ours_net = network()
    ours, theirs = odd_memos(ours_net)[index], odd_memos(ours_net)[index]
    assert_same_walk(
        partial(tw.named_modules, ours_net, ours, "", remove_duplicate),
        partial(ours_net.named_modules, theirs, "", remove_duplicate),
        named=True,
    )
    assert type(ours) is type(theirs)
    if isinstance(ours, (set, frozenset, dict)):
        assert {id(item) for item in ours} == {id(item) for item in theirs} or (
            isinstance(ours, CountingSet) and len(ours) == len(theirs)
        )
    else:
        assert [id(item) for item in ours] == [id(item) for item in theirs]
