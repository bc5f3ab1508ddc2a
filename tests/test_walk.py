"""`tw.walk`: the snapshot's views equal the drop-ins (and PyTorch) at walk time.

Random trees (shared modules and parameters, None entries, lazy and
parametrized modules, meta tensors, non-ASCII names) from module_trees, plus
the sources and inputs a user can hand it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import assert_same_items, module_trees, run_isolated
from hypothesis import given
from torch import nn
from torchwalk.checkpoint_entries import CheckpointError


@given(module_trees())
def test_views_equal_pytorch(root: nn.Module) -> None:
    tree = tw.walk(root)
    assert_same_items(tree.named_parameters(), list(root.named_parameters()), named=True)
    assert_same_items(tree.named_buffers(), list(root.named_buffers()), named=True)
    assert_same_items(tree.named_modules(), list(root.named_modules()), named=True)
    assert len(tree) == len(list(root.parameters())) + len(list(root.buffers()))


@given(module_trees())
def test_every_name_reaches_its_tensor(root: nn.Module) -> None:
    tree = tw.walk(root)
    for name, parameter in root.named_parameters(remove_duplicate=False):
        assert tree[name] is parameter
    for name, buffer in root.named_buffers(remove_duplicate=False):
        assert tree[name] is buffer
    for name, module in root.named_modules():
        if name:  # the root has no name to look up
            assert tree[name] is module


@given(module_trees())
def test_walk_without_buffers(root: nn.Module) -> None:
    tree = tw.walk(root, buffers=False)
    assert_same_items(tree.named_parameters(), list(root.named_parameters()), named=True)
    assert tree.named_buffers() == []
    buffer_names = {name for name, _ in root.named_buffers(remove_duplicate=False)}
    tied_names = {name for group in tree.ties() for name in group.names}
    assert not tied_names & buffer_names


def test_snapshot_keeps_walk_time_state() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    tree = tw.walk(model)
    before = tree.named_parameters()
    model.append(nn.Linear(2, 3))
    assert_same_items(tree.named_parameters(), before, named=True)
    assert len(tree.named_parameters()) == 2


def test_getitem_reports_missing_names() -> None:
    tree = tw.walk(nn.Linear(2, 2))
    assert tree["weight"] is tree.named_parameters()[0][1]
    assert "bias" in tree and "nope" not in tree
    with pytest.raises(KeyError, match="nope"):
        tree["nope"]


def test_mapping_source_builds_the_hierarchy_from_dots() -> None:
    model = nn.Sequential(OrderedDict(enc=nn.Sequential(nn.Linear(3, 4)), head=nn.Linear(4, 2)))
    state = model.state_dict()
    tree = tw.walk(state)
    assert [name for name, _ in tree.named_parameters()] == list(state)
    assert all(tree[name] is tensor for name, tensor in state.items())
    assert tree.named_modules() == []
    assert tree.summary().totals.params == sum(t.numel() for t in state.values())


def test_a_mapping_lists_its_tensors_in_its_own_order() -> None:
    first, second, third = torch.zeros(1), torch.zeros(2), torch.zeros(3)
    tree = tw.walk({"a.w": first, "b.w": second, "a.v": third})
    assert [name for name, _ in tree.named_parameters()] == ["a.w", "b.w", "a.v"]
    # The drawing and the summary rows follow the hierarchy: a's tensors together.
    assert [row.path for row in tree.summary().rows] == ["", "a", "b"]


@pytest.mark.parametrize("source", [None, 3, [nn.Linear(1, 1)], torch.zeros(2)])
def test_rejects_what_is_not_a_model(source: object) -> None:
    with pytest.raises(TypeError, match="expects an nn.Module, a mapping of names to tensors or"):
        tw.walk(source)  # type: ignore[arg-type]


def test_a_missing_path_names_itself(tmp_path: Path) -> None:
    missing = tmp_path / "model"
    with pytest.raises(CheckpointError, match=f"{missing}: no such file or directory"):
        tw.walk(missing)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [({"a": 1}, "expected a tensor at 'a', got int"), ({1: torch.zeros(1)}, "names must be str")],
)
def test_rejects_bad_mappings(mapping: dict[object, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        tw.walk(mapping)  # type: ignore[arg-type]


class _Forgetful(nn.Module):
    def __init__(self) -> None:
        pass  # no super().__init__()


def _with_a_non_module_child() -> nn.Module:
    model = nn.Module()
    model._modules["odd"] = "not a module"  # type: ignore[assignment]
    return model


@pytest.mark.parametrize("build", [_with_a_non_module_child, _Forgetful])
def test_a_broken_tree_raises_what_pytorch_raises(build: Callable[[], nn.Module]) -> None:
    with pytest.raises(Exception) as pytorch:
        list(build().named_modules())
    with pytest.raises(type(pytorch.value)) as ours:
        tw.walk(build())
    assert str(ours.value) == str(pytorch.value)


def _cycle() -> None:
    outer = nn.Sequential(nn.Linear(1, 1))
    outer[0].loop = outer  # type: ignore[assignment]
    with pytest.raises(RecursionError, match="cycle"):
        tw.walk(outer)


def test_cycle_raises_recursion_error() -> None:
    run_isolated(_cycle)


def _deep_chain() -> None:
    root = link = nn.Module()
    depth = 100_000
    for _ in range(depth):
        link.inner = nn.Linear(1, 1, bias=False)
        link.next = nn.Module()
        link = link.next
    tree = tw.walk(root)
    # Names are left alone: together they are quadratic in the depth.
    assert len(tree) == depth
    assert tree.summary(depth=1).totals.params == depth
    assert tree.ties() == []


def test_deep_chain_walks() -> None:
    run_isolated(_deep_chain)
