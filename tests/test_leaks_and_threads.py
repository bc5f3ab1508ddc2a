"""Walks leak nothing, and walks from many threads at once agree with PyTorch.

A walk takes references to every module, dict and tensor it passes; each one
must be given back. 1,000 walks of a tree of a few thousand modules leave
every reference count where it was, and the resident memory flat.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import assert_same_items, run_isolated
from torch import nn

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class Block(nn.Module):
    """A user class with a shared parameter, a None entry in each dict and a
    non-persistent buffer."""

    def __init__(self, shared: nn.Parameter) -> None:
        super().__init__()
        self.attention = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
        self.shared = shared
        self.register_buffer("mask", torch.zeros(2), persistent=False)
        self.register_buffer("nothing", None)
        self.register_parameter("absent", None)
        self.register_module("hole", None)


def large_tree(blocks: int = 400) -> nn.Module:
    """About 3,000 modules, 3,600 parameters, shared modules and parameters."""
    shared = nn.Parameter(torch.zeros(4))
    shared_norm = nn.BatchNorm1d(4)
    layers = nn.ModuleList()
    for index in range(blocks):
        block = Block(shared)
        block.add_module("bn", shared_norm if index % 2 else nn.BatchNorm1d(4))
        layers.append(block)
    root = nn.Sequential()
    root.add_module("embed", nn.Embedding(10, 4))
    root.add_module("layers", layers)
    root.add_module("head", nn.Linear(4, 10))
    root.head.weight = root.embed.weight  # tied
    return root


def every_walk(root: nn.Module) -> list[Callable[[], Any]]:
    """Each drop-in once (fast path), plus a lookup and an error."""
    first_block = "layers.0"
    return [
        partial(tw.named_parameters, root),
        partial(tw.named_parameters, root, "p", True, False),
        partial(tw.parameters, root),
        partial(tw.named_buffers, root, prefix="ß"),
        partial(tw.buffers, root),
        partial(tw.named_modules, root),
        partial(tw.named_modules, root, set(), "x", False),
        partial(tw.modules, root),
        partial(tw.named_children, root.layers),
        partial(tw.children, root.layers),
        lambda: [tw.get_submodule(root, first_block)],
        lambda: [tw.get_parameter(root, first_block + ".mlp.0.weight")],
        lambda: [tw.get_buffer(root, first_block + ".bn.running_mean")],
    ]


def failing_walks(root: nn.Module) -> list[Callable[[], Any]]:
    return [
        lambda: tw.get_submodule(root, "layers.0.missing"),
        lambda: tw.get_parameter(root, "layers.0.mask"),
        lambda: list(tw.named_parameters(None)),  # type: ignore[arg-type]
    ]


def walk_all(walks: list[Callable[[], Any]], failing: list[Callable[[], Any]]) -> None:
    for walk in walks:
        for _ in walk():
            pass
    for walk in failing:
        try:
            walk()
        except (AttributeError, TypeError):
            pass


def refcounts(root: nn.Module) -> dict[int, int]:
    """The reference count of every module, member dict, parameter and buffer."""
    objects: list[Any] = []
    for module in root.modules():
        objects.append(module)
        objects.extend(module.__dict__[name] for name in ("_parameters", "_buffers", "_modules"))
        objects.extend(t for t in module._parameters.values() if t is not None)
        objects.extend(t for t in module._buffers.values() if t is not None)
    counts = {id(obj): sys.getrefcount(obj) for obj in objects}
    del objects
    return counts


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def test_1000_walks_leave_reference_counts_unchanged() -> None:
    root = large_tree()
    assert sum(1 for _ in root.modules()) > 2500
    walks, failing = every_walk(root), failing_walks(root)
    walk_all(walks, failing)  # warm-up: caches, interned names
    gc.collect()
    before = refcounts(root)
    for _ in range(1000):
        for _ in tw.named_parameters(root):
            pass
    for _ in range(20):
        walk_all(walks, failing)
    gc.collect()
    after = refcounts(root)
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, (
        f"{len(changed)} reference counts changed, e.g. {list(changed.values())[:5]}"
    )


def test_1000_walks_keep_resident_memory_flat() -> None:
    root = large_tree()
    walks, failing = every_walk(root), failing_walks(root)
    for _ in range(50):  # warm-up: allocator pools reach their working size
        walk_all(walks, failing)
    gc.collect()
    before = resident_bytes()
    named_walks = [walks[0], walks[5]]  # named_parameters, named_modules: the most allocation
    for _ in range(1000):
        walk_all(named_walks, failing)
    gc.collect()
    grown = resident_bytes() - before
    # One leaked name per parameter per walk would be > 100 MB here.
    assert grown < 8 * 1024 * 1024, f"resident memory grew by {grown / 2**20:.1f} MiB"


def test_walks_handed_back_to_pytorch_leak_nothing() -> None:
    class Overriding(nn.Module):
        def named_modules(self, memo=None, prefix="", remove_duplicate=True):  # noqa: ANN001, ANN201
            return super().named_modules(memo, prefix, remove_duplicate)

    root = large_tree(blocks=50)
    root.layers.append(Overriding())
    walks, failing = every_walk(root), failing_walks(root)
    walk_all(walks, failing)
    gc.collect()
    before = refcounts(root)
    for _ in range(200):
        walk_all(walks, failing)
    gc.collect()
    assert refcounts(root) == before


def test_iterators_dropped_unfinished_or_in_cycles_release_their_items() -> None:
    """The drop-ins' iterators own what they have not yielded yet: dropping
    one half-way, or leaving one in a reference cycle, must release the rest."""
    root = large_tree(blocks=50)
    walks = every_walk(root)[:10]  # the iterator walks
    gc.collect()
    before = refcounts(root)
    for walk in walks:
        items = walk()
        hint = items.__length_hint__()
        next(items)
        assert items.__length_hint__() == hint - 1
        del items
        cycle = nn.Module()
        cycle.walked = walk()  # a module holding its own walk: module -> iterator -> module
        cycle.walked_self = tw.modules(cycle)
        del cycle
    gc.collect()
    assert refcounts(root) == before


THREADS = 8


def test_threads_walking_the_same_tree_agree_with_pytorch() -> None:
    root = large_tree(blocks=100)
    expected = {
        "named_parameters": list(root.named_parameters()),
        "named_parameters_all": list(root.named_parameters(prefix="p", remove_duplicate=False)),
        "named_buffers": list(root.named_buffers()),
        "named_modules": list(root.named_modules()),
        "modules_all": list(root.modules(remove_duplicate=False)),
        "children": list(root.layers.children()),
    }
    ours: dict[str, Callable[[], Any]] = {
        "named_parameters": partial(tw.named_parameters, root),
        "named_parameters_all": partial(tw.named_parameters, root, "p", True, False),
        "named_buffers": partial(tw.named_buffers, root),
        "named_modules": partial(tw.named_modules, root),
        "modules_all": partial(tw.modules, root, False),
        "children": partial(tw.children, root.layers),
    }
    barrier = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            barrier.wait()
            keys = list(ours)
            for step in range(150):
                key = keys[(offset + step) % len(keys)]
                assert_same_items(list(ours[key]()), expected[key], named=key.startswith("named"))
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old_interval)
    if failures:
        raise failures[0]


def test_threads_patching_and_walking_classes_agree_with_pytorch() -> None:
    """While one thread patches and restores a class, the others' answers are
    always either the patched or the unpatched PyTorch answer."""

    class Patched(nn.Module):
        pass

    root = nn.Sequential(*(Block(nn.Parameter(torch.zeros(1))) for _ in range(20)))
    for block in root:
        block.inner = Patched()
        block.inner.add_module("layer", nn.Linear(2, 2))
    plain = [name for name, _ in root.named_parameters()]

    def opaque(self, memo=None, prefix="", remove_duplicate=True):  # noqa: ANN001, ANN202
        if memo is None:
            memo = set()
        if self not in memo:
            memo.add(self)
            yield prefix, self

    Patched.named_modules = opaque  # type: ignore[method-assign]
    patched = [name for name, _ in root.named_parameters()]
    del Patched.named_modules
    assert plain != patched

    stop = threading.Event()
    failures: list[BaseException] = []

    def patcher() -> None:
        while not stop.is_set():
            Patched.named_modules = opaque  # type: ignore[method-assign]
            del Patched.named_modules

    def walker() -> None:
        try:
            for _ in range(200):
                names = [name for name, _ in tw.named_parameters(root)]
                assert names in (plain, patched)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=walker) for _ in range(THREADS - 1)]
    patching = threading.Thread(target=patcher)
    patching.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    patching.join()
    if failures:
        raise failures[0]
    assert [name for name, _ in tw.named_parameters(root)] == plain


# --- dicts that change under the walk -------------------------------------------------


def trapped_tree(
    looked_up: str,
) -> tuple[nn.Module, Callable[[], None], Callable[[], bool], list[Any]]:
    """A tree whose child `victim` holds, in its instance dict, a key that hashes
    like `looked_up`: the walk's lookup of that name runs the key's __eq__,
    which (once armed) removes `victim` from the tree, so that it is freed, and
    allocates objects that could take its memory. Returns the tree, the arming
    function, a function telling whether the trap has fired, and weak references
    to everything the tree held."""
    parent = nn.Sequential()
    armed = [False]
    strangers: list[Any] = []

    class Trap:
        def __hash__(self) -> int:
            return hash(looked_up)

        def __eq__(self, other: object) -> bool:
            if armed[0]:
                armed[0] = False
                parent._modules.pop("victim", None)
                strangers.extend(nn.Module() for _ in range(50))
                strangers.extend({"k": i} for i in range(50))
            return False

    victim = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    # The trap goes in before the entry it imitates (taken out and put back
    # after it), so that a lookup of that entry meets the trap first.
    entry = victim.__dict__.pop(looked_up, None)
    victim.__dict__[Trap()] = None
    if entry is not None:
        victim.__dict__[looked_up] = entry
    parent.add_module("victim", victim)
    parent.add_module("after", nn.Linear(1, 1))
    originals = [weakref.ref(o) for o in [*parent.modules(), *parent.parameters()]]

    def arm() -> None:
        armed[0] = True

    def fired() -> bool:
        return "victim" not in parent._modules

    return parent, arm, fired, originals


def check_module_freed_while_walked_is_never_yielded() -> None:
    """PyTorch raises RuntimeError ("dictionary changed size during iteration")
    when the tree changes under its walk; torchwalk may raise or answer, but it
    must hold its own references: it must never yield an object that is not in
    the tree (the freed module's memory, reused by another object)."""
    for looked_up in ("named_modules", "_modules", "_parameters", "_buffers"):
        fired_in = []
        walks = (
            tw.named_modules,
            tw.modules,
            tw.named_parameters,
            tw.named_buffers,
            tw.named_children,
        )
        for walk in walks:
            tree, arm, fired, originals = trapped_tree(looked_up)
            arm()
            try:
                found = list(walk(tree))
            except RuntimeError:
                found = []
            if fired():
                fired_in.append(walk.__name__)
            for item in found:
                value = item[1] if isinstance(item, tuple) else item
                assert any(value is original() for original in originals), (
                    f"{walk.__name__} yielded {item!r}, not in the tree "
                    f"(the lookup of {looked_up!r} freed the module being walked)"
                )
        # The walks that read the victim's instance dict look the name up.
        assert fired_in, f"no walk looked up {looked_up!r}: the trap never fired"


def test_module_freed_while_walked_is_never_yielded() -> None:
    run_isolated(check_module_freed_while_walked_is_never_yielded, timeout=120)


@pytest.mark.slow
def test_many_more_walks_leave_reference_counts_unchanged() -> None:
    root = large_tree(blocks=1000)
    walks, failing = every_walk(root), failing_walks(root)
    walk_all(walks, failing)
    gc.collect()
    before = refcounts(root)
    for _ in range(1000):
        walk_all(walks, failing)
    gc.collect()
    assert refcounts(root) == before
