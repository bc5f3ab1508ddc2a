"""``tw.diff`` against float64 torch: every field, special values, dtypes, views, names, roll-ups.

The oracle (``helpers/diff_oracle.py``) computes each field with torch from
the same tensors widened to float64. Sources of every kind (modules,
mappings, safetensors files and sharded folders, ``torch.save`` files,
distributed checkpoints, configs) are compared with each other; two sharded
checkpoints of different shard layouts are compared in batches made tiny, so
that tensors are read in pieces.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.diff_oracle import assert_matches, expected, expected_values, same_bytes
from helpers.stats_oracle import FLOAT8_DTYPES, FLOAT_DTYPES, values, views
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchwalk import _C, pair_batches
from torchwalk.checkpoint_entries import Checkpoint, CheckpointError
from torchwalk.checkpoints import open_checkpoint
from torchwalk.pair_batches import flat_range

safetensors_torch = pytest.importorskip("safetensors.torch")

NAN, INF = math.nan, math.inf

DTYPES = [
    *FLOAT_DTYPES,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.int8,
    torch.uint8,
    torch.int32,
    torch.int64,
    torch.bool,
]
TOLERANCES = [0.0, 1e-3, 0.1, 1.0]


def as_dtype(wide: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float64 values as ``dtype``: integers and booleans get finite values they hold."""
    if dtype.is_floating_point:
        return wide.to(dtype)
    finite = torch.nan_to_num(wide, nan=0.0, posinf=0.0, neginf=0.0)
    if dtype == torch.bool:
        return finite != 0
    return finite.clamp(0 if dtype == torch.uint8 else -100, 100).round().to(dtype)


def laid_out(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout: ``transposed`` or ``strided`` (every other
    element of a larger tensor); unchanged where the tensor has too few dimensions."""
    if layout == "transposed" and tensor.dim() >= 2:
        return tensor.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "strided" and tensor.dim() >= 1:
        wider = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype)
        wider[..., ::2] = tensor
        return wider[..., ::2]
    return tensor


def compared(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **options: float) -> tw.Diff:
    """``tw.diff(a, b)``, each row checked against the oracle."""
    result = tw.diff(a, b, **options)
    for row in result.rows:
        assert_matches(row, expected(row.name, a[row.name], b[row.name], **options))
    return result


# -- every field, on random pairs ---------------------------------------------------------------


@st.composite
def tensor_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Two tensors of one shape, any two dtypes and layouts; ``b`` a copy of ``a``, ``a``
    perturbed, or unrelated; special values anywhere."""
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    numel = math.prod(shape)

    # Magnitudes whose squares float64 holds: far below, the kernel's squared
    # norms underflow to 0 where vector_norm's do not (the kernel's own tests go there).
    def finite(bound: float) -> st.SearchStrategy[float]:
        return st.floats(-bound, bound).filter(lambda value: value == 0 or abs(value) >= 1e-30)

    element = st.one_of(finite(1e3), st.sampled_from([NAN, INF, -INF, 0.0, -0.0]))

    def drawn(elements: st.SearchStrategy[float]) -> torch.Tensor:
        listed = draw(st.lists(elements, min_size=numel, max_size=numel))
        return torch.tensor(listed, dtype=torch.float64).reshape(shape)

    wide_a = drawn(element)
    relation = draw(st.sampled_from(["copy", "perturbed", "unrelated"]))
    if relation == "copy":
        wide_b = wide_a.clone()
    elif relation == "perturbed":
        wide_b = wide_a + drawn(finite(0.01))
    else:
        wide_b = drawn(element)
    a = as_dtype(wide_a, draw(st.sampled_from(DTYPES)))
    b = as_dtype(wide_b, draw(st.sampled_from(DTYPES)))
    layouts = st.sampled_from(["contiguous", "transposed", "strided"])
    return laid_out(a, draw(layouts)), laid_out(b, draw(layouts))


@given(
    st.lists(tensor_pairs(), min_size=1, max_size=4),
    st.sampled_from(TOLERANCES),
    st.sampled_from(TOLERANCES),
)
def test_every_field_is_float64_torchs(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], rtol: float, atol: float
) -> None:
    a = {f"t{index}": x for index, (x, _) in enumerate(pairs)}
    b = {f"t{index}": y for index, (_, y) in enumerate(pairs)}
    result = compared(a, b, rtol=rtol, atol=atol)
    assert [row.name for row in result.rows] == list(a)
    close = all(
        torch.isclose(x.double(), y.double(), rtol=rtol, atol=atol, equal_nan=True).all()
        for x, y in pairs
    )
    assert result.equal == close


