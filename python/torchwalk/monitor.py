"""Watching a training run: per-module statistics every N optimizer steps.

:class:`Monitor` reads the gradients (and, if asked, the weights and the
optimizer's tensor states) of a model in one fused pass per logging step,
rolls them up per module path in C++ (``_C.StatsTable.grouped``) and returns
a flat ``dict`` for any logger. Between logging steps ``step()`` only
counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from torchwalk import _C
from torchwalk.dropin import named_parameters
from torchwalk.value_stats import Stats, TensorStats, stats_table

ROOT_PATH = "(root)"
"""The path of the tensors a model's root module holds itself."""

FIELDS = ("l2", "absmax", "mean", "std", "zeros", "nonfinite")
"""The figures logged for each kind and path (``zeros`` is a fraction, ``nonfinite`` a count)."""


class Monitor:
    """Per-module statistics of a model's gradients, weights and optimizer states.

    Args:
        model (nn.Module): the model watched.
        every (int): log on every ``every``-th call of :meth:`step`. Default: 1.
        depth (int, optional): the depth of the module paths rolled up to
            (the root is 0); ``None``: the root's children. Every module at
            that depth is its own key. Default: ``None``.
        grads (bool): describe the parameters' ``.grad``. Default: ``True``.
        weights (bool): describe the parameters themselves. Default: ``False``.
        optimizer (torch.optim.Optimizer, optional): also describe its state
            tensors shaped like their parameter (``exp_avg``,
            ``exp_avg_sq``, ``momentum_buffer``, ...), each under its name.

    Attributes:
        nonfinite (list of str): after a logging step whose gradients hold a
            NaN or an Inf, the paths of the modules holding them, deepest
            first, then in the order backward reached them (reverse walk
            order); empty otherwise.
        last (Stats or None): the last logging step's rows, named
            ``"{kind}/{parameter name}"``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 1,
        depth: int | None = None,
        grads: bool = True,
        weights: bool = False,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Monitor watches an nn.Module, got {type(model).__name__}")
        check_options(
            every=every, depth=depth, grads=grads, weights=weights, states=optimizer is not None
        )
        self.model = model
        self.every = every
        self.depth = 1 if depth is None else depth
        self.grads = grads
        self.weights = weights
        self.optimizer = optimizer
        self.nonfinite: list[str] = []
        self.last: Stats | None = None
        self._calls = 0
        self._paths: dict[str, str] = {}  # parameter name -> its path at depth

    def step(self) -> dict[str, float] | None:
        """Count an optimizer step; on every ``every``-th, measure and return the figures.

        Call it after backward (after unscaling, under AMP) and before
        ``optimizer.step()`` and ``zero_grad()``.

        Returns:
            dict or None: ``{"{kind}/{path}/{field}": value}`` on a logging
            step (``path`` is a module path at ``depth``, or ``total``), else
            None.
        """
        self._calls += 1
        if self._calls % self.every:
            return None
        return self._measure()

    def _measure(self) -> dict[str, float]:
        names: list[str] = []
        kinds: list[str] = []
        owners: list[str] = []  # each row's parameter name
        tensors: list[torch.Tensor] = []
        # Lazy parameters hold no values yet: they have no rows.
        parameters = [
            (name, parameter)
            for name, parameter in named_parameters(self.model)
            if not isinstance(parameter, UninitializedTensorMixin)
        ]
        for kind, pick in self._kinds(parameters):
            for name, parameter in parameters:
                tensor = pick(parameter)
                if tensor is not None and not tensor.is_meta:
                    names.append(f"{kind}/{name}")
                    kinds.append(kind)
                    owners.append(name)
                    tensors.append(tensor)
        table = stats_table(tensors)
        self.last = Stats(names, table)
        figures: dict[str, float] = {}
        by_kind: dict[str, dict[str, list[int]]] = {}
        for row, (kind, owner) in enumerate(zip(kinds, owners, strict=True)):
            path = self._path_of(owner)
            by_kind.setdefault(kind, {}).setdefault(path, []).append(row)
        for kind, rows_by_path in by_kind.items():
            paths = list(rows_by_path)
            groups = list(rows_by_path.values())
            rolled = table.grouped(groups)
            for index, path in enumerate(paths):
                _add(figures, kind, path, TensorStats(path, *rolled.figures(index)))
            every_row = [row for rows in groups for row in rows]
            _add(figures, kind, "total", TensorStats("total", *table.merged_figures(every_row)))
        self.nonfinite = self._nonfinite(table, kinds, owners) if self.grads else []
        return figures

    def _kinds(self, parameters: Sequence[tuple[str, nn.Parameter]]) -> list[tuple[str, Any]]:
        """(kind, the tensor of that kind for a parameter, or None) for each kind watched."""
        kinds: list[tuple[str, Any]] = []
        if self.grads:
            kinds.append(("grad", lambda parameter: parameter.grad))
        if self.weights:
            kinds.append(("weight", lambda parameter: parameter.detach()))
        if self.optimizer is not None:
            state = self.optimizer.state
            names: list[str] = []
            for _, parameter in parameters:
                for key, value in state.get(parameter, {}).items():
                    if (
                        isinstance(key, str)
                        and isinstance(value, torch.Tensor)
                        and value.shape == parameter.shape
                        and key not in names
                    ):
                        names.append(key)
            for key in names:
                kinds.append((key, _state_picker(state, key)))
        return kinds

    def _path_of(self, name: str) -> str:
        path = self._paths.get(name)
        if path is None:
            modules = name.split(".")[:-1]
            path = ".".join(modules[: self.depth]) or ROOT_PATH
            self._paths[name] = path
        return path

    def _nonfinite(self, table: _C.StatsTable, kinds: list[str], owners: list[str]) -> list[str]:
        """The modules whose gradients hold a NaN or an Inf, deepest first, backward's order."""
        found: dict[str, tuple[int, int]] = {}  # module path -> (depth, walk order)
        for row in table.anomalous():
            if kinds[row] != "grad":
                continue
            _, _, _, _, _, _, _, _, nans, infs = table.figures(row)
            if not (nans or infs):
                continue  # an all-zero gradient: anomalous, but finite
            module = owners[row].rpartition(".")[0]
            found.setdefault(module or ROOT_PATH, (module.count(".") + bool(module), row))
        return sorted(found, key=lambda path: (-found[path][0], -found[path][1]))


