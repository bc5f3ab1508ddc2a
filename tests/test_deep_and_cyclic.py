"""Trees deeper than Python's recursion limit walk; module cycles never hang or crash.

PyTorch's own walk recurses, so it raises RecursionError on a 100,000-deep
chain: the oracle there is the chain's known structure. For moderately deep
chains PyTorch answers too, in a thread with a large stack and a raised
recursion limit. A cycle walked with remove_duplicate=True is PyTorch's
result; with remove_duplicate=False torchwalk raises RecursionError at once.

Each check runs in a child interpreter (``python -c``) with a timeout, so a
crash or a hang fails its test instead of killing the run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import run_isolated
from torch import nn


def with_deep_stack(call: Callable[[], Any], recursion_limit: int) -> Any:
    """`call()` in a thread with a 512 MiB stack and a raised recursion limit:
    how PyTorch's recursive walk can answer for a moderately deep chain."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # re-raised in the caller
            outcome["error"] = error

    old_limit = sys.getrecursionlimit()
    old_stack = threading.stack_size(512 * 1024 * 1024)
    sys.setrecursionlimit(recursion_limit)
    try:
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    finally:
        sys.setrecursionlimit(old_limit)
        threading.stack_size(old_stack)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- deep chains -----------------------------------------------------------------------


def chain(depth: int) -> tuple[nn.Module, list[nn.Module]]:
    """root -> link 1 -> ... -> link `depth`, each link named `c` with a parameter
    `w`, a buffer `b` and, every tenth link, a None parameter and a None child."""
    root = nn.Module()
    links = []
    parent = root
    for level in range(depth):
        link = nn.Module()
        link.register_parameter("w", nn.Parameter(torch.empty(1)))
        link.register_buffer("b", torch.empty(0), persistent=level % 2 == 0)
        if level % 10 == 0:
            link.register_parameter("none", None)
            link.register_module("hole", None)
        parent.add_module("c", link)
        links.append(link)
        parent = link
    return root, links


def assert_same_objects(ours: Any, expected: list[Any]) -> None:
    got = list(ours)
    assert len(got) == len(expected)
    assert all(mine is theirs for mine, theirs in zip(got, expected, strict=True))


