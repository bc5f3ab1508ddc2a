"""Finding tied parameters with torchwalk against accelerate's ``find_tied_parameters``.

The model is 16,000 ``nn.Linear(8, 8)`` on the meta device in one
``nn.ModuleList``, where Linear 2k+1's weight is Linear 2k's: 8,000 tied
pairs, 24,000 distinct parameters. Both benchmarks are in the group
``tied-pairs-8k ties``; the session ends with a table of accelerate's median
over torchwalk's, next to the 100x torchwalk must reach. No timing is
asserted. accelerate compares every tied name with every distinct parameter in
Python (quadratic: seconds here), so it is timed in pedantic mode with few
rounds, and skipped when ``requirements-bench.txt`` is not installed.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest
import torch
import torchwalk as tw
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn
from torchwalk.gc_pause import gc_paused

MODEL = "tied-pairs-8k"
FUNCTION = "ties"
GROUP = f"{MODEL} {FUNCTION}"
TIED_PAIRS = 8000


@pytest.fixture(scope="module")
def tied_linears() -> nn.ModuleList:
    """``2 * TIED_PAIRS`` ``nn.Linear(8, 8)`` on meta; Linear 2k+1's weight is Linear 2k's."""
    with gc_paused(), torch.device("meta"):
        linears = nn.ModuleList(nn.Linear(8, 8) for _ in range(2 * TIED_PAIRS))
    for index in range(0, len(linears), 2):
        linears[index + 1].weight = linears[index].weight
    # As for the zoo's models: keep the collector from rescanning 16,000 modules.
    gc.collect()
    gc.freeze()
    return linears


def test_torchwalk_ties(
    benchmark: BenchmarkFixture, tied_linears: nn.ModuleList, record_benchmark: Callable[..., None]
) -> None:
    """torchwalk: ``tw.ties(model)``, every group of names sharing a storage, kind and bytes."""
    benchmark.group = GROUP
    groups = benchmark(lambda: tw.ties(tied_linears))
    assert len(groups) == TIED_PAIRS
    record_benchmark(benchmark, MODEL, FUNCTION, "torchwalk")


def test_accelerate_find_tied_parameters(
    benchmark: BenchmarkFixture, tied_linears: nn.ModuleList, record_benchmark: Callable[..., None]
) -> None:
    """accelerate: ``find_tied_parameters(model)``, the names tied to each parameter object;
    torchwalk must be 100x faster."""
    benchmark.group = GROUP
    modeling = pytest.importorskip("accelerate.utils.modeling")
    groups = benchmark.pedantic(lambda: modeling.find_tied_parameters(tied_linears), rounds=3)
    assert len(groups) == TIED_PAIRS
    record_benchmark(benchmark, MODEL, FUNCTION, "accelerate.find_tied_parameters", target=100)