def check_options(
    *, every: int, depth: int | None, grads: bool, weights: bool, states: bool
) -> None:
    """Raise ValueError for options a :class:`Monitor` refuses (``states``: with an optimizer)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be None or an int of at least 0, got {depth!r}")
    if not (grads or weights or states):
        raise ValueError("nothing to watch: grads, weights and optimizer states are all off")


def _state_picker(state: Any, key: str) -> Any:
    def pick(parameter: nn.Parameter) -> torch.Tensor | None:
        value = state.get(parameter, {}).get(key)
        return value if isinstance(value, torch.Tensor) and value.shape == parameter.shape else None

    return pick


def _add(figures: dict[str, float], kind: str, path: str, stats: TensorStats) -> None:
    """The logged fields of one roll-up (fields torch has no answer for are left out)."""
    values = {
        "l2": stats.l2,
        "absmax": stats.absmax,
        "mean": stats.mean,
        "std": stats.std,
        "zeros": stats.zeros / stats.numel if stats.zeros is not None and stats.numel else None,
        "nonfinite": (stats.nans or 0) + (stats.infs or 0) if stats.nans is not None else None,
    }
    for field, value in values.items():
        if value is not None:
            figures[f"{kind}/{path}/{field}"] = float(value)


__all__ = ["FIELDS", "Monitor", "ROOT_PATH", "check_options"]
