"""Classes that override any part of PyTorch's traversal get PyTorch's answer.

Each class below changes what a walk yields (order, filtering, de-duplication,
names, errors) by overriding one link of the chain PyTorch's methods go
through, on the class, on an instance, or in the member dicts. torchwalk must
give the overriding behaviour, and notice when a class is patched at runtime.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from functools import partial
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import (
    Container,
    assert_same_error,
    assert_same_items,
    check_every_dropin,
    python_code_run_by,
    run,
)
from torch import nn

# --- overriding methods ----------------------------------------------------------------


def _opaque_named_modules(
    self: nn.Module, memo: set[nn.Module] | None = None, prefix: str = "", remove_duplicate=True
) -> Iterator[tuple[str, nn.Module]]:
    """Yields the module itself only: what lies below it is hidden from walks."""
    if memo is None:
        memo = set()
    if self not in memo:
        if remove_duplicate:
            memo.add(self)
        yield prefix, self


def _reversed_named_modules(
    self: nn.Module, memo: set[nn.Module] | None = None, prefix: str = "", remove_duplicate=True
) -> Iterator[tuple[str, nn.Module]]:
    """PyTorch's walk, children in reverse order."""
    if memo is None:
        memo = set()
    if self in memo:
        return
    if remove_duplicate:
        memo.add(self)
    yield prefix, self
    for name, child in reversed(list(self._modules.items())):
        if child is not None:
            child_prefix = prefix + ("." if prefix else "") + name
            yield from child.named_modules(memo, child_prefix, remove_duplicate)


class Opaque(nn.Module):
    named_modules = _opaque_named_modules


class ReversedWalk(nn.Module):
    named_modules = _reversed_named_modules


class OnlyModules(nn.Module):
    def modules(self, remove_duplicate: bool = True) -> Iterator[nn.Module]:
        for _, module in self.named_modules(remove_duplicate=remove_duplicate):
            if module is not self:
                yield module


class NoBiases(nn.Module):
    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        for name, parameter in super().named_parameters(prefix, recurse, remove_duplicate):
            if not name.endswith("bias"):
                yield name, parameter


class MatricesOnly(nn.Module):
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return iter([p for p in super().parameters(recurse) if p.dim() > 1])


class NoRunningVar(nn.Module):
    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        for name, buffer in super().named_buffers(prefix, recurse, remove_duplicate):
            if not name.endswith("running_var"):
                yield name, buffer


class FirstBufferOnly(nn.Module):
    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        yield from list(super().buffers(recurse))[:1]


class SortedMembers(nn.Module):
    def _named_members(
        self, get_members_fn: Any, prefix: str = "", recurse: bool = True, remove_duplicate=True
    ) -> Iterator[tuple[str, Any]]:
        members = super()._named_members(get_members_fn, prefix, recurse, remove_duplicate)
        yield from sorted(members, key=lambda item: item[0], reverse=True)


class ReversedChildren(nn.Module):
    def named_children(self) -> Iterator[tuple[str, nn.Module]]:
        yield from reversed(list(super().named_children()))


class FirstChildOnly(nn.Module):
    def children(self) -> Iterator[nn.Module]:
        yield from list(super().children())[:1]


class AliasedLookups(nn.Module):
    """`first` names the first child in lookups; `w` the first weight; `b` a buffer."""

    def get_submodule(self, target: str) -> nn.Module:
        return super().get_submodule(target.replace("first", "0"))

    def get_parameter(self, target: str) -> nn.Parameter:
        return super().get_parameter(target.replace("w", "0.weight"))

    def get_buffer(self, target: str) -> torch.Tensor:
        return super().get_buffer("1.running_mean" if target == "b" else target)


def _aliasing_getattr(self: nn.Module, name: str) -> Any:
    """`w` reads the parameter `a`, and `a` itself is hidden from attribute access."""
    if name == "a":
        raise AttributeError("a is hidden")
    return nn.Module.__getattr__(self, "a" if name == "w" else name)


def _filtering_getattribute(self: nn.Module, name: str) -> Any:
    """`_modules` hides the first child and `_parameters` / `_buffers` the member `a`."""
    value = object.__getattribute__(self, name)
    if name == "_modules":
        return dict(list(value.items())[1:])
    if name in ("_parameters", "_buffers"):
        return {key: member for key, member in value.items() if key != "a"}
    return value


class AliasingGetattr(nn.Module):
    __getattr__ = _aliasing_getattr


class FilteringGetattribute(nn.Module):
    __getattribute__ = _filtering_getattribute


