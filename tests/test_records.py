"""The C++ records of a walk equal the pure-Python oracle's (tests/helpers/tree_oracle.py).

Every method of TreeRecords, on random trees: positions, leaves, first
occurrences, subtree figures, tie groups, tied-to links and totals. Shape
hashes are compared by the partition they induce (only equality matters).
"""

from __future__ import annotations

import torch
from helpers.module_trees import module_trees
from helpers.tree_oracle import OracleRecords
from hypothesis import given
from torch import nn
from torchwalk import _C


def assert_same_records(module: nn.Module, buffers: bool) -> None:
    ours = _C.walk_module(module, buffers)
    oracle = OracleRecords(module, buffers)
    assert ours.module_count() == oracle.module_count()
    assert ours.leaf_count() == oracle.leaf_count()
    for position in range(oracle.module_count()):
        for method in (
            "module_path",
            "module_name",
            "module_type",
            "module_parent",
            "module_depth",
            "module_children",
            "module_leaves",
            "module_first",
            "module_totals",
        ):
            assert getattr(ours, method)(position) == getattr(oracle, method)(position), (
                method,
                position,
            )
        assert ours.module_object(position) is oracle.module_object(position)
    for leaf in range(oracle.leaf_count()):
        for method in (
            "leaf_path",
            "leaf_name",
            "leaf_module",
            "leaf_is_buffer",
            "leaf_first",
            "leaf_is_lazy",
            "leaf_tied_to",
        ):
            assert getattr(ours, method)(leaf) == getattr(oracle, method)(leaf), (method, leaf)
        assert ours.leaf_tensor(leaf) is oracle.leaf_tensor(leaf)
    assert ours.tie_groups() == oracle.tie_groups()
    assert ours.totals() == oracle.totals()
    assert_same_partition(
        [ours.module_shape_hash(p) for p in range(ours.module_count())],
        [oracle.module_shape_hash(p) for p in range(oracle.module_count())],
    )


def assert_same_partition(ours: list[int], theirs: list[int]) -> None:
    """Positions with equal hashes on one side have equal hashes on the other."""
    first_of: dict[int, int] = {}
    their_first_of: dict[int, int] = {}
    for position, (mine, expected) in enumerate(zip(ours, theirs, strict=True)):
        assert first_of.setdefault(mine, position) == their_first_of.setdefault(expected, position)


@given(module_trees())
def test_records_equal_the_oracle(module: nn.Module) -> None:
    assert_same_records(module, buffers=True)


@given(module_trees())
def test_records_without_buffers_equal_the_oracle(module: nn.Module) -> None:
    assert_same_records(module, buffers=False)


def test_identical_layers_hash_alike_and_others_do_not() -> None:
    stack = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)] + [nn.Linear(4, 5)])
    stack.append(nn.Linear(4, 4, bias=False))
    stack.append(nn.Linear(4, 4, dtype=torch.float64))
    records = _C.walk_module(stack, True)
    hashes = [records.module_shape_hash(child) for child in records.module_children(0)]
    assert hashes[0] == hashes[1] == hashes[2]
    assert len(set(hashes[2:])) == 4
