"""PyTorch's ``state_dict`` as the oracle, and random trees that make it hard.

``decorated_trees()`` draws a tree from ``module_trees()`` and then gives some
of its modules what ``state_dict`` must honour: pre- and post-hooks (public
and the legacy ``_register_state_dict_hook``), extra state, a
``_save_to_state_dict`` or ``state_dict`` override, a class ``_version``.
Hooks count their calls, so that a hook run twice, or not at all, shows.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from helpers.module_trees import PREFIXES, module_trees

# What hooks and overrides add: the same object on both sides.
MARK = torch.zeros(1)

# How often each hook ran, by its label; reset by the caller around each run.
HOOK_CALLS: Counter[str] = Counter()


def _count(label: str) -> None:
    HOOK_CALLS[label] += 1


def _extra_state(self: nn.Module) -> Any:
    _count(f"extra:{id(self)}")
    return {"step": 3, "owner": type(self).__name__}


def _saves_an_extra_key(self: nn.Module, destination: Any, prefix: str, keep_vars: bool) -> None:
    nn.Module._save_to_state_dict(self, destination, prefix, keep_vars)
    destination[prefix + "custom"] = MARK


def _state_dict_without_buffers(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    result = nn.Module.state_dict(self, *args, **kwargs)
    for name, buffer in self._buffers.items():
        if buffer is not None:
            result.pop(kwargs.get("prefix", "") + name, None)
    return result


_CLASS_CHANGES: dict[str, dict[str, Any]] = {
    "extra_state": {"get_extra_state": _extra_state, "set_extra_state": lambda self, state: None},
    "save_override": {"_save_to_state_dict": _saves_an_extra_key},
    "state_dict_override": {"state_dict": _state_dict_without_buffers},
    "version": {"_version": 7},
}

_subclasses: dict[tuple[type, str], type] = {}


def _give_class(module: nn.Module, change: str) -> None:
    """Move the module to a subclass of its class with `change` (made once per pair)."""
    cls = type(module)
    key = (cls, change)
    if key not in _subclasses:
        _subclasses[key] = type(f"{cls.__name__}_{change}", (cls,), dict(_CLASS_CHANGES[change]))
    module.__class__ = _subclasses[key]


def _give_hook(module: nn.Module, kind: str, label: str) -> None:
    if kind == "pre_hook":
        module.register_state_dict_pre_hook(lambda *args: _count(label))
    elif kind == "post_hook":

        def post_hook(module: nn.Module, state: Any, prefix: str, metadata: Any) -> None:
            _count(label)
            state[prefix + "post"] = MARK

        module.register_state_dict_post_hook(post_hook)
    else:  # the legacy hook: its return value replaces the root's result

        def legacy_hook(module: nn.Module, state: Any, prefix: str, metadata: Any) -> Any:
            _count(label)
            replaced = OrderedDict(state)
            replaced[prefix + "legacy"] = MARK
            return replaced

        module._register_state_dict_hook(legacy_hook)


_DECORATIONS = [
    "pre_hook",
    "post_hook",
    "legacy_hook",
    "extra_state",
    "save_override",
    "state_dict_override",
    "version",
]


@st.composite
def decorated_trees(draw: Any) -> nn.Module:
    """A `module_trees()` tree with hooks, extra state and overrides on some modules."""
    tree = draw(module_trees())
    modules = list(tree.modules())
    for position, module in enumerate(modules):
        if draw(st.integers(0, 3)) != 0:
            continue
        decoration = draw(st.sampled_from(_DECORATIONS))
        if decoration.endswith("hook"):
            _give_hook(module, decoration, f"{decoration}:{position}")
        else:
            _give_class(module, decoration)
    return tree


# --- comparing state dicts --------------------------------------------------------------


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata  # type: ignore[no-any-return]


def assert_same_value(ours: Any, theirs: Any, keep_vars: bool, key: str) -> None:
    """The same tensor (same object with keep_vars, else a view of the same memory)."""
    if not isinstance(theirs, torch.Tensor):
        assert ours == theirs, key
        return
    assert type(ours) is type(theirs), (key, type(ours), type(theirs))
    if keep_vars or isinstance(theirs, nn.parameter.UninitializedTensorMixin):
        assert ours is theirs, key  # lazy modules save uninitialized tensors as they are
        return
    assert ours.device == theirs.device, key
    assert ours.dtype == theirs.dtype, key
    assert ours.shape == theirs.shape, key
    assert ours.requires_grad == theirs.requires_grad, key
    assert ours.stride() == theirs.stride(), key
    assert ours.storage_offset() == theirs.storage_offset(), key
    assert _storage_key(ours) == _storage_key(theirs), key
    assert ours._version == theirs._version, key  # a shared version counter


def assert_same_state_dict(ours: Any, theirs: Any, keep_vars: bool) -> None:
    """Same type, keys in the same order, same tensors, same `_metadata`."""
    assert type(ours) is type(theirs), (type(ours), type(theirs))
    assert list(ours) == list(theirs)
    for key in theirs:
        assert_same_value(ours[key], theirs[key], keep_vars, key)
    assert hasattr(ours, "_metadata") == hasattr(theirs, "_metadata")
    if hasattr(theirs, "_metadata"):
        assert type(ours._metadata) is type(theirs._metadata)
        assert list(ours._metadata.items()) == list(theirs._metadata.items())


def _outcome(call: Callable[[], Any]) -> tuple[Any, BaseException | None, Counter[str]]:
    HOOK_CALLS.clear()
    try:
        result, error = call(), None
    except Exception as raised:  # any error: it must be PyTorch's
        result, error = None, raised
    return result, error, Counter(HOOK_CALLS)


def _fresh_destination(kind: str) -> Any:
    if kind == "none":
        return None
    if kind == "dict":
        return {}
    destination: Any = OrderedDict()
    destination._metadata = OrderedDict()
    return destination


def assert_same_call(ours: Callable[..., Any], theirs: Callable[..., Any], **flags: Any) -> None:
    """One state_dict call both ways: result, error and hook calls."""
    keep_vars = flags.get("keep_vars", False) is True
    expected, expected_error, expected_calls = _outcome(lambda: theirs(**flags))
    got, got_error, got_calls = _outcome(lambda: ours(**flags))
    assert type(got_error) is type(expected_error), (got_error, expected_error)
    assert str(got_error) == str(expected_error)
    assert got_calls == expected_calls
    if expected_error is None:
        assert_same_state_dict(got, expected, keep_vars)


def check_state_dict(
    root: nn.Module,
    ours: Callable[..., Any],
    prefixes: tuple[str, ...] = PREFIXES,
) -> None:
    """`ours(**flags)` against `root.state_dict(**flags)` for every flag combination."""
    for prefix, keep_vars, kind in itertools.product(
        prefixes, (False, True), ("none", "dict", "ordered")
    ):
        flags: dict[str, Any] = {"prefix": prefix, "keep_vars": keep_vars}
        if kind != "none":
            # A fresh destination for each side, passed the same way.
            assert_same_call(
                lambda kind=kind, **f: ours(destination=_fresh_destination(kind), **f),
                lambda kind=kind, **f: root.state_dict(destination=_fresh_destination(kind), **f),
                **flags,
            )
        else:
            assert_same_call(ours, root.state_dict, **flags)
    assert_same_call(ours, root.state_dict)
