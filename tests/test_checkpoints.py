"""Checkpoints as people hold them: every layout, read from headers, checked against loaders.

The layouts are made by the tools people use (transformers' save_pretrained,
sharded and not, safetensors and .bin; torch.distributed.checkpoint.save;
a config alone) or, for dtypes torch lacks and for broken files, written by
hand. The oracle is what safetensors, torch.load and transformers load.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
import torchwalk as tw
from helpers.command_line import run_torchwalk
from helpers.stats_oracle import assert_matches, expected
from torchwalk import checkpoint_stats
from torchwalk.checkpoint_entries import Checkpoint, CheckpointError, TensorEntry
from torchwalk.checkpoints import open_checkpoint

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _tiny_gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        n_layer=3,
        n_embd=32,
        n_head=2,
        vocab_size=120,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2 saved by save_pretrained in several safetensors shards, with its index."""
    folder = tmp_path_factory.mktemp("sharded")
    _tiny_gpt2().save_pretrained(folder, max_shard_size="40KB")
    return folder


def _loaded(folder: Path, suffix: str = ".safetensors") -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight files, as their own loaders load them."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*" + suffix)):
        if suffix == ".safetensors":
            tensors.update(safetensors_torch.load_file(file))
        else:
            tensors.update(torch.load(file, weights_only=True))
    return tensors


def _assert_describes(checkpoint: Checkpoint, tensors: dict[str, torch.Tensor]) -> None:
    assert sorted(checkpoint) == sorted(tensors)
    for name, tensor in tensors.items():
        entry = checkpoint[name]
        if isinstance(entry, TensorEntry):
            assert (entry.dtype, entry.shape, entry.nbytes) == (
                str(tensor.dtype),
                tuple(tensor.shape),
                tensor.nbytes,
            ), name
        else:
            assert torch.equal(entry, tensor), name


# -- layouts ------------------------------------------------------------------------------------


def test_save_pretrained_makes_several_shards(sharded: Path) -> None:
    assert len(list(sharded.glob("*.safetensors"))) > 2
    assert (sharded / "model.safetensors.index.json").is_file()


@pytest.mark.parametrize("which", ["folder", "index", "folder without index"])
def test_a_sharded_checkpoint_lists_what_safetensors_loads(
    sharded: Path, which: str, tmp_path: Path
) -> None:
    tensors = _loaded(sharded)
    if which == "folder":
        source = sharded
    elif which == "index":
        source = sharded / "model.safetensors.index.json"
    else:
        source = tmp_path
        for shard in sharded.glob("*.safetensors"):
            os.link(shard, tmp_path / shard.name)
    checkpoint = open_checkpoint(source)
    assert isinstance(checkpoint, Checkpoint)
    _assert_describes(checkpoint, tensors)
    tree = tw.walk(source)
    assert [name for name, _ in tree.named_parameters()] == list(checkpoint)
    totals = tw.summary(source).totals
    assert totals.params == sum(t.numel() for t in tensors.values())
    assert totals.bytes == sum(t.nbytes for t in tensors.values())
    assert totals.bytes_by_dtype == {"torch.float32": totals.bytes}
    assert totals.trainable is None and totals.frozen is None
    shard_bytes = {
        str(file): file.stat().st_size - 8 - struct.unpack("<Q", file.read_bytes()[:8])[0]
        for file in source.parent.glob("*.safetensors")
        if which == "index"
    } or {
        str(Path(source) / file.name): file.stat().st_size
        - 8
        - struct.unpack("<Q", file.read_bytes()[:8])[0]
        for file in Path(source).glob("*.safetensors")
    }
    assert totals.bytes_by_file == shard_bytes


def test_one_shard_alone(sharded: Path) -> None:
    shard = sorted(sharded.glob("*.safetensors"))[0]
    _assert_describes(open_checkpoint(shard), safetensors_torch.load_file(shard))  # type: ignore[arg-type]


