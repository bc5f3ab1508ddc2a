"""Exponent histograms and cast fractions, against torch itself.

``exponents`` against ``torch.frexp`` of the float64 values; the monitor's
``underflow:``/``overflow:`` fractions against ``x.to(dtype)``, with values
placed on and around each format's edges, from every source dtype.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torchwalk as tw
from helpers.monitor_oracle import cast_fractions
from helpers.stats_oracle import (
    ALL_REAL_DTYPES,
    FLOAT_DTYPES,
    every_exponent,
    expected_exponents,
    values,
    views,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchwalk import _C
from torchwalk.cast_edges import cast_edges
from torchwalk.monitor import Monitor

PATHS = _C.stats_paths()
FORMATS = [
    torch.float32,
    torch.bfloat16,
    torch.float16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ALL_REAL_DTYPES, ids=str)
def test_exponents_of_every_view(dtype: torch.dtype, path: str) -> None:
    shaped = list(views(values(dtype, 150_001)).values())
    table = _C.tensor_stats(shaped, path, exponents=True)
    for index, view in enumerate(shaped):
        assert table.figures(index)[-1] == expected_exponents(view), index


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [*FLOAT_DTYPES, torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
def test_exponents_from_subnormals_to_the_largest(dtype: torch.dtype, path: str) -> None:
    x = every_exponent(dtype)
    strided = x.repeat_interleave(3)[::3]  # x again, read with a stride
    table = _C.tensor_stats([x, strided], path, exponents=True)
    assert table.figures(0)[-1] == expected_exponents(x)
    assert table.figures(1)[-1] == expected_exponents(x)


def test_exponents_of_rows_totals_and_roll_ups_merge_the_counts() -> None:
    model = nn.Sequential(nn.Linear(30, 20), nn.Sequential(nn.Linear(20, 5), nn.Linear(5, 1)))
    with torch.no_grad():
        model[1][0].weight[0, :3] = torch.tensor([0.0, 1e-42, math.inf])
    stats = tw.stats(model, exponents=True)
    parameters = dict(model.named_parameters())
    for row in stats.rows:
        assert row.exponents == expected_exponents(parameters[row.name])
    everything = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert stats.total.exponents == expected_exponents(everything)
    for rolled in stats.by_module(1):
        below = [
            p.flatten() for name, p in parameters.items() if name.startswith(rolled.name + ".")
        ]
        assert rolled.exponents == expected_exponents(torch.cat(below).detach())
    in_json = json.loads(stats.to_json())["total"]["exponents"]
    assert in_json == [list(pair) for pair in stats.total.exponents]
    assert "xponent" not in str(stats)  # the text table keeps its columns


def test_exponents_are_none_unless_asked_and_without_values() -> None:
    assert tw.stats(nn.Linear(3, 3)).total.exponents is None
    table = _C.tensor_stats(
        [torch.ones(2, dtype=torch.complex64), torch.ones(2, device="meta"), torch.ones(0)],
        exponents=True,
    )
    assert [table.figures(row)[-1] for row in range(3)] == [None, None, []]


def test_exponents_of_a_checkpoint_read_in_small_windows(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file
    from torchwalk import checkpoint_stats

    tensors = {"a": every_exponent(torch.float32), "b": values(torch.bfloat16, 5000)}
    save_file(tensors, str(tmp_path / "model.safetensors"))  # type: ignore[operator]
    monkeypatch.setattr(checkpoint_stats, "CHUNK_BYTES", 1000)
    stats = tw.stats(str(tmp_path / "model.safetensors"), exponents=True)  # type: ignore[operator]
    for row in stats.rows:
        assert row.exponents == expected_exponents(tensors[row.name])


@pytest.mark.parametrize("edges", [[0.0], [-1.0], [math.nan], [1.0] * 33])
def test_bad_edges_are_refused(edges: list[float]) -> None:
    with pytest.raises(ValueError, match="edges"):
        _C.tensor_stats([torch.ones(3)], edges=edges)


# --- The casts' fractions. -----------------------------------------------------


def neighbours(points: list[float], dtype: torch.dtype) -> torch.Tensor:
    """Each point and the values of ``dtype`` up to three steps either side of it, both signs."""
    found = []
    for point in points:
        value = torch.tensor(point, dtype=dtype)
        below = above = value
        found.append(value)
        for _ in range(3):
            below = torch.nextafter(below, torch.tensor(-math.inf, dtype=dtype))
            above = torch.nextafter(above, torch.tensor(math.inf, dtype=dtype))
            found += [below, above]
    column = torch.stack(found)
    return torch.cat([column, -column])


def probes(format: torch.dtype, source: torch.dtype) -> torch.Tensor:
    """Values of ``source`` on and around ``format``'s edges: half its smallest subnormal
    (where casts start giving zero), its largest value and the midpoint above it (where
    they stop giving finite values), met from float64 and float32 neighbours, so that
    the float64 values that round to float32 first are there too."""
    info = torch.finfo(format)
    smallest = info.tiny * info.eps  # the smallest subnormal
    unit = 2.0 ** math.floor(math.log2(info.max)) * info.eps
    points = [smallest / 2, smallest, info.max, info.max + unit / 2, info.max + unit]
    near = [neighbours(points, torch.float32).to(torch.float64)]
    if source == torch.float64:
        near.append(neighbours(points, torch.float64))
    generator = torch.Generator().manual_seed(2)
    spread = torch.randn(4000, generator=generator, dtype=torch.float64) * 2.0 ** torch.randint(
        -160, 130, (4000,), generator=generator
    )
    specials = torch.tensor([0.0, -0.0, math.nan, math.inf, -math.inf], dtype=torch.float64)
    return torch.cat([*near, spread, specials]).to(source)


class _Holder(nn.Module):
    def __init__(self, parts: list[torch.Tensor]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(nn.Module() for _ in parts)
        for module, part in zip(self.parts, parts, strict=True):
            module.weight = nn.Parameter(torch.zeros_like(part))
            module.weight.grad = part


@pytest.mark.parametrize("source", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("format", FORMATS, ids=str)
def test_fractions_are_the_casts_own_at_the_edges(format: torch.dtype, source: torch.dtype) -> None:
    x = probes(format, source)
    parts = [x[: x.numel() // 3], x[x.numel() // 3 :]]
    name = str(format).removeprefix("torch.")
    figures = Monitor(_Holder(parts), depth=2, formats=[name]).step()
    assert figures is not None
    for path, values_of_path in [("parts.0", parts[0]), ("parts.1", parts[1]), ("total", x)]:
        underflow, overflow = cast_fractions(values_of_path, format)
        assert figures[f"grad/{path}/underflow:{name}"] == underflow, path
        assert figures[f"grad/{path}/overflow:{name}"] == overflow, path


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=40),
    st.sampled_from(FORMATS),
    st.sampled_from(PATHS),
)
def test_edge_counts_on_any_values(numbers: list[float], format: torch.dtype, path: str) -> None:
    x = torch.tensor(numbers, dtype=torch.float32)
    edges = cast_edges(str(format).removeprefix("torch."))
    table = _C.tensor_stats([x], path, edges=[edges.underflow, edges.overflow])
    reached_underflow, reached_overflow = table.reached(0)
    underflow, overflow = cast_fractions(x, format)
    finite_nonzero = int((x.isfinite() & (x != 0)).sum())
    assert (finite_nonzero - reached_underflow) / x.numel() == underflow
    assert reached_overflow / x.numel() == overflow


@pytest.mark.parametrize(
    "formats", [["float64"], ["int8"], ["float8_e8m0fnu"], ["no_such_dtype"], "bfloat16", [3]]
)
def test_formats_that_cannot_be_watched_are_refused(formats: object) -> None:
    with pytest.raises(ValueError):
        Monitor(nn.Linear(2, 2), formats=formats)  # type: ignore[arg-type]


def test_formats_by_dtype_or_name_give_the_same_keys() -> None:
    model = nn.Linear(4, 4)
    model(torch.randn(2, 4)).sum().backward()
    by_name = Monitor(model, formats=["bfloat16"]).step()
    assert by_name == Monitor(model, formats=[torch.bfloat16]).step()
    assert by_name is not None and "grad/total/underflow:bfloat16" in by_name
