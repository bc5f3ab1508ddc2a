"""The comparison kernel (``_C.pair_stats``) on every path this machine has, against float64 torch.

Each CPU build (AVX-512, AVX2, portable), the kernels' choice and ATen's
reductions must give the oracle's fields (helpers/diff_oracle.py) for every
pair of dtypes, views read in place, special values on either side.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers.diff_oracle import assert_matches, expected
from helpers.stats_oracle import ALL_REAL_DTYPES, values, views
from hypothesis import given, settings
from hypothesis import strategies as st
from torchwalk import _C, TensorDiff

PATHS = _C.stats_paths()
SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-40, 3e38]


def compared(
    a: list[torch.Tensor], b: list[torch.Tensor], path: str, rtol: float = 0.0, atol: float = 0.0
) -> list[TensorDiff]:
    table = _C.pair_stats(a, b, rtol, atol, path)
    return [
        TensorDiff(
            f"t{i}", tuple(x.shape), tuple(y.shape), str(x.dtype), str(y.dtype), *table.fields(i)
        )
        for i, (x, y) in enumerate(zip(a, b, strict=True))
    ]


def nearby(x: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` moved a little (most elements), in its own dtype."""
    generator = torch.Generator().manual_seed(seed)
    if x.dtype == torch.bool:
        return x ^ (torch.rand(x.shape, generator=generator) < 0.1)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64) * 0.01
    moved = x.double() + noise * x.double().abs().clamp(min=1)
    return moved.round().to(x.dtype) if not x.dtype.is_floating_point else moved.to(x.dtype)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ALL_REAL_DTYPES, ids=str)
def test_every_view_against_a_moved_copy_and_itself(dtype: torch.dtype, path: str) -> None:
    base = values(dtype, 150_001)
    a = list(views(base).values())
    b = list(views(nearby(base, 1)).values())
    for got, x, y in zip(
        compared(a + a, b + [t.clone() for t in a], path, 1e-3, 1e-5), a + a, b + a, strict=True
    ):
        assert_matches(got, expected(got.name, x, y, rtol=1e-3, atol=1e-5))


@pytest.mark.parametrize("path", PATHS)
def test_mixed_dtypes_and_layouts(path: str) -> None:
    x = values(torch.float32, 64 * 48, seed=3).reshape(64, 48)
    pairs = [
        (x, x.bfloat16()),
        (x.half(), x.double()),
        (x.to(torch.float8_e4m3fn), x),
        (x.to(torch.float8_e5m2), x.bfloat16()),
        (x.round().int(), x),
        (x.t(), x.t().contiguous()),
        (x[::2, 1::3], x.double()[::2, 1::3]),
        (x.t().contiguous().t(), nearby(x, 2)),
        (x.reshape(4, 16, 48).permute(2, 0, 1), nearby(x, 3).reshape(4, 16, 48).permute(2, 0, 1)),
        (x[:1, :1].reshape(()), x[1:2, :1].reshape(())),
        (x[:0], x[:0].double()),
    ]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    for got, (p, q) in zip(compared(a, b, path, 1e-2, 1e-3), pairs, strict=True):
        assert_matches(got, expected(got.name, p, q, rtol=1e-2, atol=1e-3))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(SPECIALS + [1.0, -2.5]), st.sampled_from(SPECIALS + [1.0, -2.5])),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    st.sampled_from(PATHS),
    st.sampled_from([(0.0, 0.0), (1e-5, 1e-8), (0.5, 0.0), (0.0, math.inf)]),
)
def test_special_values_on_either_side(
    pairs: list[tuple[float, float]],
    a_dtype: torch.dtype,
    b_dtype: torch.dtype,
    path: str,
    tolerance: tuple[float, float],
) -> None:
    rtol, atol = tolerance
    a = torch.tensor([p for p, _ in pairs], dtype=torch.float64).to(a_dtype)
    b = torch.tensor([q for _, q in pairs], dtype=torch.float64).to(b_dtype)
    (got,) = compared([a], [b], path, rtol, atol)
    assert_matches(got, expected("t0", a, b, rtol=rtol, atol=atol))


def test_results_do_not_depend_on_the_number_of_threads() -> None:
    a = [values(torch.float32, 3_000_001, seed=4), values(torch.bfloat16, 70_000, seed=5)]
    b = [nearby(t, 6) for t in a]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [_C.pair_stats(a, b, 1e-3).fields(i) for i in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert [_C.pair_stats(a, b, 1e-3).fields(i) for i in range(2)] == one


def test_merged_rows_are_the_concatenation() -> None:
    a = [values(torch.float32, n, seed=n) for n in (10, 70_000, 1)]
    b = [nearby(t, 7) for t in a]
    table = _C.PairTable.concatenated(
        [_C.pair_stats(a[:2], b[:2], 1e-3), _C.pair_stats(a[2:], b[2:], 1e-3)]
    )
    merged = TensorDiff("all", (), (), "", "", *table.merged_fields(range(3)))
    want = expected("all", torch.cat(a), torch.cat(b), rtol=1e-3)
    assert_matches(merged, TensorDiff("all", (), (), "", "", *tuple(vars(want).values())[5:]))


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (torch.ones(3), torch.ones(4), "3 and 4 elements"),
        (torch.ones(6), torch.ones(2, 3), "shapes"),
        (torch.ones(2, dtype=torch.complex64), torch.ones(2, dtype=torch.complex64), "complex"),
        (torch.ones(2, device="meta"), torch.ones(2, device="meta"), "meta"),
        (torch.ones(2).to_sparse(), torch.ones(2).to_sparse(), "not strided"),
    ],
)
def test_pairs_that_cannot_be_compared_raise(
    a: torch.Tensor, b: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _C.pair_stats([a], [b])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="as many"):
        _C.pair_stats([torch.ones(1)], [])
    with pytest.raises(ValueError, match="not a tensor"):
        _C.pair_stats([torch.ones(1)], [[1.0]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="rtol and atol"):
        _C.pair_stats([torch.ones(1)], [torch.ones(1)], -1.0)
