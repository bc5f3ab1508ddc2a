"""What holds for every training-framework integration: none is a dependency of torchwalk."""

from __future__ import annotations

from helpers.module_trees import run_child

FRAMEWORKS = {"lightning", "pytorch_lightning", "transformers", "accelerate"}


def test_importing_torchwalk_imports_no_training_framework() -> None:
    run_child(
        "import sys, torchwalk, torchwalk.integrations; "
        "imported = {name.partition('.')[0] for name in sys.modules} & " + repr(FRAMEWORKS) + "; "
        "assert not imported, imported",
        "importing torchwalk",
        timeout=120,
    )
