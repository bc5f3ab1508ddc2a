"""Bulk value statistics against the float64 torch reductions of the same tensors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torchwalk as tw
from helpers.stats_oracle import (
    ALL_REAL_DTYPES,
    FLOAT_DTYPES,
    SPECIALS,
    assert_matches,
    expected,
    stats_of,
    values,
    views,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchwalk import _C
from torchwalk.value_stats import Stats, TensorStats, compute_stats

PATHS = _C.stats_paths()
"""The kernels, each build of the CPU kernel this machine runs, and ATen reductions."""


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ALL_REAL_DTYPES, ids=str)
def test_every_field_every_view(dtype: torch.dtype, path: str) -> None:
    shaped = views(values(dtype, 150_001))
    got = stats_of(list(shaped.values()), path)
    for index, (shape, view) in enumerate(shaped.items()):
        assert not view.is_contiguous() or shape not in ("transposed", "sliced", "permuted")
        assert_matches(got[index], expected(f"t{index}", view))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("special", list(SPECIALS))
def test_special_values(dtype: torch.dtype, special: str, path: str) -> None:
    inserted = torch.tensor(SPECIALS[special], dtype=torch.float64)
    for where in (0, 5, 70_000):  # first (the shift), inside, in a later chunk
        x = values(torch.float64, 100_000)
        x[where : where + len(inserted)] = inserted
        x = x.to(dtype)
        assert_matches(stats_of([x, x[where : where + len(inserted)]], path)[0], expected("t0", x))
        alone = x[where : where + len(inserted)]
        assert_matches(stats_of([alone], path)[0], expected("t0", alone))


SPECIAL_PLACES = {
    "first row": [(0, 0)],
    "later rows": [(10, 3), (20, 49), (40, 7)],  # the sums stay NaN after the first
    "row tails": [(row, 49) for row in range(0, 60, 7)],  # past the last group of 8 or 16
    "every element": [(row, column) for row in range(60) for column in range(50)],
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("places", list(SPECIAL_PLACES))
def test_nans_and_infinities_in_views_are_each_counted_once(
    dtype: torch.dtype, places: str, path: str
) -> None:
    """The kernel counts them in a second look at the rows whose sums turned
    NaN or infinite, never in the first: every row of a view where they
    appear must be counted once, whatever came before it."""
    specials = [float("nan"), float("inf"), float("-inf")]
    for kinds in ([specials[0]], [specials[1]], specials):
        x = values(torch.float64, 60 * 50).reshape(60, 50)
        for index, (row, column) in enumerate(SPECIAL_PLACES[places]):
            x[row, column] = kinds[index % len(kinds)]
        x = x.to(dtype)
        shaped = [x, x.t(), x[3:50:2, 1::3], x[:, :45]]
        for index, (got, view) in enumerate(zip(stats_of(shaped, path), shaped, strict=True)):
            assert_matches(got, expected(f"t{index}", view))


def test_float64_extremes() -> None:
    x = torch.tensor([1e300, -1e300, 5e-324, 1e-310], dtype=torch.float64)
    assert_matches(stats_of([x])[0], expected("t0", x))


@pytest.mark.parametrize("path", PATHS)
def test_complex_gives_counts_and_l2(path: str) -> None:
    x = torch.randn(1001, dtype=torch.complex64)
    x[3] = 0
    x[5] = complex(float("nan"), 1)
    x[7] = complex(1, float("inf"))
    y = torch.randn(20, 20, dtype=torch.complex128).t()
    for got, tensor in zip(stats_of([x, y], path), [x, y], strict=True):
        assert_matches(got, expected(got.name, tensor))
        assert got.mean is got.std is got.min is got.max is got.absmax is None


def test_meta_and_empty() -> None:
    meta = torch.empty(3, 4, device="meta")
    empty = torch.empty(0, 5)
    got = stats_of([meta, empty])
    assert got[0] == TensorStats("t0", 12, *(None,) * 9)
    assert got[1] == TensorStats("t1", 0, *(None,) * 9)


def test_long_tail_of_small_tensors_match_one_by_one() -> None:
    tensors = [values(torch.float32, 1 + (i * 37) % 200, seed=i) for i in range(2000)]
    together = stats_of(tensors)
    for got, tensor in zip(together, tensors, strict=True):
        assert_matches(got, expected(got.name, tensor))


def _state(table: _C.StatsTable) -> str:
    """Everything a table holds, bit for bit (repr: NaN equals NaN)."""
    rows = range(len(table))
    return repr((table.partials(rows), [table.figures(row) for row in rows]))


def test_kernels_take_the_fastest_cpu_build_this_machine_runs() -> None:
    builds = [path for path in PATHS if path.endswith("_cpu")]
    assert builds[-1] == "portable_cpu"  # runs anywhere
    tensors = [values(dtype, 10_007, seed=3) for dtype in ALL_REAL_DTYPES]
    assert _state(_C.tensor_stats(tensors)) == _state(_C.tensor_stats(tensors, builds[0]))


def test_unknown_stats_path_is_refused() -> None:
    with pytest.raises(ValueError, match="'portable_cpu'.*got 'sse9'"):
        _C.tensor_stats([torch.ones(3)], "sse9")


def test_unreadable_tensors_raise() -> None:
    with pytest.raises(ValueError, match="layout"):
        _C.tensor_stats([torch.eye(3).to_sparse()])
    with pytest.raises(ValueError, match="not a tensor"):
        _C.tensor_stats([1.0])  # type: ignore[list-item]


# -- totals, the public surface -----------------------------------------------------------------


def _concatenated(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def test_total_is_the_concatenation_and_l2_is_get_total_norm() -> None:
    tensors = [values(dtype, 5000 + i) for i, dtype in enumerate(FLOAT_DTYPES)]
    tensors.append(torch.randn(30, 40).t())
    stats = compute_stats([(f"t{i}", t) for i, t in enumerate(tensors)])
    assert_matches(stats.total, expected("total", _concatenated(tensors)))
    total_norm = float(torch.nn.utils.get_total_norm([t.double() for t in tensors]))
    assert math.isclose(stats.total.l2 or 0, total_norm, rel_tol=1e-12)
    # In float32, as get_total_norm computes it for float32 tensors.
    single = [t.float() for t in tensors]
    single_total = compute_stats([(f"t{i}", t) for i, t in enumerate(single)]).total.l2
    assert math.isclose(
        single_total or 0, float(torch.nn.utils.get_total_norm(single)), rel_tol=1e-6
    )


def test_total_with_meta_or_complex_rows() -> None:
    real = torch.ones(4)
    assert compute_stats([("a", real), ("b", torch.empty(2, device="meta"))]).total == TensorStats(
        "total", 6, *(None,) * 9
    )
    mixed = compute_stats([("a", real), ("b", torch.ones(2, dtype=torch.complex64))]).total
    assert (mixed.numel, mixed.mean, mixed.l2, mixed.zeros) == (6, None, math.sqrt(6), 0)


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    )
    model[2][1].weight = model[2][0].weight  # tied: one row, under its first name
    return model


def test_rows_follow_named_parameters_then_buffers() -> None:
    model = _model()
    stats = tw.walk(model).stats(buffers=True)
    names = [name for name, _ in model.named_parameters()]
    names += [name for name, _ in model.named_buffers()]
    assert [row.name for row in stats.rows] == names
    for row, tensor in zip(stats.rows, [*model.parameters(), *model.buffers()], strict=True):
        assert_matches(row, expected(row.name, tensor.detach()))
    assert [row.name for row in tw.stats(model).rows] == [n for n, _ in model.named_parameters()]


def test_grads_describe_each_parameters_grad() -> None:
    model = _model()
    model[0].bias.requires_grad_(False)
    model(torch.randn(5, 4)).sum().backward()
    stats = tw.stats(model, grads=True)
    with_grad = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    assert [row.name for row in stats.rows] == [name for name, _ in with_grad]
    assert "0.bias" not in [row.name for row in stats.rows]
    for row, (_, grad) in zip(stats.rows, with_grad, strict=True):
        assert_matches(row, expected(row.name, grad))


def test_meta_model_gives_numel_only() -> None:
    with torch.device("meta"):
        model = nn.Linear(1000, 1000)
    stats = tw.stats(model)
    assert [row.numel for row in stats.rows] == [1_000_000, 1000]
    assert stats.total == TensorStats("total", 1_001_000, *(None,) * 9)


def test_by_module_rolls_up_rows() -> None:
    model = _model()
    stats = tw.walk(model).stats(buffers=True)
    depth_one = stats.by_module(1)
    assert [row.name for row in depth_one] == ["0", "1", "2"]
    below_two = [t for n, t in [*model.named_parameters(), *model.named_buffers()] if n[0] == "2"]
    assert_matches(depth_one[2], expected("2", _concatenated(below_two)))
    assert [row.name for row in stats.by_module(2)] == ["2.0", "2.1"]  # 2.1 keeps its bias
    (root,) = stats.by_module(0)
    assert root.numel == stats.total.numel and root.name == ""
    with pytest.raises(ValueError):
        stats.by_module(-1)


def test_anomalies_text_and_html_flag_them() -> None:
    tensors = {
        "fine": torch.randn(10),
        "nan": torch.tensor([1.0, float("nan")]),
        "inf": torch.tensor([float("-inf")]),
        "dead": torch.zeros(3),
    }
    stats = compute_stats(list(tensors.items()))
    assert [(row.name, row.anomaly) for row in stats.anomalies()] == [
        ("nan", "NaN"),
        ("inf", "Inf"),
        ("dead", "all zero"),
    ]
    text = str(stats)
    assert "3 of 4 tensors flagged" in text
    assert text.splitlines()[0].split()[:3] == ["Name", "Numel", "Mean"]
    assert "all zero" in next(line for line in text.splitlines() if line.startswith("dead"))
    assert "background" in stats._repr_html_() and "<th>NaNs</th>" in stats._repr_html_()
    assert "no anomalies" in str(compute_stats([("fine", torch.ones(2))]))


def test_flagged_rows_are_the_rows_whose_anomaly_is_set() -> None:
    """The table flags rows in C++; each row's own ``anomaly`` is the oracle."""
    tensors = [
        torch.zeros(3, dtype=torch.complex64),
        torch.zeros(2, dtype=torch.bool),
        torch.ones(2, dtype=torch.bool),
        torch.zeros(4, dtype=torch.int8),
        torch.empty(0),
        torch.empty(3, device="meta"),
        torch.tensor([0.0, -0.0]),
        torch.tensor([1.0, float("inf"), float("nan")], dtype=torch.bfloat16),
        torch.randn(5),
        torch.zeros(2, 3).t(),
    ]
    stats = compute_stats([(f"t{i}", t) for i, t in enumerate(tensors)])
    flagged = [row for row in stats.rows if row.anomaly is not None]
    assert stats.anomalies() == flagged and 0 < len(flagged) < len(tensors)