def test_index_order_is_the_listing_order(sharded: Path) -> None:
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    names = [name for name, _ in tw.walk(sharded).named_parameters()]
    assert names == list(index["weight_map"])


def _save_bin_shards(sharded: Path, folder: Path) -> None:
    """The sharded checkpoint as transformers 4 saved it without safetensors: torch.save
    shards and ``pytorch_model.bin.index.json`` (transformers 5 no longer writes them)."""
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    tensors = _loaded(sharded)
    renamed = {
        shard: shard.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
        for shard in set(index["weight_map"].values())
    }
    for shard, bin_shard in renamed.items():
        names = [name for name, where in index["weight_map"].items() if where == shard]
        torch.save({name: tensors[name] for name in names}, folder / bin_shard)
    weight_map = {name: renamed[shard] for name, shard in index["weight_map"].items()}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_bin_shards_with_their_index(sharded: Path, tmp_path: Path) -> None:
    _save_bin_shards(sharded, tmp_path)
    tensors = _loaded(tmp_path, ".bin")
    checkpoint = open_checkpoint(tmp_path)
    assert isinstance(checkpoint, Checkpoint)
    _assert_describes(checkpoint, tensors)
    assert tw.summary(tmp_path).totals.params == sum(t.numel() for t in tensors.values())
    assert tw.walk(tmp_path / "pytorch_model.bin.index.json").named_parameters()


def test_safetensors_index_is_preferred_to_bin_index(sharded: Path, tmp_path: Path) -> None:
    for file in sharded.iterdir():
        os.link(file, tmp_path / file.name)
    _save_bin_shards(sharded, tmp_path)
    checkpoint = open_checkpoint(tmp_path)
    assert isinstance(checkpoint, Checkpoint)
    assert all(isinstance(entry, TensorEntry) for entry in checkpoint.values())


def test_a_config_alone_is_built_on_meta(tmp_path: Path) -> None:
    model = _tiny_gpt2()
    model.config.architectures = ["GPT2LMHeadModel"]  # as save_pretrained records it
    model.config.save_pretrained(tmp_path)
    expected_params = sum(p.numel() for p in model.parameters())
    for source in (tmp_path, tmp_path / "config.json"):
        built = open_checkpoint(source)
        assert isinstance(built, transformers.GPT2LMHeadModel)
        assert all(p.is_meta for p in built.parameters())
        assert tw.summary(source).totals.params == expected_params
        assert [n for n, _ in tw.walk(source).named_parameters()] == [
            n for n, _ in model.named_parameters()
        ]


def test_a_config_naming_no_architecture_is_built_by_automodel(tmp_path: Path) -> None:
    _tiny_gpt2().config.save_pretrained(tmp_path)
    assert isinstance(open_checkpoint(tmp_path), transformers.GPT2Model)


def test_a_config_in_bfloat16_is_built_in_bfloat16(tmp_path: Path) -> None:
    model = _tiny_gpt2()
    model.config.dtype = torch.bfloat16
    model.config.save_pretrained(tmp_path)
    assert set(tw.summary(tmp_path).totals.bytes_by_dtype) == {"torch.bfloat16"}


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
@pytest.mark.parametrize("chunk_bytes", [checkpoint_stats.CHUNK_BYTES, 1000])
def test_a_distributed_checkpoint_needs_allow_pickle(
    tmp_path: Path, chunk_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_stats, "CHUNK_BYTES", chunk_bytes)
    from torch.distributed import checkpoint as dcp

    state = {name: t.detach().clone() for name, t in _tiny_gpt2().state_dict().items()}
    state["step"] = torch.tensor(7)
    dcp.save(state, checkpoint_id=str(tmp_path), no_dist=True)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        tw.walk(tmp_path)
    checkpoint = open_checkpoint(tmp_path, allow_pickle=True)
    assert isinstance(checkpoint, Checkpoint)
    _assert_describes(checkpoint, state)
    summary = tw.summary(tmp_path, allow_pickle=True)
    assert summary.totals.params == sum(t.numel() for t in state.values())
    result = run_torchwalk("summary", str(tmp_path))
    assert result.returncode == 2 and "--allow-pickle" in result.stderr
    assert run_torchwalk("summary", str(tmp_path), "--allow-pickle").returncode == 0
    stats = tw.stats(tmp_path, allow_pickle=True)
    assert [row.name for row in stats.rows] == list(checkpoint)
    for row in stats.rows:
        assert_matches(row, expected(row.name, state[row.name]))


