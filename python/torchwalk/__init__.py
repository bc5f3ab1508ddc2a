"""torchwalk: fast, exact walks over PyTorch module trees, in C++.

The drop-in functions take a module first and otherwise behave exactly like
the ``torch.nn.Module`` methods of the same name::

    import torchwalk as tw

    for name, param in tw.named_parameters(model):
        ...
"""

from torchwalk._version_gate import check_torch_version

check_torch_version()

# Only now, with the torch version known to match, is the extension loaded.
from torchwalk.dropin import (  # noqa: E402
    buffers,
    children,
    get_buffer,
    get_parameter,
    get_submodule,
    modules,
    named_buffers,
    named_children,
    named_modules,
    named_parameters,
    parameters,
)

__version__ = "0.1.0"

__all__ = [
    "buffers",
    "children",
    "get_buffer",
    "get_parameter",
    "get_submodule",
    "modules",
    "named_buffers",
    "named_children",
    "named_modules",
    "named_parameters",
    "parameters",
]
