"""Sharded models (issue 6): summaries, ties, statistics and the monitor over DTensor parameters.

Real process groups: 2 and 4 ranks on this machine, gloo over loopback,
spawned from a child interpreter with a timeout (so a hang fails the test).
Each rank builds the same model from the same seed, shards it (FSDP2's
`fully_shard`, or DTensors placed by hand) and compares what torchwalk
reports with the unsharded model in the same process.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torchwalk as tw
from helpers.command_line import run_example
from helpers.module_trees import run_child
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch without distributed")


class TiedModel(nn.Module):
    """An embedding and a head sharing one weight, with blocks between them."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(37, 16)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 16)) for _ in range(3)
        )
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 37, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens)
        for block in self.blocks:
            hidden = hidden + block(hidden)
        return self.head(self.norm(hidden))  # type: ignore[no-any-return]


def build_tied_model() -> TiedModel:
    torch.manual_seed(0)
    return TiedModel()


def check_fully_sharded() -> None:
    """FSDP2: global counts as unsharded, local shards sum to them, the tie is found."""
    from torch.distributed.fsdp import fully_shard

    unsharded = tw.summary(build_tied_model())
    model = build_tied_model()
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    assert type(model.embed.weight).__name__ == "DTensor"
    summary = tw.summary(model)
    totals = summary.totals
    for field in ("params", "trainable", "bytes", "params_unique", "bytes_unique"):
        assert getattr(totals, field) == getattr(unsharded.totals, field), field
    assert [row.params for row in summary.rows] == [row.params for row in unsharded.rows]
    assert [(g.names, g.kind) for g in summary.ties] == [
        (["embed.weight", "head.weight"], "shared")
    ]
    assert sum(_gathered(totals.local_params)) == totals.params
    assert sum(_gathered(totals.local_bytes)) == totals.bytes
    _assert_same_on_every_rank(
        {k: v for k, v in summary.to_dict()["totals"].items() if not k.startswith("local_")}
    )


def check_hand_placed() -> None:
    """Shard(0), Shard(1) and Replicate() DTensors: global counts, local figures, ties."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    world = dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(1)
    plain = nn.ParameterDict(
        {
            "rows": nn.Parameter(torch.randn(10, 6)),
            "columns": nn.Parameter(torch.randn(6, 10)),
            "everywhere": nn.Parameter(torch.randn(5)),
        }
    )
    placements = {"rows": Shard(0), "columns": Shard(1), "everywhere": Replicate()}
    sharded = nn.ParameterDict(
        {
            name: nn.Parameter(distribute_tensor(parameter.detach(), mesh, [placements[name]]))
            for name, parameter in plain.items()
        }
    )
    sharded.register_buffer("rows_again", sharded["rows"])  # a tie through the local shard
    expected = tw.summary(plain).totals
    totals = tw.summary(sharded).totals
    assert totals.params == expected.params == 125
    assert totals.bytes == expected.bytes
    local_sums = _gathered(totals.local_params)
    assert sum(local_sums) == 60 + 60 + world * 5
    assert totals.local_params == sum(p.to_local().numel() for p in sharded.values())
    groups = tw.ties(sharded)
    assert [(g.names, g.kind) for g in groups] == [(["rows", "rows_again"], "shared")]
    _assert_same_on_every_rank([row.params for row in tw.summary(sharded).rows])


def check_stats_fully_sharded() -> None:
    """Stats of FSDP2 parameters and gradients equal the unsharded model's, on every rank."""
    from torch.distributed.fsdp import fully_shard

    tokens = torch.arange(12).reshape(3, 4) % 37
    reference = build_tied_model()
    _train_step(reference, tokens)
    model = build_tied_model()
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    _train_step(model, tokens)
    for grads in (False, True):
        ours = tw.stats(model, grads=grads, exponents=True)
        _assert_same_stats(ours, tw.stats(reference, grads=grads, exponents=True))
        _assert_same_on_every_rank(ours.to_json())  # text: NaN equals NaN


