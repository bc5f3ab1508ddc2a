"""Route ``nn.Module``'s traversal methods through torchwalk: ``install()``.

``install()`` replaces nine functions on ``nn.Module`` itself
(``named_parameters``, ``parameters``, ``named_buffers``, ``buffers``,
``named_modules``, ``modules``, ``named_children``, ``children`` and
``state_dict``), so every class that does not override them walks in C++,
and existing training code (optimizers, ``clip_grad_norm_``, checkpointing)
gets faster unchanged. ``uninstall()`` puts back the very same function
objects; ``with installed():`` scopes it. Importing torchwalk patches nothing.

Three things make this safe:

- The C++ walkers decide which classes they may walk for PyTorch by comparing
  what a class resolves each method to with nn.Module's own function. Once
  nn.Module itself holds the replacement, that comparison would call every
  class an override; so the replacements are registered with ``_C`` as
  equivalent to the functions they replace.
- A replacement asks the C++ walker first and calls the function it replaced
  only when the walker declines (some class on the way overrides part of the
  traversal); never ``self.method(...)``, which would be the replacement
  again.
- The replacements are plain Python functions, not ``_C.DropIn`` objects:
  ``torch.compile`` binds only functions to an instance when it reads
  ``self.parameters``. Under compilation the walkers decline (see
  compile_support.py), so compiled code runs the replaced functions, exactly
  as without torchwalk.

Positional arguments work as they do with PyTorch's methods, including
``state_dict``'s deprecated positional ``destination, prefix, keep_vars``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from torchwalk import _C
from torchwalk.dropin import _state_dict_arguments

# The replaced functions, by name, while installed.
_replaced: dict[str, Callable[..., Any]] = {}


def _named_parameters(
    self: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, nn.Parameter]]:
    found = _C.named_parameters(self, prefix, recurse, remove_duplicate)
    if found is None:
        return _replaced["named_parameters"](self, prefix, recurse, remove_duplicate)  # type: ignore[no-any-return]
    return found


def _parameters(self: nn.Module, recurse: bool = True) -> Iterator[nn.Parameter]:
    found = _C.parameters(self, recurse)
    if found is None:
        return _replaced["parameters"](self, recurse)  # type: ignore[no-any-return]
    return found


def _named_buffers(
    self: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, Any]]:
    found = _C.named_buffers(self, prefix, recurse, remove_duplicate)
    if found is None:
        return _replaced["named_buffers"](self, prefix, recurse, remove_duplicate)  # type: ignore[no-any-return]
    return found


def _buffers(self: nn.Module, recurse: bool = True) -> Iterator[Any]:
    found = _C.buffers(self, recurse)
    if found is None:
        return _replaced["buffers"](self, recurse)  # type: ignore[no-any-return]
    return found


def _named_modules(
    self: nn.Module,
    memo: set[nn.Module] | None = None,
    prefix: str = "",
    remove_duplicate: bool = True,
) -> Iterator[tuple[str, nn.Module]]:
    found = _C.named_modules(self, memo, prefix, remove_duplicate)
    if found is None:
        return _replaced["named_modules"](self, memo, prefix, remove_duplicate)  # type: ignore[no-any-return]
    return found


def _modules(self: nn.Module, remove_duplicate: bool = True) -> Iterator[nn.Module]:
    found = _C.modules(self, remove_duplicate)
    if found is None:
        return _replaced["modules"](self, remove_duplicate)  # type: ignore[no-any-return]
    return found


def _named_children(self: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    found = _C.named_children(self)
    if found is None:
        return _replaced["named_children"](self)  # type: ignore[no-any-return]
    return found


def _children(self: nn.Module) -> Iterator[nn.Module]:
    found = _C.children(self)
    if found is None:
        return _replaced["children"](self)  # type: ignore[no-any-return]
    return found


def _state_dict(
    self: nn.Module, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False
) -> Any:
    destination, prefix, keep_vars = _state_dict_arguments(args, destination, prefix, keep_vars)
    found = _C.state_dict(self, destination, prefix, keep_vars)
    if found is None:
        return _replaced["state_dict"](
            self, destination=destination, prefix=prefix, keep_vars=keep_vars
        )
    return found


_REPLACEMENTS: dict[str, Callable[..., Any]] = {
    "named_parameters": _named_parameters,
    "parameters": _parameters,
    "named_buffers": _named_buffers,
    "buffers": _buffers,
    "named_modules": _named_modules,
    "modules": _modules,
    "named_children": _named_children,
    "children": _children,
    "state_dict": _state_dict,
}


def _adopt_metadata(replacement: Callable[..., Any], replaced: Callable[..., Any]) -> None:
    """Give a replacement the name, docstring and signature text of what it replaces."""
    for attribute in ("__doc__", "__qualname__", "__module__"):
        setattr(replacement, attribute, getattr(replaced, attribute, None))
    replacement.__wrapped__ = replaced  # type: ignore[attr-defined]


def is_installed() -> bool:
    r"""Return whether :func:`install` is in effect."""
    return bool(_replaced)


def install() -> None:
    r"""Route ``nn.Module``'s traversal methods and ``state_dict`` through torchwalk.

    After this, ``module.parameters()``, ``named_parameters``, ``buffers``,
    ``named_buffers``, ``modules``, ``named_modules``, ``children``,
    ``named_children`` and ``state_dict`` walk in C++ for every class that
    does not override them, with the same results as PyTorch's methods.
    Installing twice is harmless.

    Example::

        >>> tw.install()
        >>> optimizer = torch.optim.AdamW(model.parameters())  # walked in C++
        >>> tw.uninstall()
    """
    if _replaced:
        return
    replaced = {name: nn.Module.__dict__[name] for name in _REPLACEMENTS}
    for name, replacement in _REPLACEMENTS.items():
        _adopt_metadata(replacement, replaced[name])
    # Accepted before they appear on nn.Module, so that no walk ever sees a
    # replacement it does not know.
    _C.set_replacements(_REPLACEMENTS)
    _replaced.update(replaced)
    for name, replacement in _REPLACEMENTS.items():
        setattr(nn.Module, name, replacement)


def uninstall() -> None:
    r"""Put back the very functions :func:`install` replaced on ``nn.Module``.

    Harmless when torchwalk is not installed.
    """
    if not _replaced:
        return
    for name, replaced in _replaced.items():
        setattr(nn.Module, name, replaced)
    _replaced.clear()
    _C.set_replacements({})


@contextmanager
def installed() -> Iterator[None]:
    r"""Install torchwalk for the duration of a ``with`` block.

    Leaves it installed afterwards if it already was.

    Example::

        >>> with tw.installed():
        ...     trainer.fit(model)
    """
    already = is_installed()
    install()
    try:
        yield
    finally:
        if not already:
            uninstall()