def check_100k_chain_walks() -> None:
    depth = 100_000
    root, links = chain(depth)
    modules = [root, *links]
    assert_same_objects(tw.modules(root), modules)
    assert_same_objects(tw.modules(root, remove_duplicate=False), modules)
    assert_same_objects(tw.parameters(root), [link.w for link in links])
    assert_same_objects(tw.buffers(root), [link.b for link in links])
    assert_same_objects(tw.children(root), [links[0]])
    assert_same_objects(tw.parameters(root, recurse=False), [])
    # get_submodule is iterative in PyTorch too: it answers for any depth.
    target = ".".join(["c"] * depth)
    assert tw.get_submodule(root, target) is root.get_submodule(target) is links[-1]
    assert tw.get_parameter(root, target + ".w") is root.get_parameter(target + ".w")
    assert tw.get_buffer(root, target + ".b") is root.get_buffer(target + ".b")
    with pytest.raises(AttributeError) as ours:
        tw.get_submodule(root, target + ".c")
    with pytest.raises(AttributeError) as theirs:
        root.get_submodule(target + ".c")
    assert str(ours.value) == str(theirs.value)
    # The bottom half as a root of its own, and a module shared at the bottom.
    assert_same_objects(tw.modules(links[depth // 2]), links[depth // 2 :])
    leaf = nn.Linear(1, 1)
    links[-1].add_module("x", leaf)
    links[-2].add_module("y", leaf)
    assert_same_objects(tw.modules(root), [*modules, leaf])
    assert len(list(tw.modules(root, remove_duplicate=False))) == depth + 3


def check_named_walks_of_a_5k_chain_match_pytorch() -> None:
    depth = 5_000
    root, links = chain(depth)
    paths = [".".join(["c"] * (level + 1)) for level in range(depth)]
    expected_modules = [("", root), *zip(paths, links, strict=True)]
    ours = list(tw.named_modules(root))
    assert [name for name, _ in ours] == [name for name, _ in expected_modules]
    assert all(m is e for (_, m), (_, e) in zip(ours, expected_modules, strict=True))
    recursion_limit = 4 * depth + 1000
    for call in (
        lambda m: m.named_modules(),
        lambda m: m.named_modules(prefix="p", remove_duplicate=False),
        lambda m: m.named_parameters(),
        lambda m: m.named_parameters(prefix="ß", remove_duplicate=False),
        lambda m: m.named_buffers(),
        lambda m: m.named_buffers(prefix="x.y", remove_duplicate=False),
    ):
        theirs = with_deep_stack(lambda call=call: list(call(root)), recursion_limit)
        ours = list(call(_Dropins(root)))
        assert [name for name, _ in ours] == [name for name, _ in theirs]
        assert all(a is b for (_, a), (_, b) in zip(ours, theirs, strict=True))
    assert [name for name, _ in tw.named_parameters(root)] == [f"{p}.w" for p in paths]


class _Dropins:
    """`module.named_modules(...)` spelled as the drop-ins, for shared call tables."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def named_modules(self, **kwargs: Any) -> Any:
        return tw.named_modules(self.module, **kwargs)

    def named_parameters(self, **kwargs: Any) -> Any:
        return tw.named_parameters(self.module, **kwargs)

    def named_buffers(self, **kwargs: Any) -> Any:
        return tw.named_buffers(self.module, **kwargs)


def test_100k_deep_chain_walks() -> None:
    run_isolated(check_100k_chain_walks, timeout=240)


def test_named_walks_of_a_5k_deep_chain_match_pytorch() -> None:
    run_isolated(check_named_walks_of_a_5k_chain_match_pytorch, timeout=120)


# --- cycles ----------------------------------------------------------------------------


class Custom(nn.Module):
    """A class torchwalk hands back to PyTorch (it overrides named_modules)."""

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):  # noqa: ANN001, ANN201
        return super().named_modules(memo, prefix, remove_duplicate)


def cyclic_graphs() -> dict[str, nn.Module]:
    self_loop = nn.Linear(2, 2)
    self_loop.add_module("me", self_loop)

    first, second = nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.BatchNorm1d(2))
    first.add_module("second", second)
    second.add_module("first", first)

    below_root = nn.ModuleList([nn.Linear(2, 2), nn.ModuleList([nn.ReLU()])])
    below_root[1].append(below_root[1])  # root -> 1 -> 1 -> ...

    shared_in_cycle = nn.Linear(2, 2)
    ring = nn.ModuleDict({"a": nn.Sequential(shared_in_cycle), "ß": shared_in_cycle})
    ring["a"].append(ring)

    through_custom = Custom()
    through_custom.inner = nn.Sequential(nn.Linear(2, 2))
    through_custom.inner.append(through_custom)

    return {
        "self_loop": self_loop,
        "two_cycle": first,
        "cycle_below_root": below_root,
        "ring_with_shared_module": ring,
        "through_a_handed_back_class": through_custom,
    }


def check_cycles_with_remove_duplicate_match_pytorch() -> None:
    from helpers.module_trees import assert_same_walk, check_children, check_lookups

    for root in cyclic_graphs().values():
        for prefix in ("", "p"):
            for leaves in ("parameters", "buffers"):
                ours_named, theirs_named = (
                    getattr(tw, f"named_{leaves}"),
                    getattr(root, f"named_{leaves}"),
                )
                ours, theirs = getattr(tw, leaves), getattr(root, leaves)
                for recurse in (True, False):
                    assert_same_walk(
                        partial(ours_named, root, prefix, recurse),
                        partial(theirs_named, prefix, recurse),
                        named=True,
                    )
                    assert_same_walk(partial(ours, root, recurse), partial(theirs, recurse), False)
            our_memo: set[nn.Module] = set()
            their_memo: set[nn.Module] = set()
            assert_same_walk(
                partial(tw.named_modules, root, our_memo, prefix),
                partial(root.named_modules, their_memo, prefix),
                named=True,
            )
            assert {id(m) for m in our_memo} == {id(m) for m in their_memo}
        assert_same_walk(partial(tw.modules, root), root.modules, named=False)
        check_children(root)
        check_lookups(root, ["", "me", "me.me.weight", "second.first.0.bias", "1.1.1.0", "a.1.a.ß"])


def check_cycles_without_remove_duplicate_raise_recursion_error() -> None:
    for name, graph in cyclic_graphs().items():
        handed_back = name == "through_a_handed_back_class"
        before = _refcounts(graph)
        for walk in (
            partial(tw.named_modules, graph, remove_duplicate=False),
            partial(tw.named_modules, graph, None, "p", False),
            partial(tw.modules, graph, remove_duplicate=False),
            partial(tw.named_parameters, graph, remove_duplicate=False),
            partial(tw.named_buffers, graph, prefix="ß", remove_duplicate=False),
        ):
            with pytest.raises(RecursionError) as raised:
                list(walk())
            if not handed_back:
                assert "cycle" in str(raised.value), (name, str(raised.value)[:200])
            del raised  # its traceback holds the frames of a handed-back walk
            # Nothing is left half-set: the next walk works.
            assert len(list(tw.modules(graph))) == len(list(graph.modules()))
        del walk
        assert _refcounts(graph) == before, name
        # PyTorch, too, never ends a walk of a cycle that keeps duplicates.
        with pytest.raises(RecursionError):
            list(graph.named_modules(remove_duplicate=False))


def _refcounts(graph: nn.Module) -> list[int]:
    """The reference count of every module, parameter and buffer of `graph`."""
    members = [*graph.modules(), *graph.parameters(), *graph.buffers()]
    return [sys.getrefcount(member) for member in members]


def test_cycles_with_remove_duplicate_match_pytorch() -> None:
    run_isolated(check_cycles_with_remove_duplicate_match_pytorch, timeout=120)


def test_cycles_without_remove_duplicate_raise_recursion_error() -> None:
    run_isolated(check_cycles_without_remove_duplicate_raise_recursion_error, timeout=120)


def test_cycle_with_a_prefilled_memo_matches_pytorch() -> None:
    run_isolated(check_cycle_with_a_prefilled_memo, timeout=120)


def check_cycle_with_a_prefilled_memo() -> None:
    """A memo holding the module that closes the cycle ends PyTorch's walk even
    with remove_duplicate=False: torchwalk must then answer, not raise."""
    from helpers.module_trees import assert_same_walk

    for graph in cyclic_graphs().values():
        closing = [m for m in graph.modules() if {id(m), id(graph)} & set(map(id, m.children()))]
        ours, theirs = set(closing), set(closing)
        assert_same_walk(
            partial(tw.named_modules, graph, ours, "", False),
            partial(graph.named_modules, theirs, "", False),
            named=True,
        )
        assert ours == theirs