def check_stats_hand_placed() -> None:
    """Shard(0), Shard(1) and Replicate() DTensors: global figures, replicas counted once."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(2)
    values = {
        "rows": torch.randn(10, 6) * 3 + 1,
        "columns": torch.randn(6, 10).masked_fill(torch.rand(6, 10) < 0.2, 0.0),
        "everywhere": torch.tensor([1.0, -2.0, float("inf"), 4.0, 0.0]),
    }
    placements = {"rows": Shard(0), "columns": Shard(1), "everywhere": Replicate()}
    plain = nn.ParameterDict({name: nn.Parameter(value) for name, value in values.items()})
    sharded = nn.ParameterDict(
        {
            name: nn.Parameter(distribute_tensor(value, mesh, [placements[name]]))
            for name, value in values.items()
        }
    )
    ours = tw.stats(sharded, exponents=True)
    _assert_same_stats(ours, tw.stats(plain, exponents=True))
    _assert_same_on_every_rank(ours.to_json())  # text: NaN equals NaN


class Stack(nn.Module):
    """`layers` blocks between an input and a one-output head. Odd widths shard
    unevenly; the head's one row leaves rank 1 of 2 an empty shard."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 7)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(7, 9), nn.GELU(), nn.Linear(9, 7)) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(7)
        self.head = nn.Linear(7, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(inputs)
        for layer in self.layers:
            hidden = hidden + layer(hidden)
        return self.head(self.norm(hidden))  # type: ignore[no-any-return]


def build_stack(layers: int, *, sharded: bool) -> Stack:
    """The same model on every rank; sharded, each layer its own FSDP2 unit, then the root."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = Stack(layers)
    if sharded:
        for layer in model.layers:
            fully_shard(layer)
        fully_shard(model)
    return model


FORMATS = ["bfloat16", "float8_e4m3fn"]


def check_monitor_fully_sharded() -> None:
    """A monitor of an FSDP2 model logs the unsharded model's figures, on every rank."""
    batch = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    figures = []
    for sharded in (False, True):
        model = build_stack(3, sharded=sharded)
        optimizer = _train_until_logging(model, batch)
        monitor = tw.Monitor(model, depth=2, weights=True, optimizer=optimizer, formats=FORMATS)
        figures.append(monitor.step())
    head_weight: Any = model.head.weight  # a DTensor: mypy sees a Tensor
    assert _gathered(head_weight.to_local().numel()) == [7, 0]
    expected, ours = figures
    assert expected is not None and ours is not None
    assert {key.split("/")[0] for key in expected} == {"grad", "weight", "exp_avg", "exp_avg_sq"}
    assert ours.keys() == expected.keys()
    mismatched = {
        key: (value, expected[key])
        for key, value in ours.items()
        if not (
            value == expected[key]
            # Counts over an exact numel.
            if key.endswith(("/zeros", "/nonfinite")) or "flow:" in key
            else math.isclose(value, expected[key], rel_tol=1e-6, abs_tol=1e-9)
        )
    }
    assert not mismatched, mismatched
    assert expected["grad/total/underflow:float8_e4m3fn"] > 0  # the counts are compared
    _assert_same_on_every_rank(sorted(ours.items()))


def check_monitor_collectives() -> None:
    """A logging step issues one all-gather for 3 layers as for 30; other steps, none."""
    assert _collectives_during(lambda: dist.all_reduce(torch.zeros(1))) == ["c10d::allreduce_"]
    batch = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    for layers in (3, 30):
        model = build_stack(layers, sharded=True)
        optimizer = _train_until_logging(model, batch)
        some_weight: Any = model.embed.weight  # a DTensor: mypy sees a Tensor
        # DTensor's own collectives (functional ones) are counted too.
        assert _collectives_during(some_weight.full_tensor) == [
            "_c10d_functional::all_gather_into_tensor"
        ]
        monitor = tw.Monitor(model, every=2, weights=True, optimizer=optimizer, formats=FORMATS)
        per_call = [_collectives_during(monitor.step) for _ in range(4)]
        assert per_call == [[], ["c10d::allgather_"], [], ["c10d::allgather_"]], (layers, per_call)


def _train_until_logging(model: nn.Module, batch: torch.Tensor) -> torch.optim.Optimizer:
    """One AdamW step, then the next backward: where a monitor logs (the optimizer has states).

    Every rank trains on the same batch: FSDP2's reduce-scatter averages the
    ranks' gradients, and the average of equal ones is the unsharded gradient.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(batch).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    model(batch).square().mean().backward()
    return optimizer


class _CollectiveLog(TorchDispatchMode):
    """The collectives issued under it, by operator name.

    Counted at the dispatcher, which every ``torch.distributed`` call
    (``c10d::`` operators) and every functional collective, as DTensor issues
    them (``_c10d_functional::``), passes through.
    """

    _NOT_COLLECTIVES = ("_c10d_functional::wait_tensor", "_c10d_functional::_wrap_tensor_autograd")

    def __init__(self) -> None:
        super().__init__()
        self.collectives: list[str] = []

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = func.name()
        if func.namespace in ("c10d", "_c10d_functional") and name not in self._NOT_COLLECTIVES:
            self.collectives.append(name)
        return func(*args, **(kwargs or {}))


def _collectives_during(call: Callable[[], object]) -> list[str]:
    log = _CollectiveLog()
    with log:
        call()
    return log.collectives


def _train_step(model: TiedModel, tokens: torch.Tensor) -> None:
    model(tokens).square().mean().backward()


def _assert_same_stats(ours: tw.Stats, expected: tw.Stats) -> None:
    assert [row.name for row in ours.rows] == [row.name for row in expected.rows]
    pairs = zip([*ours.rows, ours.total], [*expected.rows, expected.total], strict=True)
    for mine, theirs in pairs:
        for field, value in vars(mine).items():
            other = vars(theirs)[field]
            if isinstance(value, float) and isinstance(other, float):
                assert math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-9) or (
                    math.isnan(value) and math.isnan(other)
                ), (mine.name, field, value, other)
            else:
                assert value == other, (mine.name, field, value, other)


def _gathered(value: int) -> list[int]:
    values: list[int] = [0] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _assert_same_on_every_rank(value: object) -> None:
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    assert all(other == values[0] for other in values), values


# --- running ranks ------------------------------------------------------------------------


def _rank_main(rank: int, world: int, port: int, check_name: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        globals()[check_name]()
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # Every rank passed. Leave at once, without the interpreter's teardown: a
    # gloo worker thread that releases a finished collective's tensors during
    # the teardown cannot take the GIL and aborts the rank ("terminate called
    # without an active exception"; examples/sharded_summary.py says more).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(world: int, port: int, check_name: str) -> None:
    """Run `check_name` on `world` ranks (called in the child interpreter)."""
    torch.multiprocessing.spawn(_rank_main, args=(world, port, check_name), nprocs=world)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_ranks(world: int, check: Callable[[], None], timeout: float = 240) -> None:
    code = f"import test_distributed as t; t.launch({world}, {_free_port()}, {check.__name__!r})"
    run_child(code, f"{check.__name__} on {world} ranks", timeout)


@pytest.mark.parametrize("world", [2, 4])
def test_fully_sharded_model(world: int) -> None:
    run_ranks(world, check_fully_sharded)


@pytest.mark.parametrize("world", [2, 4])
def test_hand_placed_dtensors(world: int) -> None:
    run_ranks(world, check_hand_placed)


@pytest.mark.parametrize("world", [2, 4])
def test_stats_of_a_fully_sharded_model(world: int) -> None:
    run_ranks(world, check_stats_fully_sharded)


@pytest.mark.parametrize("world", [2, 4])
def test_stats_of_hand_placed_dtensors(world: int) -> None:
    run_ranks(world, check_stats_hand_placed)


def test_monitor_of_a_fully_sharded_model() -> None:
    run_ranks(2, check_monitor_fully_sharded)


def test_monitor_collectives_per_logging_step_do_not_grow_with_the_model() -> None:
    run_ranks(2, check_monitor_collectives)


def test_the_torchrun_example_runs() -> None:
    completed = run_example(
        "sharded_summary.py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        OMP_NUM_THREADS="1",
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "global gradient norm:" in completed.stdout
    assert "parameters held per rank:" in completed.stdout
