"""A summary of DeepSeek-V3 by torchwalk against the tools users summarise models with today.

Every benchmark here times one way to describe the meta-device DeepSeek-V3
(60,488 modules, 671 B parameters) in one benchmark group,
``deepseek-v3 summary``; the session ends with a table of each tool's median
over torchwalk's, next to the speed-up torchwalk must reach. No timing is
asserted. Lightning takes seconds per call, so it and accelerate are timed in
pedantic mode with few rounds. The competitors are skipped when
``requirements-bench.txt`` is not installed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torchwalk as tw
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

MODEL = "deepseek-v3"
FUNCTION = "summary"
GROUP = f"{MODEL} {FUNCTION}"


@pytest.fixture(scope="module")
def deepseek_v3(zoo_model: Callable[[str], nn.Module]) -> nn.Module:
    """The zoo's DeepSeek-V3 on the meta device, shared with the other suites."""
    return zoo_model(MODEL)


def test_torchwalk_summary(
    benchmark: BenchmarkFixture, deepseek_v3: nn.Module, record_benchmark: Callable[..., None]
) -> None:
    """torchwalk: ``str(tw.walk(model).summary())``, every row (depth None) and the tie groups."""
    benchmark.group = GROUP
    benchmark(lambda: str(tw.walk(deepseek_v3).summary()))
    record_benchmark(benchmark, MODEL, FUNCTION, "torchwalk")


def test_lightning_model_summary(
    benchmark: BenchmarkFixture, deepseek_v3: nn.Module, record_benchmark: Callable[..., None]
) -> None:
    """Lightning: ``str(ModelSummary(model, max_depth=-1))``; torchwalk must be 100x faster.

    ModelSummary reads ``_trainer`` and ``example_input_array``, which only a
    ``LightningModule`` has, so the model is held by one that does nothing
    else; with ``max_depth=-1`` the holder itself is no row, and the table has
    one row per module of the model, as torchwalk's has before collapsing runs.
    """
    benchmark.group = GROUP
    lightning = pytest.importorskip("lightning.pytorch")
    model_summary = pytest.importorskip("lightning.pytorch.utilities.model_summary")

    class Holder(lightning.LightningModule):
        """A LightningModule whose only content is the model to summarise."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

    holder = Holder(deepseek_v3)
    benchmark.pedantic(lambda: str(model_summary.ModelSummary(holder, max_depth=-1)), rounds=3)
    record_benchmark(benchmark, MODEL, FUNCTION, "lightning.ModelSummary", target=100)


def test_accelerate_compute_module_sizes(
    benchmark: BenchmarkFixture, deepseek_v3: nn.Module, record_benchmark: Callable[..., None]
) -> None:
    """accelerate: ``compute_module_sizes(model)``, the bytes of every module (what
    ``infer_auto_device_map`` starts from); torchwalk must be 10x faster."""
    benchmark.group = GROUP
    modeling = pytest.importorskip("accelerate.utils.modeling")
    benchmark.pedantic(lambda: modeling.compute_module_sizes(deepseek_v3), rounds=5)
    record_benchmark(benchmark, MODEL, FUNCTION, "accelerate.compute_module_sizes", target=10)


def test_torch_named_parameters(
    benchmark: BenchmarkFixture, deepseek_v3: nn.Module, record_benchmark: Callable[..., None]
) -> None:
    """PyTorch: ``list(model.named_parameters())`` alone, the least a summary written in Python
    must do; torchwalk's whole summary must still be 2.5x faster."""
    benchmark.group = GROUP
    benchmark(lambda: list(deepseek_v3.named_parameters()))
    record_benchmark(benchmark, MODEL, FUNCTION, "torch.named_parameters", target=2.5)
