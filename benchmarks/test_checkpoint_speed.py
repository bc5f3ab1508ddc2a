"""Checkpoints read from their headers, and their statistics streamed.

- Summary of a DeepSeek-V3-shaped checkpoint: 163 ``.safetensors`` shards
  with an index, 45,395 bfloat16 tensors, 1.34 TB (sparse files made with
  ``truncate``: the headers are real, the data is holes). ``tw.summary(dir)``
  against huggingface_hub's ``get_local_safetensors_metadata(dir)``, which
  reads the same headers and nothing else; target: at least as fast.
- Statistics of 4 shards × 512 MiB of float32 (random values):
  ``tw.stats(dir)`` against loading each shard with ``safetensors`` and
  computing its statistics (``tw.stats`` of the loaded tensors, so that the
  comparison is the reading alone); target: at least as fast. A second test
  measures the peak RSS growth of each in a fresh process: ``tw.stats(dir)``
  must stay under 128 MB (it maps 64 MiB of a file at a time), where loading
  a shard maps 512 MiB.

The checkpoints are built once per session under pytest's temporary folder.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchwalk as tw
from peak_memory import peak_growth
from torchwalk import zoo

DEEPSEEK_SHARDS = 163
STATS_SHARDS = 4
STATS_SHARD_BYTES = 512 * 1024**2
RSS_LIMIT = 128 * 1024**2

_SAFETENSORS_NAMES = {torch.bfloat16: "BF16", torch.float32: "F32"}


def _write_sparse_shard(path: Path, tensors: list[tuple[str, torch.Size, torch.dtype]]) -> None:
    """A .safetensors file with a real header and data that is a hole."""
    header = {}
    offset = 0
    for name, shape, dtype in tensors:
        nbytes = shape.numel() * dtype.itemsize
        header[name] = {
            "dtype": _SAFETENSORS_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        file.truncate(8 + len(text) + offset)


@pytest.fixture(scope="session")
def deepseek_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DeepSeek-V3-shaped sparse checkpoint (see the module docstring)."""
    folder = tmp_path_factory.mktemp("deepseek-v3")
    model = zoo.build("deepseek-v3")
    tensors = [(name, tensor.shape, torch.bfloat16) for name, tensor in model.state_dict().items()]
    per_shard = -(-len(tensors) // DEEPSEEK_SHARDS)
    weight_map = {}
    for shard in range(DEEPSEEK_SHARDS):
        name = f"model-{shard + 1:05d}-of-{DEEPSEEK_SHARDS:05d}.safetensors"
        part = tensors[shard * per_shard : (shard + 1) * per_shard]
        _write_sparse_shard(folder / name, part)
        weight_map.update({tensor_name: name for tensor_name, _, _ in part})
    total = sum(shape.numel() * dtype.itemsize for _, shape, dtype in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="session")
def stats_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four shards of 512 MiB of random float32, 64 tensors each, without an index."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("stats")
    generator = torch.Generator().manual_seed(0)
    per_tensor = STATS_SHARD_BYTES // 64 // 4
    for shard in range(STATS_SHARDS):
        tensors = {
            f"layers.{shard}.w{index}": torch.randn(per_tensor, generator=generator)
            for index in range(64)
        }
        save_file(tensors, folder / f"model-{shard}.safetensors")
    return folder


def _load_each_shard_then_stats(folder: Path) -> None:
    from safetensors.torch import load_file

    for shard in sorted(folder.glob("*.safetensors")):
        tw.stats(load_file(shard))


def _measure(benchmark, function: Callable[[], object], rounds: int) -> float:  # type: ignore[no-untyped-def]
    benchmark.pedantic(function, rounds=rounds, warmup_rounds=1)
    return float(benchmark.stats.stats.median)


@pytest.mark.parametrize("implementation", ["torchwalk", "huggingface_hub"])
def test_summary_of_a_sharded_671b_checkpoint(
    benchmark, record_median, deepseek_checkpoint: Path, implementation: str
) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "summary deepseek-v3 checkpoint (163 shards)"
    if implementation == "torchwalk":
        summary = tw.summary(deepseek_checkpoint)
        assert summary.totals.params == sum(
            t.numel() for t in zoo.build("deepseek-v3").state_dict().values()
        )
        median = _measure(benchmark, lambda: tw.summary(deepseek_checkpoint), 5)
        record_median("deepseek-v3 headers", "summary", "torchwalk", median)
    else:
        from huggingface_hub import get_local_safetensors_metadata

        median = _measure(benchmark, lambda: get_local_safetensors_metadata(deepseek_checkpoint), 5)
        record_median("deepseek-v3 headers", "summary", "headers", median, target=1.0)


@pytest.mark.parametrize("implementation", ["torchwalk", "load then stats"])
def test_streamed_stats_of_4_shards_of_512MiB(
    benchmark, record_median, stats_checkpoint: Path, implementation: str
) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "stats 4 x 512 MiB checkpoint"
    if implementation == "torchwalk":
        median = _measure(benchmark, lambda: tw.stats(stats_checkpoint), 3)
        record_median("4 x 512 MiB", "stats", "torchwalk", median)
    else:
        median = _measure(benchmark, lambda: _load_each_shard_then_stats(stats_checkpoint), 3)
        record_median("4 x 512 MiB", "stats", "load then stats", median, target=1.0)


@pytest.mark.parametrize("implementation", ["torchwalk", "load then stats"])
def test_peak_memory_of_streamed_stats(stats_checkpoint: Path, implementation: str) -> None:
    """Peak RSS growth while computing the statistics, in a fresh process (printed)."""
    folder = str(stats_checkpoint)
    call = (
        f"tw.stats({folder!r})"
        if implementation == "torchwalk"
        else f"_load_each_shard_then_stats(Path({folder!r}))"
    )
    setup = "from pathlib import Path\nimport torchwalk as tw\n" + (
        "from test_checkpoint_speed import _load_each_shard_then_stats"
    )
    growth = peak_growth(setup, call)
    print(f"\npeak RSS growth, {implementation}: {growth / 1024**2:.0f} MiB")
    if implementation == "torchwalk":
        assert growth < RSS_LIMIT, f"{growth / 1024**2:.0f} MiB"
