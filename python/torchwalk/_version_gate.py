"""Refuse to load the C++ extension under a torch it was not compiled for.

A LibTorch extension links against one torch's C++ symbols; under another
torch it may fail to load, or worse, load and misbehave. The build writes the
version it compiled against to ``_build_info.py``; this check runs before
``torchwalk._C`` is imported.
"""

import torch

REBUILD_COMMAND = "pip install --no-build-isolation --force-reinstall --no-deps torchwalk"


def check_torch_version() -> None:
    """Raise ImportError unless the running torch is the one torchwalk was built against."""
    from torchwalk._build_info import TORCH_VERSION as built_against

    if torch.__version__ != built_against:
        raise ImportError(
            f"torchwalk was compiled against torch {built_against}, but torch "
            f"{torch.__version__} is installed. Rebuild it against the installed torch: "
            f"{REBUILD_COMMAND} (from a source checkout: pip install --no-build-isolation .)"
        )