def test_rows_are_read_by_position_within_the_table() -> None:
    table = _C.tensor_stats([torch.ones(2), torch.zeros(1)])
    assert table.figures(1)[0] == 1
    for outside in (2, -1, 10**30):
        with pytest.raises(IndexError):
            table.figures(outside)


def test_to_dict_and_json() -> None:
    stats = compute_stats([("a", torch.arange(4.0)), ("b", torch.empty(0))])
    as_dict = stats.to_dict()
    assert list(as_dict) == ["tensors", "total"]
    assert as_dict["tensors"][0] == {
        "name": "a",
        "numel": 4,
        "mean": 1.5,
        "std": pytest.approx(1.2909944487358056),
        "min": 0.0,
        "max": 3.0,
        "absmax": 3.0,
        "l2": pytest.approx(math.sqrt(14)),
        "zeros": 1,
        "nans": 0,
        "infs": 0,
    }
    assert as_dict["tensors"][1]["mean"] is None
    assert json.loads(stats.to_json())["total"]["numel"] == 4


def test_progress_batches_give_the_same_rows() -> None:
    tensors = [(f"t{i}", values(torch.float32, 1000, seed=i)) for i in range(50)]
    read: list[int] = []
    batched = compute_stats(tensors, progress=read.append)
    assert sum(read) == 50 * 1000 * 4
    for got, (name, tensor) in zip(batched.rows, tensors, strict=True):
        assert_matches(got, expected(name, tensor))
    assert isinstance(batched, Stats) and len(batched) == 50


