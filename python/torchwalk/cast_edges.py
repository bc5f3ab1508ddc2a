"""Where a cast to a narrower floating-point format stops keeping a value.

A finite non-zero value becomes zero when cast to a format if its magnitude
is below the format's *underflow edge*, and leaves the format's range (the
cast gives ±Inf or NaN, or clamps it to the largest finite value) if its
magnitude is at or above the *overflow edge*. Both edges are float32 values,
found by asking torch's own cast (a binary search over float32 bit
patterns), so that they round exactly as the cast does, ties included; torch
casts float64 values to narrower formats through float32, and the kernels
compare each value rounded to float32 with them (``_C.tensor_stats(edges=)``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

_LARGEST_FLOAT32_BITS = 0x7F7FFFFF


class CastEdges(NamedTuple):
    """The edges of one format (see the module's docstring)."""

    name: str  # the dtype's name, e.g. "bfloat16"
    underflow: float  # non-zero |x| below this become 0
    overflow: float  # |x| at or above this leave the finite range


def format_name(format: str | torch.dtype) -> str:
    """The name of a format given by name (``"bfloat16"``) or dtype (``torch.bfloat16``)."""
    if isinstance(format, torch.dtype):
        return str(format).removeprefix("torch.")
    if isinstance(format, str):
        return format
    raise ValueError(f"a format is a dtype or its name, got {format!r}")


@functools.cache
def cast_edges(name: str) -> CastEdges:
    """The :class:`CastEdges` of the floating-point dtype called ``name``.

    Raises:
        ValueError: if ``name`` is not a floating-point dtype narrower than
            float64 that torch casts float32 to, with a zero and a sign.
    """
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.itemsize >= 8:
        raise ValueError(
            f"formats are names of floating-point dtypes narrower than float64 "
            f"(such as 'bfloat16', 'float16', 'float8_e4m3fn'), got {name!r}"
        )
    try:
        signed = _cast(torch.tensor([0.0, 1.0, -1.0]), dtype).tolist()
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"torch cannot cast float32 to {name}: {error}") from None
    if signed != [0.0, 1.0, -1.0]:
        raise ValueError(f"{name} has no zero or no sign: it has no underflow and overflow")

    underflow = _first_float32(lambda value: _cast(value, dtype) != 0)
    largest_float32 = torch.finfo(torch.float32).max
    if torch.finfo(dtype).max == largest_float32:
        overflow = math.inf  # float32 itself: only float64 values round to Inf
    elif not math.isfinite(_cast(torch.tensor([largest_float32]), dtype).item()):
        overflow = _first_float32(lambda value: ~torch.isfinite(_cast(value, dtype)))
    else:
        overflow = _saturation_edge(dtype)
    return CastEdges(name, underflow, overflow)


def _cast(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``values`` cast to ``dtype`` and back to float32, as torch rounds them."""
    return values.to(dtype).to(torch.float32)


def _first_float32(holds: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The smallest positive float32 for which ``holds`` (monotone in the value) is true."""
    low, high = 0, _LARGEST_FLOAT32_BITS  # holds at high; not at low (0.0)
    while high - low > 1:
        middle = (low + high) // 2
        value = torch.tensor([middle], dtype=torch.int32).view(torch.float32)
        if bool(holds(value).item()):
            high = middle
        else:
            low = middle
    return torch.tensor([high], dtype=torch.int32).view(torch.float32).item()


def _saturation_edge(dtype: torch.dtype) -> float:
    """Where a saturating cast (one that clamps instead of giving Inf) starts clamping.

    The correctly rounded value exceeds the largest finite one from half a
    unit in the last place above it; at exactly that midpoint, rounding to
    nearest even goes up only if the largest value's last digit is odd.
    """
    info = torch.finfo(dtype)
    unit = 2.0 ** (math.floor(math.log2(info.max)) + round(math.log2(info.eps)))
    midpoint = info.max + unit / 2
    goes_up_at_midpoint = (info.max / unit) % 2 == 1
    if goes_up_at_midpoint:
        return midpoint
    return torch.nextafter(torch.tensor(midpoint), torch.tensor(math.inf)).item()


__all__ = ["CastEdges", "cast_edges", "format_name"]
