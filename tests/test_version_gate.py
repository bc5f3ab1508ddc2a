"""Importing torchwalk under another torch fails early and says what to do.

The extension is compiled against one torch's C++ ABI; under another it may
crash or misbehave. So the import raises ImportError naming both versions and
the rebuild command, before ``torchwalk._C`` is loaded. Each case runs in a
child interpreter that changes ``torch.__version__`` before the import.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

CHILD = """
import json, sys
import torch
real_version = torch.__version__
torch.__version__ = {fake!r} if {plain!r} else type(torch.__version__)({fake!r})
try:
    import torchwalk
except ImportError as error:
    outcome = {{"raised": "ImportError", "message": str(error)}}
else:
    outcome = {{"raised": None, "message": ""}}
outcome["extension_loaded"] = "torchwalk._C" in sys.modules
outcome["torchwalk_in_modules"] = "torchwalk" in sys.modules
# With the right version back, the same interpreter imports torchwalk.
torch.__version__ = real_version
import torchwalk
outcome["reimport_ok"] = hasattr(torchwalk, "named_parameters")
print(json.dumps(outcome))
"""


def import_under(fake_version: str, plain_str: bool) -> dict[str, object]:
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(fake=fake_version, plain=plain_str)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("plain_str", [True, False], ids=["str", "TorchVersion"])
@pytest.mark.parametrize("fake_version", ["2.12.0", "2.13.0+cu128", "2.14.0.dev20260101"])
def test_other_torch_version_raises_import_error_before_loading_the_extension(
    fake_version: str, plain_str: bool
) -> None:
    outcome = import_under(fake_version, plain_str)
    assert outcome["raised"] == "ImportError"
    message = str(outcome["message"])
    assert fake_version in message
    assert torch.__version__ in message  # the version torchwalk was built against
    assert "pip install --no-build-isolation" in message
    assert outcome["extension_loaded"] is False
    assert outcome["torchwalk_in_modules"] is False
    assert outcome["reimport_ok"] is True


def test_matching_torch_version_imports() -> None:
    outcome = import_under(torch.__version__, plain_str=True)
    assert outcome["raised"] is None
    assert outcome["extension_loaded"] is True