_THREADS_SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from torchwalk import _C
g = torch.Generator().manual_seed(1)
tensors = [torch.randn(n, generator=g) * 10 + 3 for n in (300_001, 70_000, 5, 1_000_000)]
tensors.append(torch.randn(700, 900, generator=g).t())
table = _C.tensor_stats(tensors)
rows = range(len(table))
print(torch.get_num_threads(), repr((table.partials(rows), [table.figures(row) for row in rows])))
"""


def test_same_result_with_one_and_two_threads() -> None:
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _THREADS_SCRIPT, str(threads)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(" ", 1)
        for threads in (1, 2)
    ]
    assert [threads for threads, _ in outputs] == ["1", "2"]
    assert outputs[0][1] == outputs[1][1]


# -- property: random lists of tensors ----------------------------------------------------------

_special_floats = st.sampled_from([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-40])


@st.composite
def tensor_lists(draw: st.DrawFn) -> list[torch.Tensor]:
    tensors = []
    for _ in range(draw(st.integers(1, 6))):
        dtype = draw(st.sampled_from([*FLOAT_DTYPES, torch.int32, torch.bool]))
        numel = draw(st.integers(0, 300))
        x = values(dtype, numel, seed=draw(st.integers(0, 2**16)))
        if dtype.is_floating_point and numel and draw(st.booleans()):
            x[draw(st.integers(0, numel - 1))] = draw(_special_floats)
        if numel >= 6 and draw(st.booleans()):
            x = x[: numel - numel % 6].reshape(-1, 6).t()[:, :: draw(st.integers(1, 3))]
        tensors.append(x)
    return tensors


@given(tensor_lists())
def test_random_tensor_lists(tensors: list[torch.Tensor]) -> None:
    got = stats_of(tensors)
    for row, tensor in zip(got, tensors, strict=True):
        assert_matches(row, expected(row.name, tensor))
