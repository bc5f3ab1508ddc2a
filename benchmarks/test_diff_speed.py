"""`tw.diff` of two state dicts of 512 MiB of float32 each, against what people run today.

Eight pairs of 16 Mi float32 (64 MiB each side), the second a perturbed copy
of the first: ``tw.diff(a, b, rtol=1e-5, atol=1e-8)`` (every field of every
pair: max and mean |a - b|, relative L2, cosine, isclose mismatches,
bitwise equality), against

- one ``torch.dot`` pass over the same pairs (a floor: one read of both
  sides, one figure); target: within 1.5× of it;
- the op chain of the comparison scripts (maxtext's, allennlp's diff): per
  pair ``(a - b).abs().max()``, ``(a - b).abs().mean()``, the norms,
  ``cosine_similarity`` and ``allclose``, each a pass over the tensors with
  temporaries; target: 50×.

And the extra memory `tw.diff` takes (peak resident growth, in a fresh
process): target under 16 MB.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchwalk as tw

PAIRS = "2 x 512 MiB float32"
PAIR_COUNT = 8
PAIR_ELEMENTS = 16 * 1024**2


def _pairs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    a = {
        f"layer{i}.weight": torch.randn(PAIR_ELEMENTS, generator=generator)
        for i in range(PAIR_COUNT)
    }
    b = {name: x + torch.randn(x.shape, generator=generator) * 1e-4 for name, x in a.items()}
    return a, b


@pytest.fixture(scope="module")
def pairs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return _pairs()


def _dot_pass(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[float]:
    return [float(torch.dot(a[name], b[name])) for name in a]


def _op_chain(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[tuple[float, ...]]:
    found = []
    for name in a:
        x, y = a[name].double(), b[name].double()
        found.append(
            (
                float((x - y).abs().max()),
                float((x - y).abs().mean()),
                float(torch.linalg.vector_norm(x - y) / torch.linalg.vector_norm(y)),
                float(torch.nn.functional.cosine_similarity(x, y, dim=0)),
                float(torch.allclose(x, y, rtol=1e-5, atol=1e-8)),
            )
        )
    return found


@pytest.mark.parametrize("implementation", ["torchwalk", "torch.dot pass", "op chain"])
def test_diff_of_two_512MiB_state_dicts(  # type: ignore[no-untyped-def]
    benchmark, record_benchmark, pairs, implementation: str
) -> None:
    a, b = pairs
    benchmark.group = f"diff, {PAIRS}"
    if implementation == "torchwalk":
        benchmark.pedantic(lambda: tw.diff(a, b, rtol=1e-5, atol=1e-8), rounds=11, warmup_rounds=1)
        record_benchmark(benchmark, PAIRS, "diff", "torchwalk")
    elif implementation == "torch.dot pass":
        benchmark.pedantic(lambda: _dot_pass(a, b), rounds=11, warmup_rounds=1)
        # torchwalk within 1.5x of the floor: the floor's time over ours at least 1/1.5.
        record_benchmark(benchmark, PAIRS, "diff", implementation, target=1 / 1.5)
    else:
        benchmark.pedantic(lambda: _op_chain(a, b), rounds=3, warmup_rounds=0)
        record_benchmark(benchmark, PAIRS, "diff", implementation, target=50.0)


# The peak resident memory (VmHWM) is reset after the pairs are made (Linux:
# writing 5 to /proc/self/clear_refs), so that it measures tw.diff alone.
_PEAK_SCRIPT = """
import sys
sys.path.insert(0, {benchmarks!r})
import torchwalk as tw
from test_diff_speed import _pairs
a, b = _pairs()
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")
before = status("VmHWM")
tw.diff(a, b, rtol=1e-5, atol=1e-8)
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_extra_memory_of_diff() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT.format(benchmarks=str(Path(__file__).parent))],
        capture_output=True,
        text=True,
        check=True,
    )
    extra = int(done.stdout.split()[-1])
    print(f"\ntw.diff of {PAIRS}: peak resident growth {extra / 2**20:.1f} MiB (target < 16 MiB)")
