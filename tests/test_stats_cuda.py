"""The CUDA statistics kernel against the float64 torch reductions (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from helpers.stats_oracle import (
    ALL_REAL_DTYPES,
    SPECIALS,
    assert_matches,
    every_exponent,
    expected,
    expected_exponents,
    stats_of,
    values,
    views,
)
from torchwalk import _C

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("path", ["kernels", "aten"])
@pytest.mark.parametrize("dtype", ALL_REAL_DTYPES, ids=str)
def test_every_field_every_view_on_cuda(dtype: torch.dtype, path: str) -> None:
    shaped = {name: view.cuda() for name, view in views(values(dtype, 150_001)).items()}
    shaped["transposed-on-device"] = shaped["matrix"].t()
    shaped["sliced-on-device"] = shaped["chunks"][5::7]
    got = stats_of(list(shaped.values()), path)
    for index, view in enumerate(shaped.values()):
        assert_matches(got[index], expected(f"t{index}", view))


@pytest.mark.parametrize("special", list(SPECIALS))
def test_special_values_on_cuda(special: str) -> None:
    inserted = torch.tensor(SPECIALS[special], dtype=torch.float64)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = values(torch.float64, 100_000)
        x[70_000 : 70_000 + len(inserted)] = inserted
        x = x.to(dtype).cuda()
        assert_matches(stats_of([x])[0], expected("t0", x))


def test_cpu_and_cuda_in_one_call_match_cpu_alone() -> None:
    tensors = [values(torch.float32, 1000 + i, seed=i) for i in range(300)]
    mixed = [t.cuda() if i % 2 else t for i, t in enumerate(tensors)]
    for got, tensor in zip(stats_of(mixed), tensors, strict=True):
        assert_matches(got, expected(got.name, tensor))


def test_cuda_results_repeat_exactly() -> None:
    tensors = [torch.randn(3_000_001, device="cuda"), torch.randn(999, 77, device="cuda").t()]
    first = stats_of(tensors)
    assert stats_of(tensors) == first  # atomics may not reorder the sums between calls
    for got, tensor in zip(first, tensors, strict=True):
        assert_matches(got, expected(got.name, tensor))


@pytest.mark.parametrize("path", ["kernels", "aten"])
@pytest.mark.parametrize("dtype", ALL_REAL_DTYPES, ids=str)
def test_exponents_and_edge_counts_on_cuda(dtype: torch.dtype, path: str) -> None:
    shaped = list(views(values(dtype, 150_001)).values())
    if dtype.is_floating_point:
        shaped.append(every_exponent(dtype))
    edges = [2.0**-10, 2.0**-9 * 1.5, 1.0, 448.0, 65520.0, float("inf")]
    on_cuda = _C.tensor_stats([t.cuda() for t in shaped], path, exponents=True, edges=edges)
    on_cpu = _C.tensor_stats(shaped, exponents=True, edges=edges)
    for row, tensor in enumerate(shaped):
        assert on_cuda.figures(row)[-1] == expected_exponents(tensor), row
        assert on_cuda.reached(row) == on_cpu.reached(row), row
