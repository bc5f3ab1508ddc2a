"""The oracle of a monitor's figures: torch's float64 reductions of tensors recorded by name.

A framework callback's test records the tensors (gradients, optimizer
moments) at the point the callback samples them, then checks the logged
figures against these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torchwalk.monitor import ROOT_PATH


def path_at(name: str, depth: int) -> str:
    """The module path a parameter's figures roll up to: its owner's first ``depth`` names."""
    return ".".join(name.split(".")[:-1][:depth]) or ROOT_PATH


def expected_figures(
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    depth: int,
    formats: Sequence[torch.dtype] = (),
) -> dict[str, float]:
    """``{"{kind}/{path}/{field}": value}`` for the tensors, keyed by parameter name."""
    by_path: dict[str, list[torch.Tensor]] = {}
    for name, tensor in tensors.items():
        by_path.setdefault(path_at(name, depth), []).append(tensor.detach().flatten())
    everything = [tensor for of_path in by_path.values() for tensor in of_path]
    figures: dict[str, float] = {}
    for path, of_path in [*by_path.items(), ("total", everything)]:
        values = torch.cat(of_path).double() if of_path else torch.zeros(0, dtype=torch.float64)
        if values.numel() == 0:
            continue  # no values: the monitor logs no figure
        figures[f"{kind}/{path}/l2"] = float(torch.linalg.vector_norm(values))
        figures[f"{kind}/{path}/absmax"] = float(values.abs().max())
        figures[f"{kind}/{path}/mean"] = float(values.mean())
        if values.numel() > 1:
            figures[f"{kind}/{path}/std"] = float(values.std())
        figures[f"{kind}/{path}/zeros"] = float((values == 0).sum()) / values.numel()
        figures[f"{kind}/{path}/nonfinite"] = float((~values.isfinite()).sum())
        for format in formats:
            name = str(format).removeprefix("torch.")
            underflow, overflow = cast_fractions(torch.cat(of_path), format)
            figures[f"{kind}/{path}/underflow:{name}"] = underflow
            figures[f"{kind}/{path}/overflow:{name}"] = overflow
    return figures


def cast_fractions(x: torch.Tensor, format: torch.dtype) -> tuple[float, float]:
    """(underflow, overflow) of ``x`` cast to ``format``, by torch's cast itself: the
    fractions of values that are non-zero and cast to zero, and that are finite and
    cast to Inf or NaN (or, where the cast saturates, clamped to the largest value)."""
    wide = x.double()
    cast = x.to(format).double()
    finite = wide.isfinite()
    underflow = finite & (wide != 0) & (cast == 0)
    largest_float32 = torch.tensor(torch.finfo(torch.float32).max)
    if format != torch.float32 and math.isfinite(largest_float32.to(format).item()):
        # A saturating cast (float8_e4m3fn): torch gives the largest value
        # where rounding to the format's precision (half to even, as
        # torch.round) would go past it.
        info = torch.finfo(format)
        unit = 2.0 ** math.floor(math.log2(info.max)) * info.eps
        magnitude = x.float().double().abs()  # float64 goes through float32, as the cast does
        rounded = torch.where(
            magnitude < 2 * info.max, torch.round(magnitude / unit) * unit, magnitude
        )
        overflow = finite & (rounded > info.max)
        assert (cast.abs()[overflow] == info.max).all()  # the oracle's premise
    else:
        overflow = finite & ~cast.isfinite()
    numel = x.numel()
    return int(underflow.sum()) / numel, int(overflow.sum()) / numel


def assert_figures_close(got: Mapping[str, float], want: Mapping[str, float]) -> None:
    """Every key of ``want`` logged, at 1e-6 relative (1e-9 absolute, for means near zero)."""
    assert set(want) <= set(got), sorted(set(want) - set(got))
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-9), (key, got[key], value)