# -- special values -----------------------------------------------------------------------------


SPECIAL_PAIRS = {
    "nan in a": ([NAN, 1.0, 2.0], [1.0, 1.0, 2.0]),
    "nan in b": ([1.0, 1.0, 2.0], [1.0, NAN, 2.0]),
    "nan in both, same place": ([NAN, 1.0], [NAN, 1.0]),
    "nan in both, other places": ([NAN, 1.0], [1.0, NAN]),
    "nan against inf": ([NAN, 1.0], [INF, 1.0]),
    "inf in both": ([INF, -INF, 3.0], [INF, -INF, 3.0]),
    "inf against -inf": ([INF, 3.0], [-INF, 3.0]),
    "inf against finite": ([INF, 3.0], [1e3, 3.0]),
    "signed zeros": ([-0.0, 0.0, 1.0], [0.0, -0.0, 1.0]),
    "all zero": ([0.0, 0.0], [0.0, -0.0]),
    "b zero": ([1.0, -2.0], [0.0, 0.0]),
    "a zero": ([0.0, 0.0], [1.0, -2.0]),
    "opposite": ([1.0, -2.0], [-1.0, 2.0]),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", list(SPECIAL_PAIRS))
def test_special_values(case: str, dtype: torch.dtype) -> None:
    listed_a, listed_b = SPECIAL_PAIRS[case]
    a = torch.tensor(listed_a, dtype=dtype)
    b = torch.tensor(listed_b, dtype=dtype)
    for x, y in [(a, b), (a, b.double()), (a.float(), b)]:  # one dtype, and two
        [row] = compared({"t": x}, {"t": y}).rows
        assert row.equal == same_bytes(x, y)


def test_signed_zeros_are_close_but_not_identical() -> None:
    [row] = compared({"t": torch.tensor([-0.0, 1.0])}, {"t": torch.tensor([0.0, 1.0])}).rows
    assert row.equal is False and row.mismatches == 0 and row.max_abs == 0.0


def test_nans_of_other_payloads_are_close_but_not_identical() -> None:
    a = torch.tensor([NAN, 1.0])
    b = a.clone()
    b.view(torch.int32)[0] += 1  # another NaN, bit for bit
    assert math.isnan(b[0])
    [row] = compared({"t": a}, {"t": b}).rows
    assert row.equal is False and row.mismatches == 0 and math.isnan(row.max_abs or 0.0)


# -- dtype mixes ----------------------------------------------------------------------------------


MIXED_DTYPES = [*FLOAT_DTYPES, *FLOAT8_DTYPES, torch.int8, torch.uint8, torch.int64, torch.bool]


@pytest.mark.parametrize("dtype_b", MIXED_DTYPES, ids=str)
@pytest.mark.parametrize("dtype_a", MIXED_DTYPES, ids=str)
def test_every_pair_of_dtypes(dtype_a: torch.dtype, dtype_b: torch.dtype) -> None:
    a = as_dtype(values(torch.float64, 3001, seed=1), dtype_a)
    converted = as_dtype(a.double(), dtype_b)  # a, rounded to b's dtype
    unrelated = as_dtype(values(torch.float64, 3001, seed=2), dtype_b)
    compared({"converted": a, "unrelated": a}, {"converted": converted, "unrelated": unrelated})


def test_a_bfloat16_copy_of_float32_values_compares_equal_but_not_identical() -> None:
    exact = values(torch.float32, 10_000).bfloat16()  # float32 values bfloat16 holds
    result = compared({"w": exact.float()}, {"w": exact})
    [row] = result.rows
    assert result.equal and row.mismatches == 0 and row.equal is False
    assert (row.dtype_a, row.dtype_b) == ("torch.float32", "torch.bfloat16")


def test_a_bfloat16_rounding_is_within_its_tolerance() -> None:
    weights = values(torch.float32, 10_000)
    rounded = weights.bfloat16()
    assert not tw.diff({"w": weights}, {"w": rounded}).equal
    within = compared({"w": weights}, {"w": rounded}, rtol=2**-8, atol=0.0)
    assert within.equal


# -- views read in place ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32], ids=str)
def test_strided_views_against_copies(dtype: torch.dtype) -> None:
    shaped = views(values(dtype, 150_001))
    perturbed = {
        name: as_dtype(
            view.double() + 0.5 * (torch.arange(view.numel()) % 3).reshape(view.shape), dtype
        )
        for name, view in shaped.items()
    }
    copies = {name: view.contiguous() for name, view in shaped.items()}
    same = compared(shaped, copies)
    assert same.equal and all(row.equal for row in same.rows)
    compared(shaped, perturbed)
    compared(perturbed, shaped)


@given(st.data())
def test_flat_ranges_of_views_are_the_flattened_elements(data: st.DataObject) -> None:
    base = torch.arange(6 * 7 * 8, dtype=torch.float32).reshape(6, 7, 8)
    view = data.draw(
        st.sampled_from(
            [base, base.permute(2, 0, 1), base[:, 1::2, ::3], base.transpose(0, 1)[2:, :, 1:]]
        )
    )
    numel = view.numel()
    first = data.draw(st.integers(0, numel - 1))
    count = data.draw(st.integers(1, numel - first))
    assert torch.equal(flat_range(view, first, count), view.reshape(-1)[first : first + count])


# -- shapes and names ---------------------------------------------------------------------------


def test_differing_shapes_have_no_values() -> None:
    a = {"w": torch.zeros(2, 3), "b": torch.ones(3)}
    b = {"w": torch.zeros(3, 2), "b": torch.ones(3)}
    result = compared(a, b)
    shaped = result.rows[0]
    assert (shaped.shape_a, shaped.shape_b, shaped.numel) == ((2, 3), (3, 2), 6)
    assert all(getattr(shaped, field) is None for field in ("equal", "max_abs", "mismatches"))
    assert not result.equal
    assert result.rows[1].equal


def test_names_on_one_side_only_in_each_sides_order() -> None:
    a = {"z": torch.ones(1), "shared": torch.ones(2), "y": torch.ones(1), "x": torch.ones(1)}
    b = {"q": torch.ones(1), "shared": torch.ones(2), "p": torch.ones(1)}
    result = tw.diff(a, b)
    assert (result.only_a, result.only_b) == (["z", "y", "x"], ["q", "p"])
    assert [row.name for row in result.rows] == ["shared"] and result.rows[0].equal
    assert not result.equal
    assert tw.diff({"shared": torch.ones(2)}, b).only_a == []


def test_rows_follow_as_order() -> None:
    a = {name: torch.ones(1) for name in ["c", "a", "b"]}
    b = {name: torch.ones(1) for name in ["a", "b", "c"]}
    assert [row.name for row in tw.diff(a, b).rows] == ["c", "a", "b"]


def test_empty_tensors_and_empty_sources() -> None:
    result = compared({"e": torch.empty(0, 3)}, {"e": torch.empty(0, 3, dtype=torch.float16)})
    [row] = result.rows
    assert (row.numel, row.mismatches, row.max_abs, row.equal) == (0, 0, None, False)
    assert result.equal
    nothing = tw.diff({}, {})
    assert nothing.equal and nothing.rows == [] and nothing.by_module(0) == []


# -- what cannot be read --------------------------------------------------------------------------


def test_meta_and_complex_tensors_are_not_compared() -> None:
    a = {"meta": torch.empty(2, 3, device="meta"), "complex": torch.ones(3, dtype=torch.complex64)}
    b = {"meta": torch.zeros(2, 3), "complex": torch.ones(3, dtype=torch.complex64)}
    result = tw.diff(a, b)
    assert [(row.name, row.numel) for row in result.rows] == [("meta", 6), ("complex", 3)]
    for row in result.rows:
        assert row.shape_a == row.shape_b
        assert all(getattr(row, field) is None for field in ("equal", "cosine", "mismatches"))
    assert not result.equal  # nothing was verified
    assert "2 not compared" in str(result)


def test_a_dtype_torch_lacks_is_not_compared(tmp_path: Path) -> None:
    path = tmp_path / "fp4.safetensors"
    header = {"w": {"dtype": "F4", "shape": [4, 8], "data_offsets": [0, 16]}}
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(16))
    [row] = tw.diff(path, path).rows  # the same file: still nothing torch can read
    assert (row.dtype_a, row.numel, row.mismatches) == ("F4", 32, None)


