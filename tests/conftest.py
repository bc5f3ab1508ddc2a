"""Test-wide settings: hypothesis profiles and the `slow` marker.

The default "ci" profile is derandomized (the same examples on every run, so a
failure reproduces) and sized so that the equality tests together draw well
over 500 trees. ``TORCHWALK_LONG_TESTS=1`` selects the "long" profile, with
random examples and many more of them, and enables the tests marked `slow`.
``TORCHWALK_TEST_INSTALLED=1`` runs the whole suite with ``tw.install()``
active (PyTorch's own methods then route through torchwalk too).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

LONG_TESTS = os.environ.get("TORCHWALK_LONG_TESTS") == "1"
INSTALLED = os.environ.get("TORCHWALK_TEST_INSTALLED") == "1"

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=3000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("long" if LONG_TESTS else "ci")


@pytest.fixture
def transformers_offline(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The transformers package, offline (models are built from configs), or a skip."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its import warns about optional dependencies
        return pytest.importorskip("transformers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG_TESTS:
        return
    skip_slow = pytest.mark.skip(reason="long run: set TORCHWALK_LONG_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def pytest_configure(config: pytest.Config) -> None:
    if INSTALLED:
        import torchwalk

        torchwalk.install()