# -- dtypes torch lacks, written by hand --------------------------------------------------------


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    """A .safetensors file of zero bytes per tensor: name -> (dtype, shape, nbytes)."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(offset))


def test_every_dtype_of_the_format_is_counted_exactly(tmp_path: Path) -> None:
    path = tmp_path / "exotic.safetensors"
    _write_safetensors(
        path,
        {
            "fp4": ("F4", [4, 8], 16),
            "fp6a": ("F6_E2M3", [4, 4], 12),
            "fp6b": ("F6_E3M2", [8], 6),
            "scale": ("F8_E8M0", [4], 4),
            "e4m3": ("F8_E4M3", [3, 3], 9),
            "b": ("BOOL", [5], 5),
            "u64": ("U64", [2], 16),
            "c": ("C64", [2], 16),
        },
    )
    totals = tw.summary(path).totals
    assert totals.params == 32 + 16 + 8 + 4 + 9 + 5 + 2 + 2
    assert totals.bytes_by_dtype == {
        "F4": 16,
        "F6_E2M3": 12,
        "F6_E3M2": 6,
        "torch.float8_e8m0fnu": 4,
        "torch.float8_e4m3fn": 9,
        "torch.bool": 5,
        "torch.uint64": 16,
        "torch.complex64": 16,
    }
    stats = tw.stats(path)
    by_name = {row.name: row for row in stats.rows}
    assert by_name["fp4"].numel == 32 and by_name["fp4"].mean is None  # not readable by torch
    assert by_name["e4m3"].zeros == 9
    assert stats.total.numel == 4 + 9 + 5 + 2 + 2  # the readable tensors


# -- broken sources -------------------------------------------------------------------------


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in folder.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    return copy


def _break(kind: str, sharded: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A broken copy of the sharded checkpoint: (source, file named, fault)."""
    copy = _copy(sharded, tmp_path)
    index_path = copy / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(copy.glob("*.safetensors"))
    if kind == "missing shard":
        shards[1].unlink()
        return copy, str(index_path), f"names shard '{shards[1].name}', which is missing"
    if kind == "tensor missing from its shard":
        name = next(iter(index["weight_map"]))
        index["weight_map"]["extra.weight"] = index["weight_map"][name]
        index_path.write_text(json.dumps(index))
        shard = copy / index["weight_map"][name]
        return copy, str(shard), "lacks 'extra.weight'"
    if kind == "name in two files":
        index_path.unlink()
        first = safetensors_torch.load_file(shards[0])
        name = next(iter(first))
        safetensors_torch.save_file({name: first[name]}, copy / "zzz.safetensors")
        return copy, str(copy / "zzz.safetensors"), f"holds {name!r}, which"
    if kind == "truncated file":
        data = shards[0].read_bytes()
        shards[0].write_bytes(data[:-10])
        return copy, str(shards[0]), "truncated"
    if kind == "truncated header":
        data = shards[0].read_bytes()
        shards[0].write_bytes(data[:20])
        return copy, str(shards[0]), "truncated header"
    if kind == "unknown format":
        path = copy / "weights.onnx"
        path.write_bytes(b"\x08\x07onnx-ish")
        return path, str(path), "unknown format"
    raise AssertionError(kind)


BROKEN = [
    "missing shard",
    "tensor missing from its shard",
    "name in two files",
    "truncated file",
    "truncated header",
    "unknown format",
]


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_checkpoint_raises_naming_the_file_and_the_fault(
    kind: str, sharded: Path, tmp_path: Path
) -> None:
    source, file, fault = _break(kind, sharded, tmp_path)
    with pytest.raises(CheckpointError) as error:
        tw.summary(source)
    assert str(error.value).startswith(f"{file}: "), str(error.value)
    assert fault in str(error.value)


