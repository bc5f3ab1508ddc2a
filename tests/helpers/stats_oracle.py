"""The statistics oracle: each figure from torch's own float64 reduction.

Also the tensors the statistics tests read: random values of every dtype,
the views the kernels must read in place, and special values.
"""

from __future__ import annotations

import math
import warnings

import torch
from torchwalk import _C
from torchwalk.value_stats import TensorStats

FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
FLOAT8_DTYPES = [
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
]
INT_DTYPES = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.uint16]
ALL_REAL_DTYPES = [*FLOAT_DTYPES, *FLOAT8_DTYPES, *INT_DTYPES, torch.bool]


def expected(name: str, x: torch.Tensor) -> TensorStats:
    """The oracle: each figure from torch's own float64 reduction of ``x``."""
    if x.is_meta or x.numel() == 0:
        return TensorStats(name, x.numel(), *(None,) * 9)
    wide = x.detach().to(torch.complex128 if x.is_complex() else torch.float64)
    counts = [int((wide == 0).sum()), int(wide.isnan().sum()), int(wide.isinf().sum())]
    l2 = float(torch.linalg.vector_norm(wide))
    if x.is_complex():
        return TensorStats(name, x.numel(), None, None, None, None, None, l2, *counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # std of one element warns, and is NaN
        std = float(wide.std())
    return TensorStats(
        name,
        x.numel(),
        float(wide.mean()),
        std,
        float(wide.min()),
        float(wide.max()),
        float(wide.abs().max()),
        l2,
        *counts,
    )


def expected_exponents(x: torch.Tensor) -> list[tuple[int, int]]:
    """(e, count) of the finite non-zero values with 2**e <= |x| < 2**(e+1), by torch.frexp."""
    wide = x.detach().to(torch.float64).flatten()
    kept = wide[wide.isfinite() & (wide != 0)]
    exponents = torch.frexp(kept).exponent.long() - 1  # frexp's mantissa is in [0.5, 1)
    found, counts = torch.unique(exponents, return_counts=True)
    return list(zip(found.tolist(), counts.tolist(), strict=True))


def every_exponent(dtype: torch.dtype) -> torch.Tensor:
    """Values of every binary exponent float64 has (signs and fractions mixed), as ``dtype``:
    subnormals of ``dtype`` included, and, past its range, zeros and infinities."""
    generator = torch.Generator().manual_seed(1)
    powers = 2.0 ** torch.arange(-1074, 1024, dtype=torch.float64)
    fractions = 1 + torch.rand(powers.numel(), generator=generator, dtype=torch.float64)
    signs = torch.where(torch.rand(powers.numel(), generator=generator) < 0.5, -1.0, 1.0)
    mixed = (powers * torch.where(powers < 2.0**1023, fractions, 1.0) * signs).to(dtype)
    specials = torch.tensor([0.0, -0.0, math.nan, math.inf, -math.inf], dtype=dtype)
    return torch.cat([mixed, specials])


def assert_matches(got: TensorStats, want: TensorStats) -> None:
    """Counts, min and max exactly; sums and norms to 1e-6 relative; NaN where torch has NaN."""
    assert (got.name, got.numel, got.zeros, got.nans, got.infs) == (
        want.name,
        want.numel,
        want.zeros,
        want.nans,
        want.infs,
    )
    scale = want.absmax if want.absmax is not None and math.isfinite(want.absmax) else 1.0
    for field in ("min", "max", "absmax", "mean", "std", "l2"):
        value, reference = getattr(got, field), getattr(want, field)
        if reference is None or value is None:
            assert value is reference is None, field
        elif math.isnan(reference):
            assert math.isnan(value), (field, value)
        elif field in ("min", "max", "absmax"):
            assert value == reference, field
        else:
            # Sums agree to 1e-6 of their value; a mean or std near zero, to
            # 1e-12 of the largest element (the rounding of the sums' terms).
            assert math.isclose(value, reference, rel_tol=1e-6, abs_tol=1e-12 * scale), (
                field,
                value,
                reference,
            )


def stats_of(tensors: list[torch.Tensor], path: str = "kernels") -> list[TensorStats]:
    table = _C.tensor_stats(tensors, path)
    return [TensorStats(f"t{i}", *table.figures(i)) for i in range(len(table))]


def values(dtype: torch.dtype, numel: int, seed: int = 0) -> torch.Tensor:
    """``numel`` random values of ``dtype``, in a range the dtype holds."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(numel, generator=generator) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(numel, generator=generator) * 3 + 1).to(dtype)
    low = 0 if dtype in (torch.uint8, torch.uint16) else -100
    return torch.randint(low, 100, (numel,), generator=generator).to(dtype)


def views(base: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of every shape the kernels must read in place."""
    flat = base.flatten()
    return {
        "0-dim": flat[0].clone().reshape(()),
        "one": flat[:1],
        "odd": flat[:997],
        "chunks": flat,  # 150,001 elements: three chunks of the CPU plan
        "matrix": flat[: 37 * 41].reshape(37, 41),
        "transposed": flat[: 37 * 41].reshape(37, 41).t(),
        "sliced": flat[: 60 * 50].reshape(60, 50)[3:50:2, 1::3],
        "permuted": flat[: 4 * 5 * 6].reshape(4, 5, 6).permute(2, 0, 1),
        "expanded": flat[:7].reshape(7, 1).expand(7, 9),
        "empty": flat[:0],
        "empty-2d": flat[: 3 * 0].reshape(3, 0),
    }


SPECIALS = {
    "nan": [float("nan")],
    "inf": [float("inf")],
    "-inf": [float("-inf")],
    "both-infs": [float("inf"), float("-inf")],
    "negative-zero": [-0.0, 0.0],
    "denormal": [1e-40, -1e-41],
    "huge": [3e38, -3e38],
    "all-zero": [0.0] * 5,
    "constant": [2.5] * 9,
}
