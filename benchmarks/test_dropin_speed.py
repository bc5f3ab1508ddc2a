"""Every drop-in against the PyTorch method it replaces, on every zoo model (pytest-benchmark).

Each (model, function) pair is one benchmark group holding two benchmarks,
``list(model.named_parameters())`` and ``list(tw.named_parameters(model))``
and so on, run one after the other; the session ends with a table of their
median ratios. No timing is asserted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from torchwalk import bench, zoo

RUNS = [
    pytest.param(model, function, implementation, id=f"{model}-{function}-{implementation}")
    for model in zoo.names()
    for function in bench.FUNCTIONS
    for implementation in ("torch", "torchwalk")
]


@pytest.mark.parametrize(("model", "function", "implementation"), RUNS)
def test_dropin(
    benchmark: BenchmarkFixture,
    dropin_cases: Callable[[str], dict[str, bench.Case]],
    record_median: Callable[[str, str, str, float], None],
    model: str,
    function: str,
    implementation: str,
) -> None:
    case = dropin_cases(model).get(function)
    if case is None:
        pytest.skip(f"{model} has nothing for {function} to find")
    benchmark.group = f"{model} {function}"
    benchmark(case.torch_call if implementation == "torch" else case.torchwalk_call)
    if benchmark.stats is not None:  # None under --benchmark-disable
        record_median(model, function, implementation, benchmark.stats.stats.median)