# -- roll-ups ------------------------------------------------------------------------------------


def test_by_module_rolls_up_as_if_concatenated() -> None:
    a = {
        "layers.0.w": values(torch.float32, 300, seed=1).reshape(30, 10),
        "layers.0.b": values(torch.bfloat16, 10, seed=2),
        "layers.1.w": values(torch.float32, 300, seed=3).reshape(30, 10),
        "layers.1.odd": torch.zeros(4),
        "head.w": values(torch.float16, 50, seed=4),
        "head.meta": torch.empty(5, device="meta"),
        "scale": torch.ones(1),
    }
    b = {name: tensor.clone() for name, tensor in a.items()}
    b["layers.0.w"] = b["layers.0.w"] + 0.25
    b["layers.1.odd"] = torch.zeros(5)  # another shape: left out of the roll-up
    b["head.w"] = b["head.w"].float()
    b["head.meta"] = torch.zeros(5)
    result = tw.diff(a, b, atol=0.1)
    rows_by_module = {
        1: {"layers": ["layers.0.w", "layers.0.b", "layers.1.w"], "head": ["head.w"]},
        2: {"layers.0": ["layers.0.w", "layers.0.b"], "layers.1": ["layers.1.w"]},
        0: {"": ["layers.0.w", "layers.0.b", "layers.1.w", "head.w", "scale"]},
    }
    for depth, modules in rows_by_module.items():
        rolled = result.by_module(depth)
        assert [row.name for row in rolled] == list(modules)
        for row, names in zip(rolled, modules.values(), strict=True):
            want = expected_roll_up(row, [a[name] for name in names], [b[name] for name in names])
            assert_matches(row, want)
    # The dtypes are those of all the rows below the path.
    by_path = {row.name: row for row in result.by_module(1)}
    assert (by_path["layers"].dtype_a, by_path["layers"].dtype_b) == ("mixed", "mixed")
    assert (by_path["head"].dtype_a, by_path["head"].dtype_b) == ("mixed", "torch.float32")


