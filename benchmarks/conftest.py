"""Fixtures of the pytest-benchmark suites, and the table of speed-ups printed at the end.

Run with ``python -m pytest benchmarks`` (``-k seed`` and the like to pick
models). The zoo's models are built once per session, on the meta device.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable

import pytest
from torchwalk import bench, zoo

MEDIANS = pytest.StashKey[dict[tuple[str, str], dict[str, float]]]()
"""Median seconds per call by (model, function), then by implementation ("torch", "torchwalk")."""


@functools.cache
def _cases_of(model_name: str) -> dict[str, bench.Case]:
    """The drop-in cases of a zoo model, by function; the model is built on the first call."""
    model = zoo.build(model_name)
    # Keep the collector from rescanning the model's objects (60k modules for
    # DeepSeek-V3) on every full collection of the session.
    gc.collect()
    gc.freeze()
    return {case.function: case for case in bench.cases(model)}


@pytest.fixture(scope="session")
def dropin_cases() -> Callable[[str], dict[str, bench.Case]]:
    """A function from a zoo model's name to its :func:`torchwalk.bench.cases`, by function."""
    return _cases_of


@pytest.fixture
def record_median(request: pytest.FixtureRequest) -> Callable[[str, str, str, float], None]:
    """Record a benchmark's median for the speed-up table (model, function, implementation)."""
    medians = request.config.stash.setdefault(MEDIANS, {})

    def record(model: str, function: str, implementation: str, median_s: float) -> None:
        medians.setdefault((model, function), {})[implementation] = median_s

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print PyTorch's median over torchwalk's for every (model, function) measured both ways."""
    pairs = [
        (model, function, medians["torch"] / medians["torchwalk"])
        for (model, function), medians in config.stash.get(MEDIANS, {}).items()
        if medians.keys() == {"torch", "torchwalk"}
    ]
    if not pairs:
        return
    terminalreporter.section("speed-up: median torch / median torchwalk, same session")
    for model, function, ratio in pairs:
        terminalreporter.write_line(f"{model:<12} {function:<17} {ratio:8.1f}x")