class AllEqual(nn.Module):
    """Every instance equals every other: PyTorch's memo keeps only the first."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AllEqual)

    def __hash__(self) -> int:
        return 7


class Unhashable(nn.Module):
    """Defines __eq__ without __hash__: PyTorch's memo raises TypeError."""

    def __eq__(self, other: object) -> bool:
        return self is other


class NeverInitialised(nn.Module):
    """Skips nn.Module.__init__: it has no `_modules`, `_parameters`, `_buffers`."""

    def __init__(self) -> None:
        pass


class ReversedView(MutableMapping):
    """A live view of a dict whose items() are reversed."""

    def __init__(self, members: dict[Any, Any]) -> None:
        self.members = members

    def __getitem__(self, key: Any) -> Any:
        return self.members[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.members[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.members[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def items(self) -> Any:
        return list(reversed(list(self.members.items())))


class ParametersProperty(nn.Module):
    """`_parameters` is a class property: a reversed view of the instance's dict."""

    @property
    def _parameters(self) -> Any:
        return ReversedView(self.__dict__["_parameters"])

    @_parameters.setter
    def _parameters(self, value: dict[str, Any]) -> None:
        self.__dict__["_parameters"] = value


class ReversedItems(dict):
    """A member dict whose items() PyTorch's walk calls: reversed."""

    def items(self) -> Any:
        return list(reversed(list(super().items())))


class Tag(str):
    """A str subclass key: ``prefix + "." + key`` calls its __radd__."""

    def __radd__(self, other: str) -> str:
        return f"{other}<{str.__str__(self)}>"


class ShapeHashParameter(nn.Parameter):
    """Parameters of the same shape are equal: PyTorch's memo keeps the first."""

    def __hash__(self) -> int:
        return hash(tuple(self.shape))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, torch.Tensor) and self.shape == other.shape


class IdHashTensor(torch.Tensor):
    """A tensor subclass whose own __hash__ happens to be identity."""

    def __hash__(self) -> int:
        return id(self)


class LoggingTensor(torch.Tensor):
    """A tensor subclass with its own __torch_function__ (it counts calls)."""

    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        cls.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


# --- trees that contain them -----------------------------------------------------------


def _block() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU())


def _fill(module: nn.Module) -> nn.Module:
    """Children, parameters and buffers for an overriding class to act on."""
    module.add_module("0", nn.Linear(2, 3))
    module.add_module("1", nn.BatchNorm1d(3))
    module.add_module("2", _block())
    module.register_parameter("a", nn.Parameter(torch.zeros(2)))
    module.register_buffer("b", torch.zeros(1))
    module.register_parameter("c", nn.Parameter(torch.ones(3, 2)))
    module.register_buffer("d", torch.ones(1), persistent=False)
    return module


def _in_a_normal_tree(module: nn.Module) -> nn.Module:
    """The module as a child (twice) of an ordinary tree, next to ordinary modules."""
    return nn.Sequential(_block(), module, nn.ModuleList([_block(), module]))


OVERRIDING_CLASSES = [
    Opaque,
    ReversedWalk,
    OnlyModules,
    NoBiases,
    MatricesOnly,
    NoRunningVar,
    FirstBufferOnly,
    SortedMembers,
    ReversedChildren,
    FirstChildOnly,
    AliasedLookups,
    FilteringGetattribute,
    AllEqual,
    Unhashable,
    ParametersProperty,
]


@pytest.mark.parametrize("cls", OVERRIDING_CLASSES, ids=lambda cls: cls.__name__)
def test_overriding_class_as_root_gives_pytorchs_results(cls: type[nn.Module]) -> None:
    check_every_dropin(_fill(cls()))


@pytest.mark.parametrize("cls", OVERRIDING_CLASSES, ids=lambda cls: cls.__name__)
def test_overriding_class_inside_a_normal_tree_gives_pytorchs_results(
    cls: type[nn.Module],
) -> None:
    check_every_dropin(_in_a_normal_tree(_fill(cls())))


def test_overriding_named_modules_below_the_root_hides_its_subtree() -> None:
    net = _in_a_normal_tree(_fill(Opaque()))
    names = [name for name, _ in tw.named_parameters(net)]
    assert names == [name for name, _ in net.named_parameters()]
    assert "1.a" in names and "1.0.weight" not in names and "0.0.weight" in names


def test_all_equal_modules_are_deduplicated_as_pytorch_does() -> None:
    net = nn.Sequential(_fill(AllEqual()), _fill(AllEqual()), _fill(AllEqual()))
    check_every_dropin(net)
    assert len(list(tw.children(net))) == len(list(net.children())) == 1


def test_getattr_override_decides_lookups() -> None:
    net = nn.Sequential(_fill(AliasingGetattr()))
    check_every_dropin(net)
    check_lookups_alias(net)
    assert tw.get_parameter(net, "0.w") is net[0]._parameters["a"]
    with pytest.raises(AttributeError, match="has no attribute `a`"):
        tw.get_parameter(net, "0.a")


# --- overrides on the instance ---------------------------------------------------------

TRAVERSAL_METHODS = [
    "named_modules",
    "modules",
    "named_parameters",
    "parameters",
    "named_buffers",
    "buffers",
    "_named_members",
    "named_children",
    "children",
]
LOOKUP_METHODS = ["get_submodule", "get_parameter", "get_buffer"]


def _shadow(module: nn.Module, name: str) -> None:
    """An instance attribute that shadows the class's method: nn.Module's own
    method, with its results reversed (walks) or `first` meaning `0` (lookups)."""
    base = getattr(nn.Module, name)

    def reversing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(list(base(module, *args, **kwargs))[::-1])

    def aliasing(target: str) -> Any:
        return base(module, target.replace("first", "0"))

    object.__setattr__(module, name, aliasing if name in LOOKUP_METHODS else reversing)


@pytest.mark.parametrize("name", TRAVERSAL_METHODS + LOOKUP_METHODS)
def test_instance_attribute_shadowing_a_method_of_the_root(name: str) -> None:
    net = _fill(Container())
    check_every_dropin(net)  # walked before, so that a remembered reading must notice the change
    _shadow(net, name)
    check_every_dropin(net)
    object.__delattr__(net, name)
    check_every_dropin(net)


@pytest.mark.parametrize("name", TRAVERSAL_METHODS + LOOKUP_METHODS)
def test_instance_attribute_shadowing_a_method_of_a_child(name: str) -> None:
    child = _fill(Container())
    net = _in_a_normal_tree(child)
    check_every_dropin(net)
    _shadow(child, name)
    check_every_dropin(net)
    object.__delattr__(child, name)
    check_every_dropin(net)


# --- member dicts that are not plain str-keyed dicts -----------------------------------


@pytest.mark.parametrize("dict_name", ["_parameters", "_buffers", "_modules"])
def test_member_dict_subclass_with_its_own_items(dict_name: str) -> None:
    child = _fill(Container())
    check_every_dropin(_in_a_normal_tree(child))
    object.__setattr__(child, dict_name, ReversedItems(child.__dict__[dict_name]))
    check_every_dropin(child)
    check_every_dropin(_in_a_normal_tree(child))


@pytest.mark.parametrize("dict_name", ["_parameters", "_buffers", "_modules"])
def test_member_dict_as_reordered_ordered_dict(dict_name: str) -> None:
    child = _fill(Container())
    members = OrderedDict(child.__dict__[dict_name])
    members.move_to_end(next(iter(members)))  # iteration order no longer insertion order
    object.__setattr__(child, dict_name, members)
    check_every_dropin(child)
    check_every_dropin(_in_a_normal_tree(child))


@pytest.mark.parametrize("key", [1, ("t",), Tag("k"), b"k"], ids=repr)
@pytest.mark.parametrize("dict_name", ["_parameters", "_buffers", "_modules"])
def test_non_str_keys_in_member_dicts(dict_name: str, key: Any) -> None:
    child = _fill(Container())
    member = {
        "_parameters": nn.Parameter(torch.ones(2)),
        "_buffers": torch.ones(1),
        "_modules": _block(),
    }[dict_name]
    child.__dict__[dict_name][key] = member
    check_every_dropin(child)
    check_every_dropin(_in_a_normal_tree(child))


@pytest.mark.parametrize(
    "member",
    [5, "text", None, object(), nn.Linear, torch.zeros(1)],
    ids=["int", "str", "None", "object", "class", "tensor"],
)
def test_non_modules_in_modules_dict(member: Any) -> None:
    child = _fill(Container())
    child.__dict__["_modules"]["odd"] = member
    check_every_dropin(child)
    check_every_dropin(_in_a_normal_tree(child))


def test_module_that_skipped_init_inside_a_tree() -> None:
    net = nn.Sequential(_block())
    net.__dict__["_modules"]["bare"] = NeverInitialised()
    check_every_dropin(net)


def test_class_reassigned_on_an_instance() -> None:
    child = _fill(Container())
    net = _in_a_normal_tree(child)
    before = list(tw.named_parameters(net))
    child.__class__ = ReversedWalk
    check_every_dropin(net)
    child.__class__ = Container
    check_every_dropin(net)
    assert_same_items(list(tw.named_parameters(net)), before, named=True)


# --- tensors that do not hash by identity ----------------------------------------------


def test_parameters_with_their_own_hash_and_eq() -> None:
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    first.weight = ShapeHashParameter(torch.zeros(2, 2))
    second.weight = ShapeHashParameter(torch.ones(2, 2))  # equal to the first: same shape
    net = nn.Sequential(first, second, nn.Linear(2, 2))
    check_every_dropin(net)
    assert len(list(tw.parameters(net))) == len(list(net.parameters())) == 5


@pytest.mark.parametrize("cls", [ShapeHashParameter, IdHashTensor, LoggingTensor])
def test_tensor_subclasses_as_buffers(cls: type[torch.Tensor]) -> None:
    def subclass_tensor() -> torch.Tensor:
        if cls is ShapeHashParameter:
            return ShapeHashParameter(torch.zeros(3))
        return torch.zeros(3).as_subclass(cls)

    net = nn.Sequential(_block(), _block())
    for module in net:
        module.register_buffer("extra", subclass_tensor())
        extra = subclass_tensor()
        if not isinstance(extra, nn.Parameter):
            extra = nn.Parameter(extra)
        module[0].register_parameter("extra", extra)
    check_every_dropin(net)


# --- classes patched at runtime --------------------------------------------------------


PYTORCH_WALK = nn.Module.named_modules.__code__


def _walk_everything(net: nn.Module) -> None:
    list(tw.named_parameters(net))
    list(tw.named_buffers(net))
    list(tw.named_modules(net))


@pytest.mark.parametrize("name", TRAVERSAL_METHODS)
def test_class_patched_at_runtime_is_noticed_and_unpatched_is_fast_again(name: str) -> None:
    class Block(nn.Module):
        pass

    net = _in_a_normal_tree(_fill(Block()))
    _walk_everything(net)  # the class is known (and cached) before the patch
    assert PYTORCH_WALK not in python_code_run_by(lambda: _walk_everything(net))

    base = getattr(nn.Module, name)

    def reversing(self: nn.Module, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(list(base(self, *args, **kwargs))[::-1])

    setattr(Block, name, reversing)
    check_every_dropin(net)
    delattr(Block, name)
    check_every_dropin(net)
    assert PYTORCH_WALK not in python_code_run_by(lambda: _walk_everything(net))


def test_base_class_patched_at_runtime_is_noticed() -> None:
    class Base(nn.Module):
        pass

    class Derived(Base):
        pass

    net = _in_a_normal_tree(_fill(Derived()))
    _walk_everything(net)
    Base.named_modules = _opaque_named_modules  # type: ignore[method-assign]
    try:
        check_every_dropin(net)
    finally:
        del Base.named_modules
    check_every_dropin(net)
    assert PYTORCH_WALK not in python_code_run_by(lambda: _walk_everything(net))


@pytest.mark.parametrize("dunder", ["__hash__", "__getattr__", "__getattribute__"])
def test_dunder_patched_at_runtime_is_noticed(dunder: str) -> None:
    class Block(nn.Module):
        pass

    net = nn.Sequential(_fill(Block()), _fill(Block()), nn.Linear(2, 2))
    _walk_everything(net)
    replacement = {
        "__hash__": lambda self: 7,
        "__getattr__": _aliasing_getattr,
        "__getattribute__": _filtering_getattribute,
    }[dunder]
    setattr(Block, dunder, replacement)
    if dunder == "__hash__":
        Block.__eq__ = lambda self, other: isinstance(other, Block)  # type: ignore[method-assign]
    check_every_dropin(net)
    check_lookups_alias(net)
    delattr(Block, dunder)
    if dunder == "__hash__":
        del Block.__eq__
    check_every_dropin(net)


def check_lookups_alias(net: nn.Module) -> None:
    for target in ("0.w", "0.a", "0.b", "0.0.weight", "0.1", "0.2.0.bias", "1.a", "1.w"):
        for name in ("get_submodule", "get_parameter", "get_buffer"):
            ours = _outcome(partial(getattr(tw, name), net, target))
            theirs = _outcome(partial(getattr(net, name), target))
            assert ours == theirs, (name, target)


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", id(call()))
    except Exception as error:  # any error: it must be PyTorch's
        return (type(error), str(error))


@pytest.mark.parametrize("name", ["named_modules", "_named_members", "named_children"])
def test_nn_module_itself_patched_at_runtime_is_noticed(name: str) -> None:
    """A program (or library) that patches nn.Module's own method changes what
    `m.named_parameters()` and friends give; the drop-ins must follow."""
    net = _in_a_normal_tree(_fill(Container()))
    base = getattr(nn.Module, name)

    def reversing(self: nn.Module, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(list(base(self, *args, **kwargs))[::-1])

    setattr(nn.Module, name, reversing)
    try:
        check_every_dropin(net)
    finally:
        setattr(nn.Module, name, base)
    check_every_dropin(net)


def test_more_classes_than_the_class_cache_holds() -> None:
    """Evicted and colliding cache entries still give each class its own answer."""

    class Overriding(nn.Module):
        def named_modules(self, *args: Any, **kwargs: Any) -> Any:
            yield from super().named_modules(*args, **kwargs)
            yield "extra", self

    classes = [type(f"Plain{index}", (nn.Module,), {}) for index in range(700)]
    classes += [type(f"Overriding{index}", (Overriding,), {}) for index in range(300)]
    root = nn.ModuleList(cls() for cls in classes)
    for _ in range(2):  # the second walk reads the cache filled by the first
        check_every_dropin(root)


# --- the snapshot follows the same rules ---------------------------------------------------


def _check_snapshot(root: nn.Module) -> None:
    """`tw.walk(root)` lists what PyTorch's methods list, and its summary counts that.

    Where PyTorch raises, the walk raises the same error (that of the first
    of named_modules, named_parameters, named_buffers that raises).
    """
    views = ("named_modules", "named_parameters", "named_buffers")
    expected = {view: run(getattr(root, view)) for view in views}
    errors = [expected[view].error for view in views if expected[view].error is not None]
    walked = run(lambda: [tw.walk(root)])
    if errors:
        assert_same_error(walked.error, errors[0])
        return
    assert walked.error is None, walked.error
    tree = walked.items[0]  # type: ignore[index]
    for view in views:
        assert_same_items(getattr(tree, view)(), expected[view].items, named=True)  # type: ignore[arg-type]
    # Counted over what named_parameters() and named_buffers() list (a class
    # may make parameters() disagree with them).
    totals = tree.summary().totals
    assert totals.params == sum(p.numel() for _, p in root.named_parameters())
    assert totals.buffers == sum(b.numel() for _, b in root.named_buffers())
    assert len(tree) == len(list(root.named_parameters())) + len(list(root.named_buffers()))


@pytest.mark.parametrize("cls", OVERRIDING_CLASSES, ids=lambda cls: cls.__name__)
def test_snapshot_of_an_overriding_root_lists_what_pytorch_lists(cls: type[nn.Module]) -> None:
    _check_snapshot(_fill(cls()))


@pytest.mark.parametrize("cls", OVERRIDING_CLASSES, ids=lambda cls: cls.__name__)
def test_snapshot_of_a_tree_holding_an_overriding_module_lists_what_pytorch_lists(
    cls: type[nn.Module],
) -> None:
    _check_snapshot(_in_a_normal_tree(_fill(cls())))


class _HidesOneWeight(nn.Module):
    """A root whose own named_parameters leaves out `hidden.weight`."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(2, 2)
        self.shown = nn.Linear(1, 2)

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]:
        for name, parameter in super().named_parameters(*args, **kwargs):
            if name != "hidden.weight":
                yield name, parameter


def test_a_root_hiding_a_weight_is_summarised_as_pytorch_counts_it() -> None:
    model = _HidesOneWeight()
    tree = tw.walk(model)
    assert [name for name, _ in tree.named_parameters()] == [
        "hidden.bias",
        "shown.weight",
        "shown.bias",
    ]
    assert_same_items(tree.named_parameters(), list(tw.named_parameters(model)), named=True)
    assert tw.summary(model).totals.params == sum(p.numel() for p in model.parameters()) == 6


@pytest.mark.parametrize("dict_name", ["_parameters", "_buffers", "_modules"])
def test_snapshot_of_member_dict_subclasses(dict_name: str) -> None:
    net = _in_a_normal_tree(_fill(nn.Module()))
    setattr(net[1], dict_name, ReversedItems(getattr(net[1], dict_name)))
    _check_snapshot(net)