def expected_roll_up(
    row: tw.TensorDiff,
    a: list[torch.Tensor],
    b: list[torch.Tensor],
    *,
    rtol: float = 0.0,
    atol: float = 0.1,
) -> tw.TensorDiff:
    """The oracle of a roll-up: the pairs' tensors concatenated (its dtypes taken from ``row``)."""
    fields = expected_values(a, b, rtol=rtol, atol=atol, equal=all(map(same_bytes, a, b)))
    shape = (fields[0],)
    return tw.TensorDiff(row.name, shape, shape, row.dtype_a, row.dtype_b, *fields)


def test_by_module_of_rows_none_was_compared() -> None:
    a = {"block.w": torch.zeros(2, device="meta"), "block.v": torch.zeros(3)}
    b = {"block.w": torch.zeros(2), "block.v": torch.zeros(4)}
    [row] = tw.diff(a, b).by_module(1)
    assert (row.name, row.numel, row.mismatches, row.max_abs) == ("block", 0, None, None)
    with pytest.raises(ValueError, match="depth"):
        tw.diff(a, b).by_module(-1)


# -- sources ------------------------------------------------------------------------------------


class WithBuffers(nn.Module):
    """A persistent buffer, a non-persistent one, a tied parameter and a lazy one."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.norm = nn.BatchNorm1d(4)
        self.register_buffer("cache", torch.arange(3.0), persistent=False)


def with_buffers() -> WithBuffers:
    torch.manual_seed(0)
    return WithBuffers()


def test_a_module_gives_parameters_then_persistent_buffers() -> None:
    model = with_buffers()
    result = tw.diff(model, model)
    assert [row.name for row in result.rows] == [
        "embed.weight",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    ]
    assert result.equal and all(row.equal for row in result.rows)


def test_a_module_against_its_state_dict_and_its_files(tmp_path: Path) -> None:
    model = with_buffers()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    del state["head.weight"]  # the tie: saved once, as safetensors saves it
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "model.pt")
    for source in [state, tmp_path / "model.safetensors", tmp_path, str(tmp_path / "model.pt")]:
        assert tw.diff(model, source).equal, source
        assert tw.diff(source, model).equal, source
    state["norm.running_mean"] += 1
    result = compared(dict(model.state_dict()), state)
    assert [row.name for row in result.rows if row.mismatches] == ["norm.running_mean"]


def test_lazy_parameters_are_left_out() -> None:
    model = nn.Sequential(nn.LazyLinear(3))
    result = tw.diff(model, {"0.weight": torch.zeros(3, 2)})
    assert (result.rows, result.only_a, result.only_b) == ([], [], ["0.weight"])


def test_a_model_against_a_checkpoint_of_another_layout(
    tmp_path: Path, transformers_offline: Any
) -> None:
    config = transformers_offline.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=120,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers_offline.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "saved", max_shard_size="20KB")
    assert len(list((tmp_path / "saved").glob("*.safetensors"))) > 2
    assert tw.diff(model, tmp_path / "saved").equal
    config.save_pretrained(tmp_path / "config")
    built = tw.diff(tmp_path / "config", tmp_path / "saved")  # on meta: shapes only
    assert built.only_a == built.only_b == []
    assert all(row.shape_a == row.shape_b and row.mismatches is None for row in built.rows)
    assert not built.equal


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
def test_a_distributed_checkpoint(tmp_path: Path) -> None:
    from torch.distributed import checkpoint as dcp

    model = with_buffers()
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    del state["head.weight"]
    dcp.save(state, checkpoint_id=str(tmp_path), no_dist=True)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        tw.diff(model, tmp_path)
    assert tw.diff(model, tmp_path, allow_pickle=True).equal
    changed = dict(state, **{"embed.weight": state["embed.weight"] * 2})
    result = tw.diff(tmp_path, changed, allow_pickle=True)
    for row in result.rows:
        assert_matches(row, expected(row.name, state[row.name], changed[row.name]))


def test_bad_sources_and_tolerances_raise() -> None:
    with pytest.raises(TypeError, match="nn.Modules, mappings"):
        tw.diff([torch.ones(1)], {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str names to tensors"):
        tw.diff({"w": 1.0}, {})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="tolerances"):
        tw.diff({}, {}, atol=-1.0)
    with pytest.raises(ValueError, match="tolerances"):
        tw.diff({}, {}, rtol=NAN)


# -- two sharded checkpoints, streamed ----------------------------------------------------------


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    """A model saved in small shards, and a changed copy saved in other shards with an index."""
    folder = tmp_path_factory.mktemp("layouts")
    torch.manual_seed(0)
    original = {
        f"layers.{layer}.{name}": torch.randn(*shape)
        for layer in range(3)
        for name, shape in [("w", (64, 48)), ("b", (64,)), ("big", (300, 40))]
    }
    original["layers.2.b"] = original["layers.2.b"].bfloat16().float()  # values bfloat16 holds
    changed = {name: tensor.clone() for name, tensor in original.items()}
    changed["layers.1.big"][123, 7] += 0.5
    changed["layers.2.b"] = changed["layers.2.b"].bfloat16()
    shards_a = [list(original)[:4], list(original)[4:]]
    shards_b = [list(original)[::3], list(original)[1::3], list(original)[2::3]]
    for side, tensors, shards in [("a", original, shards_a), ("b", changed, shards_b)]:
        (folder / side).mkdir()
        weight_map = {}
        for index, names in enumerate(shards):
            file = f"part-{index}.safetensors"
            safetensors_torch.save_file(
                {name: tensors[name] for name in names}, folder / side / file
            )
            weight_map.update(dict.fromkeys(names, file))
        index_json = {"weight_map": dict(sorted(weight_map.items()))}
        (folder / side / "model.safetensors.index.json").write_text(json.dumps(index_json))
    return folder / "a", folder / "b", original, changed


def mapped_regions(folder: Path) -> int:
    """How many regions of this process's memory map files of ``folder``."""
    with open("/proc/self/maps") as maps:
        return sum(str(folder) in line for line in maps)