@pytest.mark.parametrize("kind", BROKEN)
def test_the_command_line_says_it_in_one_line(kind: str, sharded: Path, tmp_path: Path) -> None:
    source, file, fault = _break(kind, sharded, tmp_path)
    result = run_torchwalk("summary", str(source))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and file in lines[0] and fault in lines[0], result.stderr


# -- statistics, streamed ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [checkpoint_stats.CHUNK_BYTES, 4096, 100])
def test_streamed_statistics_equal_those_of_the_loaded_tensors(
    sharded: Path, chunk_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_stats, "CHUNK_BYTES", chunk_bytes)
    tensors = _loaded(sharded)
    stats = tw.stats(sharded)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert [row.name for row in stats.rows] == list(index["weight_map"])
    for row in stats.rows:
        assert_matches(row, expected(row.name, tensors[row.name]))
    everything = torch.cat([tensors[name].flatten() for name in index["weight_map"]])
    assert_matches(stats.total, expected("total", everything))


def test_a_file_shorter_than_its_header_says_fails_when_read(sharded: Path, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(sharded)
    assert isinstance(checkpoint, Checkpoint)
    shard = _copy(sharded, tmp_path) / Path(next(iter(checkpoint.files))).name
    checkpoint = open_checkpoint(shard)
    assert isinstance(checkpoint, Checkpoint)
    os.truncate(shard, shard.stat().st_size - 4)  # after the header was read
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint_stats.checkpoint_stats(checkpoint)


def test_a_checkpoint_has_no_gradients(sharded: Path) -> None:
    with pytest.raises(ValueError, match="no gradients"):
        tw.walk(sharded).stats(grads=True)


@pytest.mark.parametrize("chunk_bytes", [checkpoint_stats.CHUNK_BYTES, 4096])
def test_progress_counts_every_byte_read_once(
    sharded: Path, chunk_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_stats, "CHUNK_BYTES", chunk_bytes)
    reports: list[int] = []
    tw.walk(sharded).stats(progress=reports.append)
    assert sum(reports) == tw.summary(sharded).totals.bytes
    assert len(reports) >= (2 if chunk_bytes == 4096 else 1)


def test_a_sparse_terabyte_checkpoint_is_summarised_from_its_header(tmp_path: Path) -> None:
    """A 1.1 TB file whose data is a hole: nothing of it may be read to summarise it."""
    path = tmp_path / "giant.safetensors"
    shapes = {f"layers.{i}.weight": [65536, 65536] for i in range(128)}  # 8 GiB each in bf16
    header = {}
    offset = 0
    for name, shape in shapes.items():
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2**33]}
        offset += 2**33
    text = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        file.truncate(8 + len(text) + offset)
    totals = tw.summary(path).totals
    assert totals.params == 128 * 65536**2
    assert totals.bytes == offset == 2**40
    assert totals.bytes_by_file == {str(path): 2**40}
    assert path.stat().st_blocks * 512 < 2**20  # still a hole: no data was ever written


def test_the_command_line_takes_every_layout(sharded: Path) -> None:
    index = sharded / "model.safetensors.index.json"
    summary = run_torchwalk("summary", str(sharded))
    assert summary.returncode == 0, summary.stderr
    assert "By file:" in summary.stdout and "Trainable" not in summary.stdout
    drawing = run_torchwalk("tree", str(index), "--depth", "1")
    assert drawing.returncode == 0 and "transformer" in drawing.stdout
    stats = run_torchwalk("stats", str(sharded), "--json")
    assert stats.returncode == 0, stats.stderr
    names = [row["name"] for row in json.loads(stats.stdout)["tensors"]]
    assert names == list(json.loads(index.read_text())["weight_map"])
