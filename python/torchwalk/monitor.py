"""Watching a training run: per-module statistics every N optimizer steps.

:class:`Monitor` reads the gradients (and, if asked, the weights and the
optimizer's tensor states) of a model in one fused pass per logging step,
rolls them up per module path in C++ (``_C.StatsTable.grouped``) and returns
a flat ``dict`` for any logger. Between logging steps ``step()`` only
counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchwalk import _C
from torchwalk.cast_edges import CastEdges, cast_edges, format_name
from torchwalk.dropin import named_parameters
from torchwalk.value_stats import Stats, TensorStats, stats_table, without_lazy

ROOT_PATH = "(root)"
"""The path of the tensors a model's root module holds itself."""


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
        formats (sequence of str or torch.dtype): for each floating-point
            format (``"bfloat16"``, ``"float16"``, ``"float8_e4m3fn"``, ...),
            log ``underflow:{name}``, the fraction of the values that are
            non-zero but become zero when cast to it, and ``overflow:{name}``,
            the fraction of finite values that leave its finite range (the
            cast gives Inf or NaN, or, for a saturating format such as
            float8_e4m3fn, clamps them to its largest value). Exactly as
            torch's cast rounds, ties included; float64 values are rounded
            to float32 first, as the cast does. Default: none.

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
        formats: Sequence[str | torch.dtype] = (),
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Monitor watches an nn.Module, got {type(model).__name__}")
        self.formats = check_options(
            every=every,
            depth=depth,
            grads=grads,
            weights=weights,
            states=optimizer is not None,
            formats=formats,
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
        self._layout: _Layout | None = None
        # The kernels count, for each format, the values at or above its two edges.
        self._edges = [edge for edges in self.formats for edge in edges[1:]]

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
        parameters = without_lazy(list(named_parameters(self.model)))
        tensors: list[torch.Tensor] = []
        present = b""  # for each kind and parameter: 1 where there is a tensor with values
        kinds = self._kinds(parameters)
        for _, (readable, mask) in kinds:
            tensors += readable
            present += mask
        layout = self._layout_of(parameters, [kind for kind, _ in kinds], present)
        table = stats_table(tensors, edges=self._edges)
        self.last = Stats(layout.names, table)
        figures: dict[str, float] = {}
        names = [edges.name for edges in self.formats]
        for kind, keys, groups in layout.roll_ups:
            rolled = table.grouped(groups)
            rolled.add_logged_fields(figures, keys, names)
            # The paths' rows hold every row of the kind once: merging them is the total.
            total = rolled.grouped([range(len(keys))])
            total.add_logged_fields(figures, [f"{kind}/total"], names)
        self.nonfinite = self._nonfinite(table, layout) if self.grads else []
        return figures

    def _kinds(
        self, parameters: Sequence[tuple[str, nn.Parameter]]
    ) -> list[tuple[str, tuple[list[torch.Tensor], bytes]]]:
        """For each kind watched: its name, the tensors of that kind with values,
        and a mask of the parameters that have one (see ``_C.readable_tensors``)."""
        objects = [parameter for _, parameter in parameters]
        kinds: list[tuple[str, tuple[list[torch.Tensor], bytes]]] = []
        if self.grads:
            kinds.append(("grad", _C.readable_tensors(objects, grads=True)))
        if self.weights:
            # The parameters themselves: the statistics read their data, not their autograd.
            kinds.append(("weight", _C.readable_tensors(objects)))
        if self.optimizer is not None:
            state = self.optimizer.state
            states = [state.get(parameter, {}) for parameter in objects]
            keys: list[str] = []
            for parameter, held in zip(objects, states, strict=True):
                for key, value in held.items():
                    if (
                        key not in keys
                        and isinstance(key, str)
                        and isinstance(value, torch.Tensor)
                        and value.shape == parameter.shape
                    ):
                        keys.append(key)
            for key in keys:
                of_kind: list[torch.Tensor | None] = []
                for parameter, held in zip(objects, states, strict=True):
                    value = held.get(key)
                    same_shape = isinstance(value, torch.Tensor) and value.shape == parameter.shape
                    of_kind.append(value if same_shape else None)
                kinds.append((key, _C.readable_tensors(of_kind)))
        return kinds

    def _layout_of(
        self,
        parameters: list[tuple[str, nn.Parameter]],
        kinds: list[str],
        present: bytes,
    ) -> _Layout:
        """The rows' names and roll-up groups: remade only when the rows change."""
        names = [name for name, _ in parameters]
        key = (names, kinds, present)
        if self._layout is None or self._layout.key != key:
            self._layout = _Layout(key, names, kinds, present, self)
        return self._layout

    def _path_of(self, name: str) -> str:
        path = self._paths.get(name)
        if path is None:
            modules = name.split(".")[:-1]
            path = ".".join(modules[: self.depth]) or ROOT_PATH
            self._paths[name] = path
        return path

    def _nonfinite(self, table: _C.StatsTable, layout: _Layout) -> list[str]:
        """The modules whose gradients hold a NaN or an Inf, deepest first, backward's order."""
        found: dict[str, tuple[int, int]] = {}  # module path -> (depth, walk order)
        for row in table.anomalous():
            if layout.kinds[row] != "grad":
                continue
            figures = TensorStats("", *table.figures(row))
            if not (figures.nans or figures.infs):
                continue  # an all-zero gradient: anomalous, but finite
            module = layout.owners[row].rpartition(".")[0]
            found.setdefault(module or ROOT_PATH, (module.count(".") + bool(module), row))
        return sorted(found, key=lambda path: (-found[path][0], -found[path][1]))


class _Layout:
    """Which tensor each row of a step's table is, and the rows each roll-up merges.

    The same from step to step while the parameters and which of their
    tensors exist stay the same, so it is made once, not per step.
    """

    def __init__(
        self,
        key: object,
        parameter_names: list[str],
        kind_names: list[str],
        present: bytes,
        monitor: Monitor,
    ) -> None:
        self.key = key
        self.names: list[str] = []
        self.kinds: list[str] = []
        self.owners: list[str] = []  # each row's parameter name
        flags = iter(present)
        for kind in kind_names:
            for name in parameter_names:
                if next(flags):
                    self.names.append(f"{kind}/{name}")
                    self.kinds.append(kind)
                    self.owners.append(name)
        by_kind: dict[str, dict[str, list[int]]] = {kind: {} for kind in kind_names}
        for row, (kind, owner) in enumerate(zip(self.kinds, self.owners, strict=True)):
            by_kind[kind].setdefault(monitor._path_of(owner), []).append(row)
        # (kind, the keys of its paths, the rows of each path)
        self.roll_ups = [
            (kind, [f"{kind}/{path}" for path in rows], _C.RowGroups(rows.values()))
            for kind, rows in by_kind.items()
            if rows
        ]


def check_options(
    *,
    every: int,
    depth: int | None,
    grads: bool,
    weights: bool,
    states: bool,
    formats: Sequence[str | torch.dtype] = (),
) -> list[CastEdges]:
    """The edges of ``formats``; ValueError for options a :class:`Monitor` refuses
    (``states``: with an optimizer)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be None or an int of at least 0, got {depth!r}")
    if not (grads or weights or states):
        raise ValueError("nothing to watch: grads, weights and optimizer states are all off")
    if isinstance(formats, (str, torch.dtype)):
        raise ValueError(f"formats is a sequence of format names, got {formats!r}")
    names = [format_name(format) for format in formats]
    if len(set(names)) != len(names):
        raise ValueError(f"formats repeats a format: {names}")
    return [cast_edges(name) for name in names]


__all__ = ["Monitor", "ROOT_PATH", "check_options"]