@pytest.mark.parametrize("batch_bytes", [pair_batches.BATCH_BYTES, 4096, 1000])
def test_two_shard_layouts_compare_in_bounded_batches(
    two_layouts: tuple[Path, Path, dict, dict],
    batch_bytes: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder_a, folder_b, original, changed = two_layouts
    monkeypatch.setattr(pair_batches, "BATCH_BYTES", batch_bytes)
    calls: list[tuple[int, int]] = []
    pair_stats = _C.pair_stats

    def recording(a: list[torch.Tensor], b: list[torch.Tensor], *args: float) -> _C.PairTable:
        read = [sum(t.numel() * t.element_size() for t in side) for side in (a, b)]
        assert max(read) <= batch_bytes
        # The maps of earlier batches are gone: at most one per piece of this one, per side.
        assert mapped_regions(folder_a.parent) <= 2 * len(a)
        calls.append((len(a), max(read)))
        return pair_stats(a, b, *args)

    monkeypatch.setattr(_C, "pair_stats", recording)
    result = tw.diff(folder_a, folder_b)
    assert mapped_regions(folder_a.parent) == 0
    assert [row.name for row in result.rows] == sorted(original)
    for row in result.rows:
        assert_matches(row, expected(row.name, original[row.name], changed[row.name]))
    assert [row.name for row in result.rows if row.mismatches] == ["layers.1.big"]
    assert not result.equal
    if batch_bytes <= 4096:
        assert sum(count for count, _ in calls) > len(original)  # pieces
    [whole] = tw.diff(folder_a, folder_b, rtol=2**-8).by_module(0)
    names = sorted(original)
    want = expected_roll_up(
        whole, [original[n] for n in names], [changed[n] for n in names], rtol=2**-8, atol=0.0
    )
    assert_matches(whole, want)


def test_in_memory_views_against_a_file_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pair_batches, "BATCH_BYTES", 256)
    base = values(torch.float32, 60 * 70).reshape(60, 70)
    shaped = {"t": base.t(), "sliced": base[::2, 3:], "flat": base}
    safetensors_torch.save_file(
        {n: v.contiguous() for n, v in shaped.items()}, tmp_path / "x.safetensors"
    )
    assert compared(shaped, {n: v.contiguous() for n, v in shaped.items()}).equal
    assert tw.diff(shaped, tmp_path / "x.safetensors").equal
    changed = {name: view * 1.5 for name, view in shaped.items()}
    result = tw.diff(changed, tmp_path / "x.safetensors")
    for row in result.rows:
        assert_matches(row, expected(row.name, changed[row.name], shaped[row.name].contiguous()))


