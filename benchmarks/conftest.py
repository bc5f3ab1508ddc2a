"""Fixtures of the pytest-benchmark suites, and the table of speed-ups printed at the end.

Run with ``python -m pytest benchmarks`` (``-k seed`` and the like to pick
models). The zoo's models are built once per session, on the meta device.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any

import pytest
from torch import nn
from torchwalk import bench, zoo

MEDIANS = pytest.StashKey[dict[tuple[str, str], dict[str, float]]]()
"""Median seconds per call by (model, function), then by implementation ("torchwalk", ...)."""

TARGETS = pytest.StashKey[dict[tuple[str, str, str], float]]()
"""The speed-up torchwalk must reach over an implementation: (model, function, implementation)."""


@functools.cache
def _model_of(model_name: str) -> nn.Module:
    """The zoo model called ``model_name``, built on the first call and shared by the suites."""
    model = zoo.build(model_name)
    # Keep the collector from rescanning the model's objects (60k modules for
    # DeepSeek-V3) on every full collection of the session.
    gc.collect()
    gc.freeze()
    return model


@functools.cache
def _cases_of(model_name: str) -> dict[str, bench.Case]:
    """The drop-in cases of a zoo model, by function."""
    return {case.function: case for case in bench.cases(_model_of(model_name))}


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[str], nn.Module]:
    """A function from a zoo model's name to the model, built once per session."""
    return _model_of


@pytest.fixture(scope="session")
def dropin_cases() -> Callable[[str], dict[str, bench.Case]]:
    """A function from a zoo model's name to its :func:`torchwalk.bench.cases`, by function."""
    return _cases_of


@pytest.fixture
def record_median(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record a benchmark's median for the speed-up table.

    Called as ``record(model, function, implementation, median_s, target=None)``;
    ``target``, given with another implementation's median, is the speed-up
    torchwalk must reach over it, shown next to the measured one.
    """
    medians = request.config.stash.setdefault(MEDIANS, {})
    targets = request.config.stash.setdefault(TARGETS, {})

    def record(
        model: str,
        function: str,
        implementation: str,
        median_s: float,
        target: float | None = None,
    ) -> None:
        medians.setdefault((model, function), {})[implementation] = median_s
        if target is not None:
            targets[(model, function, implementation)] = target

    return record


@pytest.fixture
def record_benchmark(record_median: Callable[..., None]) -> Callable[..., None]:
    """Record a finished pytest-benchmark's median for the speed-up table.

    Called as ``record(benchmark, model, function, implementation, target=None)``;
    records nothing under ``--benchmark-disable``, where there is no median.
    """

    def record(
        benchmark: Any, model: str, function: str, implementation: str, target: float | None = None
    ) -> None:
        if benchmark.stats is not None:
            record_median(model, function, implementation, benchmark.stats.stats.median, target)

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print every implementation's median over torchwalk's, for each (model, function) measured.

    A ratio below its target is flagged; the session's outcome does not change.
    """
    targets = config.stash.get(TARGETS, {})
    rows = [
        (model, function, implementation, median_s / medians["torchwalk"])
        for (model, function), medians in config.stash.get(MEDIANS, {}).items()
        if "torchwalk" in medians
        for implementation, median_s in medians.items()
        if implementation != "torchwalk"
    ]
    if not rows:
        return
    terminalreporter.section("speed-up: median of each implementation / median torchwalk")
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for model, function, implementation, ratio in rows:
        line = (
            f"{model:<{widths[0]}}  {function:<{widths[1]}}  "
            f"{implementation:<{widths[2]}}  {ratio:8.1f}x"
        )
        target = targets.get((model, function, implementation))
        if target is not None:
            line += f"  target {target:g}x" + ("" if ratio >= target else "  BELOW TARGET")
        terminalreporter.write_line(line)
