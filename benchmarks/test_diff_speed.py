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

Then two sharded safetensors checkpoints of the same 512 MiB of float32,
cut differently (four shards against two), compared from their folders
(streamed: files mapped 64 MiB a side at a time) against loading both with
``safetensors.torch.load_file`` first: time and peak resident growth.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchwalk as tw
from peak_memory import MEASURABLE, peak_growth

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


@pytest.mark.skipif(not MEASURABLE, reason="needs Linux /proc")
def test_extra_memory_of_diff() -> None:
    extra = peak_growth(
        "import torchwalk as tw\nfrom test_diff_speed import _pairs\na, b = _pairs()",
        "tw.diff(a, b, rtol=1e-5, atol=1e-8)",
    )
    print(f"\ntw.diff of {PAIRS}: peak resident growth {extra / 2**20:.1f} MiB (target < 16 MiB)")


CHECKPOINTS = "2 sharded checkpoints of 512 MiB"


@pytest.fixture(scope="module")
def checkpoint_folders(
    pairs: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path]:
    """The pairs saved as two checkpoints: ``a`` in four shards, ``b`` in two."""
    from safetensors.torch import save_file

    a, b = pairs
    folders = []
    for tensors, shards in ((a, 4), (b, 2)):
        folder = tmp_path_factory.mktemp(f"shards{shards}")
        names = list(tensors)
        per_shard = len(names) // shards
        for shard in range(shards):
            chosen = names[shard * per_shard : (shard + 1) * per_shard]
            save_file(
                {name: tensors[name] for name in chosen}, folder / f"model-{shard}.safetensors"
            )
        folders.append(folder)
    return folders[0], folders[1]


def _load_both_then_diff(a: Path, b: Path) -> tw.Diff:
    from safetensors.torch import load_file

    def loaded(folder: Path) -> dict[str, torch.Tensor]:
        return {
            k: v
            for shard in sorted(folder.glob("*.safetensors"))
            for k, v in load_file(shard).items()
        }

    return tw.diff(loaded(a), loaded(b), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("implementation", ["torchwalk", "load both then diff"])
def test_diff_of_two_sharded_checkpoints(  # type: ignore[no-untyped-def]
    benchmark, record_benchmark, checkpoint_folders, implementation: str
) -> None:
    a, b = checkpoint_folders
    benchmark.group = f"diff, {CHECKPOINTS}"
    if implementation == "torchwalk":
        benchmark.pedantic(lambda: tw.diff(str(a), str(b), rtol=1e-5, atol=1e-8), rounds=7)
    else:
        benchmark.pedantic(lambda: _load_both_then_diff(a, b), rounds=7)
    record_benchmark(benchmark, CHECKPOINTS, "diff", implementation)


@pytest.mark.skipif(not MEASURABLE, reason="needs Linux /proc")
@pytest.mark.parametrize("implementation", ["torchwalk", "load both then diff"])
def test_peak_memory_of_diffing_checkpoints(
    checkpoint_folders: tuple[Path, Path], implementation: str
) -> None:
    a, b = (str(folder) for folder in checkpoint_folders)
    call = (
        f"tw.diff({a!r}, {b!r}, rtol=1e-5, atol=1e-8)"
        if implementation == "torchwalk"
        else f"_load_both_then_diff(Path({a!r}), Path({b!r}))"
    )
    setup = "from pathlib import Path\nimport torchwalk as tw\n" + (
        "from test_diff_speed import _load_both_then_diff"
    )
    growth = peak_growth(setup, call)
    print(f"\ndiff of {CHECKPOINTS}, {implementation}: peak RSS growth {growth / 2**20:.0f} MiB")
