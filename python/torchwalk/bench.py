"""Time every drop-in against the PyTorch method it replaces, on the built-in models.

Each comparison is between two calls that give the same list, e.g.
``list(model.named_parameters())`` and ``list(tw.named_parameters(model))``.
The two are timed alternately in the same run (which goes first alternates
too), each sample repeating a call enough times to last at least about a
millisecond, with Python's garbage collector paused while timing, as
``timeit`` does. The report gives the median time per call of each and their
ratio, PyTorch's median over torchwalk's: above 1 torchwalk is faster.

    >>> from torchwalk import bench
    >>> print(bench.run(["seed"]))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

import torchwalk as tw
from torchwalk import zoo
from torchwalk.gc_pause import gc_paused

MIN_SAMPLES = 15
"""The fewest samples taken of each call, however long it runs (on a shared
machine, a median of 7 calls of a large model still moved by a tenth between runs)."""

MAX_SAMPLES = 201
"""The most samples taken of each call, however short it runs."""


@dataclass(frozen=True)
class Case:
    """One drop-in on one model: the PyTorch call and the torchwalk call that should match it."""

    function: str
    torch_call: Callable[[], object]
    torchwalk_call: Callable[[], object]


@dataclass(frozen=True)
class Measurement:
    """Median seconds per call of the PyTorch method and of the drop-in, on one model."""

    model: str
    function: str
    torch_median_s: float
    torchwalk_median_s: float
    samples: int

    @property
    def ratio(self) -> float:
        """PyTorch's median over torchwalk's: how many times faster torchwalk is."""
        return self.torch_median_s / self.torchwalk_median_s


@dataclass(frozen=True)
class Machine:
    """What the benchmark ran on."""

    cpu: str
    cpus: int
    system: str
    python: str
    torch: str
    torchwalk: str


@dataclass(frozen=True)
class BenchReport:
    """The measurements of one run, the time each model took to build, and the machine."""

    measurements: list[Measurement]
    build_seconds: dict[str, float]
    machine: Machine

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data: ``{"machine", "build_seconds", "measurements"}``."""
        return {
            "machine": asdict(self.machine),
            "build_seconds": dict(self.build_seconds),
            "measurements": [
                {**asdict(measurement), "ratio": measurement.ratio}
                for measurement in self.measurements
            ],
        }

    def to_json(self) -> str:
        """The report as JSON text (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        """The measurements as an aligned text table, then the build times and the machine."""
        header = ("model", "function", "torch", "torchwalk", "ratio")
        rows = [
            (
                measurement.model,
                measurement.function,
                _format_seconds(measurement.torch_median_s),
                _format_seconds(measurement.torchwalk_median_s),
                f"{measurement.ratio:.1f}x",
            )
            for measurement in self.measurements
        ]
        widths = [max(len(row[column]) for row in (header, *rows)) for column in range(5)]
        lines = [
            "  ".join(
                cell.ljust(width) if column < 2 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in (header, *rows)
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        builds = ", ".join(
            f"{model} {_format_seconds(seconds)}" for model, seconds in self.build_seconds.items()
        )
        machine = self.machine
        return "\n".join(
            [
                "Median time per call of each nn.Module method (torch) and its drop-in",
                "(torchwalk), iterators as list(...), timed alternately in one run;",
                "ratio = torch / torchwalk.",
                "",
                *lines,
                "",
                f"built on meta in: {builds}",
                f"machine: {machine.cpu}, {machine.cpus} CPUs; {machine.system}; "
                f"Python {machine.python}; torch {machine.torch}; torchwalk {machine.torchwalk}",
            ]
        )


def run(
    models: Sequence[str] | None = None,
    *,
    time_per_case_s: float = 0.25,
    min_sample_s: float = 1e-3,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Build each model on the meta device and time every drop-in on it against PyTorch.

    Args:
        models (sequence of str, optional): built-in model names (see
            :func:`torchwalk.zoo.names`) or ``package.module:callable``
            sources returning a module. Default: every built-in model.
        time_per_case_s (float): how long to keep sampling each comparison
            (each call still gets :data:`MIN_SAMPLES` to :data:`MAX_SAMPLES`
            samples). Default: 0.25.
        min_sample_s (float): the shortest a sample may be; fast calls are
            repeated within a sample to reach it. Default: 1 ms.
        progress (callable, optional): called with the name of each model
            before it is built.

    Returns:
        BenchReport: one :class:`Measurement` per model and drop-in, in model
        order, then in the order of :func:`cases`.

    Raises:
        ValueError: if a name is neither a built-in model nor a callable
            source (before anything runs), or a source is a checkpoint.
        torchwalk.sources.SourceError: if a callable source cannot be loaded.
    """
    names = zoo.names() if models is None else list(models)
    # Built-in names are checked before anything is built; other sources
    # (package.module:callable) only when they are loaded.
    unknown = [name for name in names if name not in zoo.names() and ":" not in name]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known models: {', '.join(zoo.names())}")
    # torch's first random fill of a meta tensor loads its decompositions
    # (about a second): do it now, not in the build time of the first model.
    torch.empty(0, device="meta").normal_()
    measurements: list[Measurement] = []
    build_seconds: dict[str, float] = {}
    for name in names:
        if progress is not None:
            progress(name)
        # Paused for the whole model, not only while timing: with DeepSeek-V3's
        # million objects alive, each full collection between samples would
        # take most of a second. Neither the models nor the calls make cycles.
        with gc_paused():
            start = time.perf_counter()
            model = _module_of(name)
            build_seconds[name] = time.perf_counter() - start
            measurements.extend(
                measure(name, case, time_per_case_s=time_per_case_s, min_sample_s=min_sample_s)
                for case in cases(model)
            )
            del model  # freed now, before the collector runs again
    return BenchReport(measurements, build_seconds, machine())


