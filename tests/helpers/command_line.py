"""Running the ``torchwalk`` command line, and the examples, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_torchwalk(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m torchwalk ARGUMENTS`` in a fresh interpreter, in ``cwd`` if given."""
    return subprocess.run(
        [sys.executable, "-m", "torchwalk", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env=environment_for(cwd),
    )


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *launcher: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/NAME`` with this interpreter, after ``launcher``'s arguments
    (e.g. ``-m torch.distributed.run ...``), with ``environment`` added."""
    return subprocess.run(
        [sys.executable, *launcher, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**environment_for(None), **environment},
    )


def environment_for(cwd: Path | None) -> dict[str, str]:
    """This process's environment, with ``PYTHONPATH`` made absolute so that it holds in ``cwd``.

    Tests run with ``PYTHONPATH=python`` take the source tree over the installed
    package; a relative entry would silently take the installed one elsewhere.
    """
    environment = dict(os.environ)
    if cwd is not None and environment.get("PYTHONPATH"):
        entries = environment["PYTHONPATH"].split(os.pathsep)
        environment["PYTHONPATH"] = os.pathsep.join(os.path.abspath(entry) for entry in entries)
    return environment


def make_builder_importable(
    name: str, test_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make ``import NAME`` give a module whose ``build`` is ``test_module``'s, so that the
    command line can load the source ``NAME:build``."""
    (tmp_path / f"{name}.py").write_text(f"from {test_module} import build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    monkeypatch.delitem(sys.modules, name, raising=False)
