"""torchwalk: fast, exact walks over PyTorch module trees, in C++.

The drop-in functions take a module first and otherwise behave exactly like
the ``torch.nn.Module`` methods of the same name::

    import torchwalk as tw

    for name, param in tw.named_parameters(model):
        ...

``tw.walk(model)`` walks once and keeps a snapshot to read many ways: the
views, ``ties()``, ``summary()`` and ``render()``.
"""

from torchwalk._version_gate import check_torch_version

check_torch_version()

# Only now, with the torch version known to match, is the extension loaded.
from torchwalk.comparison import Diff, TensorDiff, diff  # noqa: E402
from torchwalk.compile_support import register_when_dynamo_loads  # noqa: E402
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
    state_dict,
)
from torchwalk.installation import install, installed, uninstall  # noqa: E402
from torchwalk.monitor import Monitor  # noqa: E402
from torchwalk.summary_table import Summary, SummaryRow  # noqa: E402
from torchwalk.tree import ParamTree, TieGroup, render, stats, summary, ties, walk  # noqa: E402
from torchwalk.value_stats import Stats, TensorStats  # noqa: E402

register_when_dynamo_loads()

__version__ = "0.1.0"

__all__ = [
    "Diff",
    "Monitor",
    "ParamTree",
    "Stats",
    "Summary",
    "SummaryRow",
    "TensorDiff",
    "TensorStats",
    "TieGroup",
    "buffers",
    "children",
    "diff",
    "get_buffer",
    "get_parameter",
    "get_submodule",
    "install",
    "installed",
    "modules",
    "named_buffers",
    "named_children",
    "named_modules",
    "named_parameters",
    "parameters",
    "render",
    "state_dict",
    "stats",
    "summary",
    "ties",
    "uninstall",
    "walk",
]