def _module_of(source: str) -> nn.Module:
    """The model a built-in name or a ``package.module:callable`` names, on the meta device."""
    from torchwalk.sources import load_source

    model = load_source(source)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{source!r} is a checkpoint: bench times the drop-ins on a module")
    return model


ITERATOR_FUNCTIONS = (
    "named_parameters",
    "parameters",
    "named_buffers",
    "buffers",
    "named_modules",
    "modules",
    "named_children",
    "children",
)
"""The drop-ins that return iterators, timed as ``list(...)``."""

FUNCTIONS = (*ITERATOR_FUNCTIONS, "get_parameter", "get_submodule", "get_buffer", "state_dict")
"""Every function :func:`cases` compares, in its order."""


def _iterator_case(model: nn.Module, function: str) -> Case:
    """``list(model.function())`` against ``list(tw.function(model))``, both bound beforehand."""
    method = getattr(model, function)
    dropin = getattr(tw, function)
    return Case(function, lambda: list(method()), lambda: list(dropin(model)))


def cases(model: nn.Module) -> list[Case]:
    """The calls to compare on ``model``: every drop-in, each as ``list(...)`` of its iterator.

    ``state_dict`` is compared as called, without ``list``. ``get_parameter``
    and ``get_buffer`` look up the deepest name there is (the
    last of the deepest, in walk order), ``get_submodule`` the module that holds
    that parameter. ``get_buffer`` is left out for a model without buffers.
    """
    parameter_name = _deepest(name for name, _ in tw.named_parameters(model))
    buffer_name = _deepest(name for name, _ in tw.named_buffers(model))
    found = [_iterator_case(model, function) for function in ITERATOR_FUNCTIONS]
    if parameter_name is not None:
        module_name = parameter_name.rpartition(".")[0]
        found += [
            Case(
                "get_parameter",
                lambda: model.get_parameter(parameter_name),
                lambda: tw.get_parameter(model, parameter_name),
            ),
            Case(
                "get_submodule",
                lambda: model.get_submodule(module_name),
                lambda: tw.get_submodule(model, module_name),
            ),
        ]
    if buffer_name is not None:
        found.append(
            Case(
                "get_buffer",
                lambda: model.get_buffer(buffer_name),
                lambda: tw.get_buffer(model, buffer_name),
            )
        )
    found.append(Case("state_dict", model.state_dict, lambda: tw.state_dict(model)))
    return found


def measure(
    model: str, case: Case, *, time_per_case_s: float = 0.25, min_sample_s: float = 1e-3
) -> Measurement:
    """Time ``case``'s two calls alternately and return their medians.

    Args:
        model (str): the model's name, for the report.
        case (Case): the two calls.
        time_per_case_s (float): how long to keep sampling (each call still
            gets :data:`MIN_SAMPLES` to :data:`MAX_SAMPLES` samples).
        min_sample_s (float): the shortest a sample may be.

    Returns:
        Measurement: the medians of the samples of each call, in seconds per call.
    """
    torch_loops = _calibrated_loops(case.torch_call, min_sample_s)
    torchwalk_loops = _calibrated_loops(case.torchwalk_call, min_sample_s)
    torch_samples: list[float] = []
    torchwalk_samples: list[float] = []
    deadline = time.perf_counter() + time_per_case_s
    while len(torch_samples) < MIN_SAMPLES or (
        len(torch_samples) < MAX_SAMPLES and time.perf_counter() < deadline
    ):
        torch_first = len(torch_samples) % 2 == 0
        if torch_first:
            torch_samples.append(_seconds_per_call(case.torch_call, torch_loops))
        torchwalk_samples.append(_seconds_per_call(case.torchwalk_call, torchwalk_loops))
        if not torch_first:
            torch_samples.append(_seconds_per_call(case.torch_call, torch_loops))
    return Measurement(
        model,
        case.function,
        statistics.median(torch_samples),
        statistics.median(torchwalk_samples),
        len(torch_samples),
    )


def machine() -> Machine:
    """The CPU model, usable CPUs, system and versions of this process."""
    return Machine(
        cpu=_cpu_model(),
        cpus=_usable_cpus(),
        system=platform.platform(terse=True),
        python=platform.python_version(),
        torch=torch.__version__,
        torchwalk=tw.__version__,
    )


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _deepest(names: Iterable[str]) -> str | None:
    """The last of the names with the most dots, or None if there are none."""
    deepest = None
    for name in names:
        if deepest is None or name.count(".") >= deepest.count("."):
            deepest = name
    return deepest


def _calibrated_loops(call: Callable[[], object], min_sample_s: float) -> int:
    """How many calls one sample makes: the first power of two that lasts ``min_sample_s``."""
    call()  # warm up: first-call caches, lazy imports
    loops = 1
    while _seconds_per_call(call, loops) * loops < min_sample_s:
        loops *= 2
    return loops


def _seconds_per_call(call: Callable[[], object], loops: int) -> float:
    """Mean seconds per call over ``loops`` calls, with the garbage collector paused."""
    with gc_paused():
        start = time.perf_counter()
        for _ in range(loops):
            call()
        return (time.perf_counter() - start) / loops


def _format_seconds(seconds: float) -> str:
    """``seconds`` with three significant digits in s, ms, us or ns."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{_three_digits(seconds / scale)} {unit}"
    return f"{_three_digits(seconds / 1e-9)} ns"


def _three_digits(value: float) -> str:
    """``value`` (at least 1, under 1000 unless in seconds) to three significant digits."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
