"""Random ``nn.Module`` trees, and PyTorch as the oracle for walks over them.

``module_trees()`` is a hypothesis strategy for the trees that make traversal
hard: shared submodules and shared Parameters, ``None`` entries in all three
member dicts, non-persistent buffers, lazy and parametrized modules, meta
tensors, non-ASCII names. Trees are built bottom-up (a module is finished
before any parent holds it), so sharing never makes a cycle.

The helpers below compare a torchwalk call with the PyTorch call it replaces:
the same names in the same order, the very same objects, or the same error.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torchwalk as tw
from hypothesis import strategies as st
from torch import nn

# Names for registered members: ASCII, digits (as Sequential uses) and
# non-ASCII letters, including one outside the Basic Multilingual Plane.
MEMBER_NAMES = ("a", "w", "lin", "0", "7", "blk_2", "ß", "層", "α_β", "naïve", "𝔵")

PREFIXES = ("", "x.y", "模型.ß")


class Container(nn.Module):
    """A user-defined container: children, parameters and buffers set by hand."""


class OtherContainer(Container):
    """A second user class, so that walks meet several classes."""


class Symmetric(nn.Module):
    """A parametrization (it makes a square weight symmetric)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.triu() + weight.triu(1).transpose(-1, -2)


class Scale(nn.Module):
    """A parametrization with a buffer of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.full((1,), 2.0))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.factor


@dataclass
class _Pools:
    """What a tree drawn so far holds, for sharing, and how much more it may grow."""

    modules_left: int
    modules: list[nn.Module] = field(default_factory=list)
    parameters: list[nn.Parameter] = field(default_factory=list)
    buffers: list[torch.Tensor] = field(default_factory=list)

    def remember(self, module: nn.Module) -> None:
        self.modules.append(module)
        self.parameters.extend(p for p in module._parameters.values() if p is not None)
        self.buffers.extend(b for b in module._buffers.values() if b is not None)


def _free_name(draw: Any, module: nn.Module) -> str | None:
    """A member name that the module does not use yet (None when all are taken)."""
    free = [name for name in MEMBER_NAMES if not hasattr(module, name)]
    if not free:
        return None
    return draw(st.sampled_from(free))


def _new_tensor(draw: Any) -> torch.Tensor:
    shape = draw(st.sampled_from([(2,), (2, 3), (1,), (0,)]))
    device = draw(st.sampled_from(["cpu", "cpu", "meta"]))
    return torch.zeros(shape, device=device)


def _add_members(draw: Any, module: nn.Module, pools: _Pools, most: int) -> None:
    """Register up to `most` extra entries: new, shared or None, in all three dicts."""
    for _ in range(draw(st.integers(0, most))):
        name = _free_name(draw, module)
        if name is None:
            return
        kind = draw(
            st.sampled_from(
                [
                    "parameter",
                    "shared_parameter",
                    "none_parameter",
                    "buffer",
                    "shared_buffer",
                    "parameter_as_buffer",
                    "none_buffer",
                    "none_module",
                ]
            )
        )
        persistent = draw(st.booleans())
        if kind == "parameter":
            module.register_parameter(name, nn.Parameter(_new_tensor(draw)))
        elif kind == "shared_parameter" and pools.parameters:
            module.register_parameter(name, draw(st.sampled_from(pools.parameters)))
        elif kind == "none_parameter":
            module.register_parameter(name, None)
        elif kind == "buffer":
            module.register_buffer(name, _new_tensor(draw), persistent=persistent)
        elif kind == "shared_buffer" and pools.buffers:
            module.register_buffer(name, draw(st.sampled_from(pools.buffers)), persistent)
        elif kind == "parameter_as_buffer" and pools.parameters:
            # The same tensor object: a Parameter in one module, a buffer in this one.
            module.register_buffer(name, draw(st.sampled_from(pools.parameters)), persistent)
        elif kind == "none_buffer":
            module.register_buffer(name, None, persistent=persistent)
        elif kind == "none_module":
            module.register_module(name, None)


def _leaf(draw: Any, pools: _Pools) -> nn.Module:
    kind = draw(
        st.sampled_from(
            [
                "linear",
                "tied_linear",
                "meta_linear",
                "conv",
                "batchnorm",
                "layernorm",
                "embedding",
                "relu",
                "lazy_linear",
                "lazy_batchnorm",
                "parametrized",
                "empty_container",
            ]
        )
    )
    if kind == "linear":
        return nn.Linear(2, 3, bias=draw(st.booleans()))
    if kind == "tied_linear":
        linear = nn.Linear(2, 3)
        if pools.parameters:
            linear.weight = draw(st.sampled_from(pools.parameters))
        return linear
    if kind == "meta_linear":
        return nn.Linear(2, 3, device="meta")
    if kind == "conv":
        return nn.Conv1d(1, 2, 1)
    if kind == "batchnorm":
        return nn.BatchNorm1d(2, track_running_stats=draw(st.booleans()))
    if kind == "layernorm":
        return nn.LayerNorm(2, elementwise_affine=draw(st.booleans()))
    if kind == "embedding":
        return nn.Embedding(3, 2)
    if kind == "relu":
        return nn.ReLU()
    if kind in ("lazy_linear", "lazy_batchnorm"):
        with warnings.catch_warnings():  # some torch versions warn about lazy modules
            warnings.simplefilter("ignore")
            return nn.LazyLinear(2) if kind == "lazy_linear" else nn.LazyBatchNorm1d()
    if kind == "parametrized":
        linear = nn.Linear(2, 2)
        parametrize.register_parametrization(linear, "weight", Symmetric())
        if draw(st.booleans()):
            parametrize.register_parametrization(linear, "weight", Scale())
        if draw(st.booleans()):
            parametrize.register_parametrization(linear, "bias", Scale())
        return linear
    return draw(st.sampled_from([Container, OtherContainer]))()


def _container(draw: Any, pools: _Pools, depth: int, max_depth: int) -> nn.Module:
    kind = draw(st.sampled_from(["sequential", "module_list", "module_dict", "custom"]))
    children = [_module(draw, pools, depth + 1, max_depth) for _ in range(draw(st.integers(0, 4)))]
    if kind == "sequential":
        module: nn.Module = nn.Sequential(*children)
    elif kind == "module_list":
        module = nn.ModuleList(children)
    elif kind == "module_dict":
        keys = draw(
            st.lists(
                st.sampled_from(MEMBER_NAMES),
                min_size=len(children),
                max_size=len(children),
                unique=True,
            )
        )
        module = nn.ModuleDict(dict(zip(keys, children, strict=True)))
    else:
        module = draw(st.sampled_from([Container, OtherContainer]))()
        for child in children:
            name = _free_name(draw, module)
            if name is not None:
                module.register_module(name, child)
    return module


def _module(draw: Any, pools: _Pools, depth: int, max_depth: int) -> nn.Module:
    if pools.modules and draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(pools.modules))  # the same module at another position
    pools.modules_left -= 1
    if depth < max_depth and pools.modules_left > 0 and draw(st.booleans()):
        module = _container(draw, pools, depth, max_depth)
    else:
        module = _leaf(draw, pools)
    _add_members(draw, module, pools, most=3 if isinstance(module, Container) else 1)
    pools.remember(module)
    return module


@st.composite
def module_trees(draw: Any, max_depth: int = 5, max_modules: int = 20) -> nn.Module:
    """A random module tree (a DAG when modules are shared), at most `max_depth` deep."""
    pools = _Pools(modules_left=max_modules)
    root = _container(draw, pools, 0, max_depth)
    _add_members(draw, root, pools, most=3)
    return root


# --- which Python code a call runs ---------------------------------------------------


def python_code_run_by(call: Callable[[], Any]) -> set[CodeType]:
    """The code objects of the Python functions that run during `call()`."""
    seen: set[CodeType] = set()

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            seen.add(frame.f_code)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


# --- running a check in a child interpreter ---------------------------------------------


def run_isolated(check: Callable[[], None], timeout: float = 120) -> None:
    """Run `check`, a function of a test file, in a child interpreter, so that a
    crash or a hang fails the calling test instead of killing the run."""
    module = check.__module__.rpartition(".")[2]
    run_child(f"import {module} as tests; tests.{check.__name__}()", check.__name__, timeout)


def run_child(code: str, what: str, timeout: float) -> None:
    """Run Python `code` in a child interpreter started in tests/ (importable
    from there); fail the calling test if it fails, crashes or hangs."""
    tests = Path(__file__).resolve().parents[1]
    # Absolute: a relative entry (PYTHONPATH=python) would not hold in tests/,
    # and the child would silently import the installed package instead.
    given = os.environ.get("PYTHONPATH", "")
    path = os.pathsep.join(
        [str(tests), *(os.path.abspath(entry) for entry in given.split(os.pathsep) if entry)]
    )
    try:
        child = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tests,
            env={**os.environ, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {timeout} s (a hang?)")
    if child.returncode < 0:
        pytest.fail(
            f"{what} crashed with {signal.Signals(-child.returncode).name}\n{child.stderr[-4000:]}"
        )
    assert child.returncode == 0, f"{what} failed:\n{child.stderr[-4000:]}"


# --- PyTorch as the oracle -------------------------------------------------------------


@dataclass
class Outcome:
    """What a call gave: the items it yielded, or the error it raised."""

    items: list[Any] | None
    error: BaseException | None


def run(call: Callable[[], Iterable[Any]]) -> Outcome:
    """Call and exhaust; torchwalk may raise at the call where PyTorch raises on iteration."""
    try:
        return Outcome(list(call()), None)
    except Exception as error:  # any error: it must be PyTorch's
        return Outcome(None, error)


def assert_same_error(ours: BaseException | None, theirs: BaseException | None) -> None:
    assert type(ours) is type(theirs), f"torchwalk raised {ours!r}, PyTorch raised {theirs!r}"
    assert str(ours) == str(theirs)


def assert_same_items(ours: list[Any], theirs: list[Any], named: bool) -> None:
    """Same names in the same order, and the very same objects."""
    assert len(ours) == len(theirs), (_summary(ours, named), _summary(theirs, named))
    for position, (mine, expected) in enumerate(zip(ours, theirs, strict=True)):
        if named:
            assert type(mine) is tuple and len(mine) == 2, mine
            assert mine[0] == expected[0], (position, mine[0], expected[0])
            assert type(mine[0]) is type(expected[0]), (position, mine[0])
            assert mine[1] is expected[1], (position, mine[0])
        else:
            assert mine is expected, position


def _summary(items: list[Any], named: bool) -> list[Any]:
    return [item[0] if named else type(item).__name__ for item in items]


def assert_is_iterator(result: Any) -> None:
    assert not isinstance(result, (list, tuple)), type(result)
    assert isinstance(result, Iterator), type(result)
    assert iter(result) is result


def assert_same_walk(
    ours: Callable[[], Iterator[Any]], theirs: Callable[[], Iterator[Any]], named: bool
) -> None:
    """torchwalk's call and PyTorch's give the same items, or the same error."""
    expected = run(theirs)
    if expected.error is None:
        result = ours()
        assert_is_iterator(result)
        first = list(itertools.islice(result, 1))  # next() works
        got = run(lambda: first + list(result))
    else:
        got = run(ours)
    if expected.error is not None or got.error is not None:
        assert_same_error(got.error, expected.error)
        return
    assert got.items is not None and expected.items is not None
    assert_same_items(got.items, expected.items, named)


def assert_same_lookup(ours: Callable[[], Any], theirs: Callable[[], Any]) -> None:
    """A get_* call gives the very same object, or the same error type and message."""
    expected = run(lambda: [theirs()])
    got = run(lambda: [ours()])
    if expected.error is not None or got.error is not None:
        assert_same_error(got.error, expected.error)
        return
    assert got.items is not None and expected.items is not None
    assert got.items[0] is expected.items[0]


def check_members(root: nn.Module, leaves: str, prefixes: Iterable[str] = PREFIXES) -> None:
    """`named_{leaves}` and `{leaves}` (parameters or buffers) under every flag combination."""
    ours_named, ours = getattr(tw, f"named_{leaves}"), getattr(tw, leaves)
    theirs_named, theirs = getattr(root, f"named_{leaves}"), getattr(root, leaves)
    for prefix, recurse, remove_duplicate in itertools.product(
        prefixes, (True, False), (True, False)
    ):
        flags = {"prefix": prefix, "recurse": recurse, "remove_duplicate": remove_duplicate}
        assert_same_walk(partial(ours_named, root, **flags), partial(theirs_named, **flags), True)
        # The same flags given by position, in the order of the method's signature.
        positional = (prefix, recurse, remove_duplicate)
        assert_same_walk(
            partial(ours_named, root, *positional), partial(theirs_named, *positional), True
        )
    assert_same_walk(partial(ours_named, root), theirs_named, named=True)
    for recurse in (True, False):
        assert_same_walk(
            partial(ours, root, recurse=recurse), partial(theirs, recurse=recurse), False
        )
        assert_same_walk(partial(ours, root, recurse), partial(theirs, recurse), named=False)
    assert_same_walk(partial(ours, root), theirs, named=False)


def check_modules(
    root: nn.Module, memo_seeds: Iterable[nn.Module] = (), prefixes: Iterable[str] = PREFIXES
) -> None:
    """`named_modules` (memo, prefix, remove_duplicate) and `modules`, memo contents included."""
    seeds = list(memo_seeds)
    for prefix, remove_duplicate in itertools.product(prefixes, (True, False)):
        flags = {"prefix": prefix, "remove_duplicate": remove_duplicate}
        assert_same_walk(
            partial(tw.named_modules, root, **flags), partial(root.named_modules, **flags), True
        )
        for memo in (set(), set(seeds)):
            our_memo, their_memo = set(memo), set(memo)
            assert_same_walk(
                partial(tw.named_modules, root, our_memo, prefix, remove_duplicate),
                partial(root.named_modules, their_memo, prefix, remove_duplicate),
                named=True,
            )
            # The memo is filled as PyTorch fills it.
            assert {id(m) for m in our_memo} == {id(m) for m in their_memo}
            assert len(our_memo) == len(their_memo)
            our_memo, their_memo = set(memo), set(memo)
            assert_same_walk(
                partial(tw.named_modules, root, memo=our_memo, **flags),
                partial(root.named_modules, memo=their_memo, **flags),
                named=True,
            )
            assert {id(m) for m in our_memo} == {id(m) for m in their_memo}
    assert_same_walk(partial(tw.named_modules, root), root.named_modules, named=True)
    for remove_duplicate in (True, False):
        assert_same_walk(
            partial(tw.modules, root, remove_duplicate=remove_duplicate),
            partial(root.modules, remove_duplicate=remove_duplicate),
            named=False,
        )
        assert_same_walk(
            partial(tw.modules, root, remove_duplicate),
            partial(root.modules, remove_duplicate),
            named=False,
        )
    assert_same_walk(partial(tw.modules, root), root.modules, named=False)


def check_children(module: nn.Module) -> None:
    assert_same_walk(partial(tw.named_children, module), module.named_children, named=True)
    assert_same_walk(partial(tw.children, module), module.children, named=False)


def _positions(root: nn.Module, most: int = 2000) -> list[tuple[str, nn.Module]]:
    """Every (path, module) position below `root`, read from the raw ``_modules`` dicts
    (so that overriding classes do not change it), each path once, without cycles."""
    positions = []
    stack: list[tuple[str, Any, frozenset[int]]] = [("", root, frozenset())]
    while stack and len(positions) < most:
        path, module, ancestors = stack.pop()
        if not isinstance(module, nn.Module) or id(module) in ancestors:
            continue
        positions.append((path, module))
        children = module.__dict__.get("_modules", {})
        for key, child in reversed(list(dict.items(children))):
            if isinstance(key, str):
                stack.append((f"{path}.{key}" if path else key, child, ancestors | {id(module)}))
    return positions


def lookup_targets(root: nn.Module) -> list[str]:
    """Every dotted name a get_* call could be asked for: each key of each member dict
    (``None`` entries included) at each position, and a few misses."""
    targets = {"", "missing", "training", "forward", ".", "a..b", "missing.weight"}
    targets.update(("first", "first.weight", "w", "b"))  # names that overriding lookups alias
    for path, module in _positions(root):
        dotted = f"{path}." if path else ""
        if path:
            targets.add(path)
        for dict_name in ("_parameters", "_buffers", "_modules"):
            for key in dict.keys(module.__dict__.get(dict_name, {})):
                if isinstance(key, str):
                    targets.add(dotted + key)
        targets.update(dotted + miss for miss in ("missing", "training", "forward", ""))
    return sorted(targets)


def check_lookups(root: nn.Module, targets: Iterable[str] | None = None) -> None:
    """get_submodule / get_parameter / get_buffer for every target: object or error."""
    for target in lookup_targets(root) if targets is None else targets:
        for name in ("get_submodule", "get_parameter", "get_buffer"):
            assert_same_lookup(
                partial(getattr(tw, name), root, target), partial(getattr(root, name), target)
            )


def check_every_dropin(root: nn.Module) -> None:
    """Every drop-in, every flag combination, and the lookups, against PyTorch."""
    check_members(root, "parameters")
    check_members(root, "buffers")
    module_list = run(root.modules).items or []
    check_modules(root, memo_seeds=module_list[1:3])
    check_children(root)
    check_lookups(root)