def test_a_file_truncated_after_its_header_was_read(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    safetensors_torch.save_file({"w": torch.ones(1000)}, path)
    opened = open_checkpoint(path)
    assert isinstance(opened, Checkpoint)
    os.truncate(path, path.stat().st_size - 8)
    with pytest.raises(CheckpointError, match="truncated"):
        tw.diff(opened, {"w": torch.ones(1000)})


# -- devices -----------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("batch_bytes", [pair_batches.BATCH_BYTES, 1000])
def test_a_model_on_cuda_against_a_checkpoint(
    tmp_path: Path, batch_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pair_batches, "BATCH_BYTES", batch_bytes)
    model = with_buffers()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    del state["head.weight"]
    state["embed.weight"][3] += 1.0
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    on_cuda = model.cuda()
    for a, b in [(on_cuda, tmp_path / "model.safetensors"), (state, on_cuda)]:
        result = tw.diff(a, b)
        cpu_state = {name: tensor.cpu() for name, tensor in on_cuda.state_dict().items()}
        for row in result.rows:
            x, y = (cpu_state, state) if a is on_cuda else (state, cpu_state)
            assert_matches(row, expected(row.name, x[row.name], y[row.name]))
        assert [row.name for row in result.rows if row.mismatches] == ["embed.weight"]


# -- output -------------------------------------------------------------------------------------


def small_diff() -> tw.Diff:
    a = {
        "layer.w": torch.ones(2, 2),
        "layer.b": torch.zeros(2),
        "w2": torch.ones(3),
        "x": torch.ones(1),
    }
    b = {"layer.w": torch.ones(2, 2), "layer.b": torch.tensor([0.0, NAN]), "w2": torch.ones(4)}
    b["y"] = torch.ones(1)
    return tw.diff(a, b)


def test_to_dict_and_json() -> None:
    result = small_diff()
    as_dict = result.to_dict()
    assert list(as_dict) == ["only_a", "only_b", "rows", "equal"]
    assert (as_dict["only_a"], as_dict["only_b"], as_dict["equal"]) == (["x"], ["y"], False)
    assert [row["name"] for row in as_dict["rows"]] == ["layer.w", "layer.b", "w2"]
    assert as_dict["rows"][0] == {
        "name": "layer.w",
        "shape_a": (2, 2),
        "shape_b": (2, 2),
        "dtype_a": "torch.float32",
        "dtype_b": "torch.float32",
        "numel": 4,
        "equal": True,
        "max_abs": 0.0,
        "mean_abs": 0.0,
        "rel_l2": 0.0,
        "cosine": result.rows[0].cosine,
        "mismatches": 0,
    }
    parsed = json.loads(result.to_json())
    assert parsed["rows"][1]["max_abs"] is not None and math.isnan(parsed["rows"][1]["max_abs"])
    assert parsed["rows"][2]["mismatches"] is None
    with_modules = json.loads(result.to_json(depth=1))
    assert [row["name"] for row in with_modules["by_module"]] == ["layer"]


def test_the_table_puts_differing_rows_first() -> None:
    text = str(small_diff())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["Name", "Status", "Shape"]
    assert [line.split()[0] for line in lines[2:5]] == ["layer.b", "w2", "layer.w"]
    assert "shapes differ" in lines[3] and "(3,) vs (4,)" in lines[3]
    assert lines[-3:] == [
        "only in a: x",
        "only in b: y",
        "not equal (atol=0, rtol=0): 2 of 3 tensors differ, 1 only in a, 1 only in b",
    ]
    assert small_diff().table(depth=1).splitlines()[2].split()[:2] == ["layer", "differs"]
    assert small_diff().table(depth=0).splitlines()[2].split()[:2] == ["(root)", "differs"]


def test_the_html_table() -> None:
    page = small_diff()._repr_html_()
    assert page.startswith("<table><tr><th>Name</th>")
    assert page.count('style="background:#fdd"') == 2
    assert "<p>only in a: x</p>" in page


def test_an_equal_diff_says_so() -> None:
    result = tw.diff({"w": torch.ones(3)}, {"w": torch.ones(3)})
    assert str(result).splitlines()[-1] == "equal within atol=0, rtol=0: 1 tensor compared"
    assert repr(result) == "Diff(rows=1, only_a=0, only_b=0, equal=True)"
