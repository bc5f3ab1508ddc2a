"""The comparison oracle: each field of a ``TensorDiff`` from float64 torch.

``expected`` compares two tensors as API.md §9 defines it, with nothing but
torch: both widened to float64, ``(a - b).abs().max()``, norms by
``torch.linalg.vector_norm``, the dot product, ``torch.isclose`` for the
mismatches, and bitwise equality from the bytes themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchwalk import TensorDiff

VALUE_FIELDS = ("equal", "max_abs", "mean_abs", "rel_l2", "cosine", "mismatches")


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise identical: the same dtype and the same bytes, element by element in order."""

    def raw(x: torch.Tensor) -> torch.Tensor:
        # A fresh copy: contiguous() keeps the strides of views of one or no
        # element, which view() refuses.
        fresh = x.detach().cpu().clone(memory_format=torch.contiguous_format)
        return fresh.reshape(-1).view(torch.uint8)

    return a.dtype == b.dtype and torch.equal(raw(a), raw(b))


def expected(
    name: str, a: torch.Tensor, b: torch.Tensor, *, rtol: float = 0.0, atol: float = 0.0
) -> TensorDiff:
    """The row ``tw.diff`` must give for the tensors ``a`` and ``b`` under ``name``."""
    described = (name, tuple(a.shape), tuple(b.shape), str(a.dtype), str(b.dtype))
    if a.shape != b.shape:
        return TensorDiff(*described, a.numel(), *(None,) * 6)
    return TensorDiff(
        *described, *expected_values([a], [b], rtol=rtol, atol=atol, equal=same_bytes(a, b))
    )


def expected_values(
    a: Sequence[torch.Tensor],
    b: Sequence[torch.Tensor],
    *,
    rtol: float,
    atol: float,
    equal: bool,
) -> tuple[int, bool, float | None, float | None, float | None, float | None, int]:
    """``(numel, equal, max_abs, mean_abs, rel_l2, cosine, mismatches)`` of the tensors of ``a``
    against those of ``b``, each list concatenated (``equal`` is given: it is per tensor)."""
    x = torch.cat([t.detach().cpu().double().reshape(-1) for t in a])
    y = torch.cat([t.detach().cpu().double().reshape(-1) for t in b])
    mismatches = int((~torch.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)).sum())
    if x.numel() == 0:
        return 0, equal, None, None, None, None, mismatches
    difference = (x - y).abs()
    norm_difference = float(torch.linalg.vector_norm(x - y))
    norm_a, norm_b = float(torch.linalg.vector_norm(x)), float(torch.linalg.vector_norm(y))
    if norm_b == 0:
        rel_l2 = (
            norm_difference
            if math.isnan(norm_difference)
            else (0.0 if norm_difference == 0 else math.inf)
        )
    else:
        rel_l2 = norm_difference / norm_b
    cosine = None if norm_a == 0 or norm_b == 0 else float(torch.dot(x, y)) / (norm_a * norm_b)
    return (
        x.numel(),
        equal,
        float(difference.max()),
        float(difference.mean()),
        rel_l2,
        cosine,
        mismatches,
    )


def assert_matches(got: TensorDiff, want: TensorDiff) -> None:
    """Names, shapes, dtypes, counts, ``equal`` and ``max_abs`` exactly; sums and norms to 1e-9
    relative; NaN where the oracle has NaN; None where it has None."""
    for field in ("name", "shape_a", "shape_b", "dtype_a", "dtype_b", "numel", "equal"):
        assert getattr(got, field) == getattr(want, field), (field, got, want)
    assert got.mismatches == want.mismatches, (got, want)
    for field in ("max_abs", "mean_abs", "rel_l2", "cosine"):
        value, reference = getattr(got, field), getattr(want, field)
        if reference is None or value is None:
            assert value is reference is None, (field, got, want)
        elif math.isnan(reference):
            assert math.isnan(value), (field, got, want)
        elif field == "max_abs" or math.isinf(reference):
            assert value == reference, (field, got, want)
        else:
            # Sums agree to 1e-9 of their value; one near zero (a mean of
            # tiny differences, a cosine of orthogonal tensors) to 1e-12 of
            # its scale: the rounding of the terms summed.
            scale = want.max_abs if field == "mean_abs" and math.isfinite(want.max_abs or 0) else 1
            assert math.isclose(value, reference, rel_tol=1e-9, abs_tol=1e-12 * (scale or 1)), (
                field,
                got,
                want,
            )
