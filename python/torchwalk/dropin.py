"""Drop-in replacements for ``nn.Module``'s traversal methods.

Each function takes the module first and otherwise has the signature,
defaults, results (the very same objects, in the same order) and errors of the
``torch.nn.Module`` method of the same name. The walk runs in C++, called
straight from the call (each function is a ``_C.DropIn``: no Python frame on
the way); when a class on the way overrides part of PyTorch's traversal
(``named_modules``, ``_named_members``, ``__hash__``, ``__getattr__``, ...),
or anything else could make the fast path differ, the walker declines and the
function's body runs: it hands the call to the module's own method, so the
answer is PyTorch's. Under ``torch.compile`` that body is what dynamo traces
(see compile_support.py).

Differences that remain by design: the iterators are built eagerly (the walk
has finished before the first item is returned), and a module cycle walked
with ``remove_duplicate=False`` raises ``RecursionError`` at once. A walk
handed back to PyTorch behaves as PyTorch does, also in those two respects,
except that it passes on only the arguments that differ from the defaults (so
an override's own defaults apply, as they would to a direct call).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from torchwalk import _C


def _identity_hash_torch_functions() -> tuple[Any, ...]:
    """The ``__torch_function__`` implementations that leave ``Tensor.__hash__`` as ``id``."""
    implementations = [
        torch.Tensor.__dict__["__torch_function__"],
        torch._C._disabled_torch_function_impl,
    ]
    if torch.Tensor.__hash__ in UninitializedTensorMixin._allowed_methods:
        implementations.append(UninitializedTensorMixin.__dict__["__torch_function__"])
    return tuple(implementations)


_C.configure(
    nn.Module,
    nn.Parameter,
    torch.Tensor.__hash__,
    _identity_hash_torch_functions(),
    UninitializedTensorMixin,
)


_Function = TypeVar("_Function", bound=Callable[..., Any])


def _walked_by(walker: Callable[..., Any]) -> Callable[[_Function], _Function]:
    """Put the C++ ``walker`` in front of the decorated function (see ``_C.DropIn``).

    The drop-in is called like the function, and answers with ``walker``; the
    function itself runs only when the walker declines (returns None), so its
    body says what PyTorch answers then, or when the arguments need Python to
    bind them (an unknown keyword, too many arguments: Python's own error).
    """

    def drop_in(function: _Function) -> _Function:
        return cast(_Function, functools.update_wrapper(_C.DropIn(walker, function), function))

    return drop_in


def _given(**arguments: tuple[Any, Any]) -> dict[str, Any]:
    """The ``(value, default)`` pairs whose value is not the default, as keywords.

    A call handed back to an overriding method passes only what the caller
    changed, so that the override's own defaults apply, as with a direct call.
    """
    return {
        name: value
        for name, (value, default) in arguments.items()
        if not (type(value) is type(default) and value == default)
    }


@_walked_by(_C.named_parameters)
def named_parameters(
    module: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, nn.Parameter]]:
    r"""Return an iterator over module parameters, yielding both the name and the parameter.

    Same as ``module.named_parameters(prefix, recurse, remove_duplicate)``.

    Args:
        module (nn.Module): the root of the walk.
        prefix (str): prefix to prepend to all parameter names.
        recurse (bool): if True, then yields parameters of this module
            and all submodules. Otherwise, yields only parameters that
            are direct members of this module.
        remove_duplicate (bool, optional): whether to remove the duplicated
            parameters in the result. Defaults to True.

    Yields:
        (str, Parameter): Tuple containing the name and parameter

    Example::

        >>> for name, param in tw.named_parameters(model):
        >>>     if name in ['bias']:
        >>>         print(param.size())
    """
    return module.named_parameters(
        **_given(
            prefix=(prefix, ""),
            recurse=(recurse, True),
            remove_duplicate=(remove_duplicate, True),
        )
    )


@_walked_by(_C.parameters)
def parameters(module: nn.Module, recurse: bool = True) -> Iterator[nn.Parameter]:
    r"""Return an iterator over module parameters.

    Same as ``module.parameters(recurse)``; typically passed to an optimizer.

    Args:
        module (nn.Module): the root of the walk.
        recurse (bool): if True, then yields parameters of this module
            and all submodules. Otherwise, yields only parameters that
            are direct members of this module.

    Yields:
        Parameter: module parameter

    Example::

        >>> optimizer = torch.optim.AdamW(tw.parameters(model), lr=1e-3)
    """
    return module.parameters(**_given(recurse=(recurse, True)))


@_walked_by(_C.named_buffers)
def named_buffers(
    module: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    r"""Return an iterator over module buffers, yielding both the name and the buffer.

    Same as ``module.named_buffers(prefix, recurse, remove_duplicate)``.

    Args:
        module (nn.Module): the root of the walk.
        prefix (str): prefix to prepend to all buffer names.
        recurse (bool, optional): if True, then yields buffers of this module
            and all submodules. Otherwise, yields only buffers that
            are direct members of this module. Defaults to True.
        remove_duplicate (bool, optional): whether to remove the duplicated buffers
            in the result. Defaults to True.

    Yields:
        (str, torch.Tensor): Tuple containing the name and buffer

    Example::

        >>> for name, buf in tw.named_buffers(model):
        >>>     if name in ['running_var']:
        >>>         print(buf.size())
    """
    return module.named_buffers(
        **_given(
            prefix=(prefix, ""),
            recurse=(recurse, True),
            remove_duplicate=(remove_duplicate, True),
        )
    )


@_walked_by(_C.buffers)
def buffers(module: nn.Module, recurse: bool = True) -> Iterator[torch.Tensor]:
    r"""Return an iterator over module buffers.

    Same as ``module.buffers(recurse)``.

    Args:
        module (nn.Module): the root of the walk.
        recurse (bool): if True, then yields buffers of this module
            and all submodules. Otherwise, yields only buffers that
            are direct members of this module.

    Yields:
        torch.Tensor: module buffer
    """
    return module.buffers(**_given(recurse=(recurse, True)))


@_walked_by(_C.named_modules)
def named_modules(
    module: nn.Module,
    memo: set[nn.Module] | None = None,
    prefix: str = "",
    remove_duplicate: bool = True,
) -> Iterator[tuple[str, nn.Module]]:
    r"""Return an iterator over all modules in the network, yielding both the name and the module.

    Same as ``module.named_modules(memo, prefix, remove_duplicate)``, including
    the modules it adds to ``memo``.

    Args:
        module (nn.Module): the root of the walk.
        memo: a memo to store the set of modules already added to the result
        prefix: a prefix that will be added to the name of the module
        remove_duplicate: whether to remove the duplicated module instances in the result
            or not

    Yields:
        (str, Module): Tuple of name and module

    Raises:
        RecursionError: if the module graph has a cycle and ``remove_duplicate``
            is False (PyTorch recurses until the interpreter's limit).
    """
    return module.named_modules(  # type: ignore[no-any-return]
        **_given(memo=(memo, None), prefix=(prefix, ""), remove_duplicate=(remove_duplicate, True))
    )


@_walked_by(_C.modules)
def modules(module: nn.Module, remove_duplicate: bool = True) -> Iterator[nn.Module]:
    r"""Return an iterator over all modules in the network.

    Same as ``module.modules(remove_duplicate)``.

    Args:
        module (nn.Module): the root of the walk.
        remove_duplicate: whether to remove the duplicated module instances in the result
            or not.

    Yields:
        Module: a module in the network
    """
    return module.modules(**_given(remove_duplicate=(remove_duplicate, True)))


@_walked_by(_C.named_children)
def named_children(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    r"""Return an iterator over immediate children modules, yielding both the name and the module.

    Same as ``module.named_children()``.

    Yields:
        (str, Module): Tuple containing a name and child module
    """
    return module.named_children()


@_walked_by(_C.children)
def children(module: nn.Module) -> Iterator[nn.Module]:
    r"""Return an iterator over immediate children modules.

    Same as ``module.children()``.

    Yields:
        Module: a child module
    """
    return module.children()


@_walked_by(_C.get_submodule)
def get_submodule(module: nn.Module, target: str) -> nn.Module:
    r"""Return the submodule given by ``target`` if it exists, otherwise throw an error.

    Same as ``module.get_submodule(target)``.

    Args:
        module (nn.Module): the root of the search.
        target: The fully-qualified string name of the submodule
            to look for, e.g. ``"net_b.net_c.conv"``.

    Returns:
        torch.nn.Module: The submodule referenced by ``target``

    Raises:
        AttributeError: If at any point along the path resulting from
            the target string the (sub)path resolves to a non-existent
            attribute name or an object that is not an instance of ``nn.Module``.
    """
    return module.get_submodule(target)


@_walked_by(_C.get_parameter)
def get_parameter(module: nn.Module, target: str) -> nn.Parameter:
    r"""Return the parameter given by ``target`` if it exists, otherwise throw an error.

    Same as ``module.get_parameter(target)``.

    Args:
        module (nn.Module): the root of the search.
        target: The fully-qualified string name of the Parameter
            to look for, e.g. ``"net_b.linear.weight"``.

    Returns:
        torch.nn.Parameter: The Parameter referenced by ``target``

    Raises:
        AttributeError: If the target string references an invalid
            path or resolves to something that is not an
            ``nn.Parameter``
    """
    return module.get_parameter(target)


@_walked_by(_C.get_buffer)
def get_buffer(module: nn.Module, target: str) -> torch.Tensor:
    r"""Return the buffer given by ``target`` if it exists, otherwise throw an error.

    Same as ``module.get_buffer(target)``.

    Args:
        module (nn.Module): the root of the search.
        target: The fully-qualified string name of the buffer
            to look for, e.g. ``"net_b.bn.running_mean"``.

    Returns:
        torch.Tensor: The buffer referenced by ``target``

    Raises:
        AttributeError: If the target string references an invalid
            path or resolves to something that is not a
            buffer
    """
    return module.get_buffer(target)


def _state_dict_arguments(
    args: tuple[Any, ...], destination: Any, prefix: Any, keep_vars: Any
) -> tuple[Any, Any, Any]:
    """The deprecated positional ``(destination, prefix, keep_vars)`` read as PyTorch reads them."""
    if len(args) > 0:
        # The same warning as PyTorch's, pointing at the caller of state_dict.
        warnings.warn(
            "Positional args are being deprecated, use kwargs instead. Refer to "
            "https://pytorch.org/docs/main/generated/torch.nn.Module.html#torch.nn.Module.state_dict"
            " for details.",
            FutureWarning,
            stacklevel=3,
        )
        if destination is None:
            destination = args[0]
        if len(args) > 1 and prefix == "":
            prefix = args[1]
        if len(args) > 2 and keep_vars is False:
            keep_vars = args[2]
    return destination, prefix, keep_vars


@_walked_by(_C.state_dict)
def state_dict(
    module: nn.Module,
    *args: Any,
    destination: Any = None,
    prefix: str = "",
    keep_vars: bool = False,
) -> Any:
    r"""Return a dictionary containing references to the whole state of the module.

    Same as ``module.state_dict(destination=destination, prefix=prefix,
    keep_vars=keep_vars)``: the same keys in the same order, the same tensors
    (``detach()``-ed views of the same storage, or the Parameters and buffers
    themselves with ``keep_vars=True``), the same ``_metadata``. Modules with
    state-dict hooks or their own ``state_dict`` / ``_save_to_state_dict``
    are saved by their own methods, at their place.

    Args:
        module (nn.Module): the root of the walk.
        destination (dict, optional): If provided, the state of module will
            be updated into the dict and the same object is returned.
            Otherwise, an ``OrderedDict`` will be created and returned.
            Default: ``None``.
        prefix (str, optional): a prefix added to parameter and buffer
            names to compose the keys in state_dict. Default: ``''``.
        keep_vars (bool, optional): by default the :class:`~torch.Tensor` s
            returned in the state dict are detached from autograd. If it's
            set to ``True``, detaching will not be performed.
            Default: ``False``.

    Returns:
        dict:
            a dictionary containing a whole state of the module

    Example::

        >>> torch.save(tw.state_dict(model), "checkpoint.pt")
    """
    # Reached with the deprecated positional arguments, which the C++ entrance
    # leaves to Python, or when the walker declined the root (the only place
    # where it declines: a child it cannot save is saved by its own method).
    destination, prefix, keep_vars = _state_dict_arguments(args, destination, prefix, keep_vars)
    found = _C.state_dict(module, destination, prefix, keep_vars)
    if found is None:
        return module.state_dict(
            **_given(
                destination=(destination, None),
                prefix=(prefix, ""),
                keep_vars=(keep_vars, False),
            )
        )
    return found
