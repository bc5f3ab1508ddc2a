"""What ``torch.compile`` traces where torchwalk would walk in C++.

Dynamo cannot look inside a C function, so it is told, through
``torch.compiler.substitute_in_graph``, what to trace in its place:

- every C++ walker declines (answers None), as it does in eager mode when a
  class on the way overrides the traversal;
- a drop-in (a ``_C.DropIn``) therefore runs its Python body, which is
  PyTorch's answer (the module's own method, or under ``install()`` the
  function that ``install()`` replaced).

Compiled code thus runs exactly the Python that it runs without torchwalk:
the same results and the same graph breaks. Eager calls keep the C++ path.

Importing ``torch._dynamo`` takes about two seconds, so torchwalk does not
import it for this: the substitutes are registered as soon as something else
has imported it (at once, if that has already happened).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from torchwalk import _C

# The walkers that Python code calls: the DropIns and install()'s methods.
_WALKERS = (
    _C.named_parameters,
    _C.parameters,
    _C.named_buffers,
    _C.buffers,
    _C.named_modules,
    _C.modules,
    _C.named_children,
    _C.children,
    _C.get_submodule,
    _C.get_parameter,
    _C.get_buffer,
    _C.state_dict,
)


def _walker_declines(*args: Any, **kwargs: Any) -> None:
    """What dynamo traces for a C++ walker: it declines, so PyTorch answers."""
    return None


def _drop_in_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    """What dynamo traces for a call of a ``_C.DropIn``: its Python body."""
    return self.__wrapped__(*args, **kwargs)


def _register_substitutes() -> None:
    substitute = torch.compiler.substitute_in_graph
    for walker in _WALKERS:
        substitute(walker, skip_signature_check=True)(_walker_declines)
    substitute(_C.DropIn.__call__, skip_signature_check=True)(_drop_in_call)


def _register_substitutes_or_warn() -> None:
    # Runs inside `import torch._dynamo`: a failure here must not break that
    # import (and with it every torch.compile), only torchwalk under it.
    try:
        _register_substitutes()
    except Exception as error:
        warnings.warn(
            f"torchwalk could not register its drop-ins with torch.compile ({error!r}); "
            "compiling code that calls them may fail",
            RuntimeWarning,
            stacklevel=2,
        )


class _RegisterAfterImport(importlib.abc.Loader):
    """Loads ``torch._dynamo`` with its own loader, then registers the substitutes."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its own loader, as if this one had never been here.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _register_substitutes_or_warn()


class _DynamoImportWatch(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps ``torch._dynamo``'s loader in ``_RegisterAfterImport``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torch._dynamo":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisterAfterImport(spec.loader)
        return spec


def register_when_dynamo_loads() -> None:
    """Register the substitutes now if ``torch._dynamo`` is loaded, else once it is."""
    if "torch._dynamo" in sys.modules:
        _register_substitutes_or_warn()
    else:
        sys.meta_path.insert(0, _DynamoImportWatch())
