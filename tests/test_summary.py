"""The structural summary, and the records it reads, with PyTorch as the oracle."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch
from helpers.module_trees import module_trees
from helpers.tree_oracle import records_of
from hypothesis import given
from torch import nn
from torch.nn.parameter import is_lazy
from torchwalk import zoo
from torchwalk.summary_table import Summary, SummaryRow, human_bytes, human_count, summarize

# --- what PyTorch says ------------------------------------------------------------------------


def _figures(module: nn.Module) -> dict[str, int]:
    """A module's figures as PyTorch counts them: each object once, lazy ones apart."""
    params = [p for p in module.parameters() if not is_lazy(p)]
    buffers = [b for b in module.buffers() if not is_lazy(b)]
    return {
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "frozen": sum(p.numel() for p in params if not p.requires_grad),
        "bytes": sum(p.numel() * p.element_size() for p in params),
        "buffers": sum(b.numel() for b in buffers),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in buffers),
        "uninitialized": sum(1 for p in module.parameters() if is_lazy(p)),
    }


def _structure(module: nn.Module) -> Any:
    """Types, names, shapes and dtypes all the way down: what makes siblings identical."""
    members = [
        (name, kind, "lazy" if is_lazy(t) else tuple(t.shape), str(t.dtype))
        for kind, members in (("p", module._parameters), ("b", module._buffers))
        for name, t in members.items()
        if t is not None
    ]
    children = [(n, _structure(c)) for n, c in module._modules.items() if c is not None]
    return (type(module), members, children)


def _instance_path(row_path: str) -> str:
    """The path of the first instance a row stands for: ``layers.0-31.mlp`` -> ``layers.0.mlp``."""
    return ".".join(part.split("-")[0] for part in row_path.split(".")) if row_path else ""


def _row_paths_expected(root: nn.Module, depth: int | None) -> list[str]:
    """The row paths PyTorch's module tree calls for: each module once, runs collapsed."""
    first_paths = {path for path, _ in root.named_modules()}
    row_of: dict[str, str] = {"": ""}
    expected: list[str] = []
    for path, _ in root.named_modules():
        if path:
            parent, _, name = path.rpartition(".")
            label = _run_label(root.get_submodule(parent), parent, name, first_paths)
            row_of[path] = f"{row_of[parent]}.{label}" if row_of[parent] else label
        row = row_of[path]
        if (depth is None or _depth(row) <= depth) and row not in expected:
            expected.append(row)
    return expected


def _depth(row_path: str) -> int:
    return 0 if not row_path else row_path.count(".") + 1


def _run_label(parent: nn.Module, parent_path: str, name: str, first_paths: set[str]) -> str:
    """The row label of child ``name`` of ``parent``: its name, or its run's index range.

    A run is a stretch of consecutive integer names, structurally identical,
    none of them a second place of a module held earlier.
    """
    runs: list[list[int]] = []
    previous: nn.Module | None = None
    for key, child in parent._modules.items():
        path = f"{parent_path}.{key}" if parent_path else key
        if child is None or path not in first_paths:
            previous = None
            continue
        index = int(key) if key.isdecimal() and str(int(key)) == key else None
        if index is None:
            previous = None
            continue
        if previous is not None and runs[-1][-1] == index - 1:
            if _structure(previous) == _structure(child):
                runs[-1].append(index)
                previous = child
                continue
        runs.append([index])
        previous = child
    for run in runs:
        if len(run) > 1 and name in map(str, run):
            return f"{run[0]}-{run[-1]}"
    return name


def check_summary(root: nn.Module, depth: int | None = None) -> Summary:
    """Every row's figures and every total against PyTorch; the rows against the collapse rule."""
    summary = summarize(records_of(root), depth)
    assert [row.path for row in summary.rows] == _row_paths_expected(root, depth)
    for row in summary.rows:
        module = root.get_submodule(_instance_path(row.path))
        assert row.type == type(module).__name__
        assert row.depth == _depth(row.path)
        figures = {name: getattr(row, name) for name in _figures(module)}
        assert figures == _figures(module), row.path
    totals = _figures(root)
    assert {name: getattr(summary.totals, name) for name in totals} == totals
    by_dtype: dict[str, int] = {}
    by_device: dict[str, int] = {}
    for tensor in [*root.parameters(), *root.buffers()]:
        if not is_lazy(tensor):
            nbytes = tensor.numel() * tensor.element_size()
            by_dtype[str(tensor.dtype)] = by_dtype.get(str(tensor.dtype), 0) + nbytes
            by_device[str(tensor.device)] = by_device.get(str(tensor.device), 0) + nbytes
    assert summary.totals.bytes_by_dtype == by_dtype
    assert summary.totals.bytes_by_device == by_device
    return summary


# --- the records (the oracle itself) against PyTorch ----------------------------------------


def check_records(root: nn.Module) -> None:
    records = records_of(root)
    positions = list(nn.Module.named_modules(root, remove_duplicate=False))
    assert records.module_count() == len(positions)
    for position, (path, module) in enumerate(positions):
        assert records.module_path(position) == path
        assert records.module_object(position) is module
    leaves = [
        (records.leaf_path(leaf), records.leaf_tensor(leaf)) for leaf in range(records.leaf_count())
    ]
    params = [(n, t) for leaf, (n, t) in enumerate(leaves) if not records.leaf_is_buffer(leaf)]
    expected = list(root.named_parameters(remove_duplicate=False))
    assert [n for n, _ in params] == [n for n, _ in expected]
    assert all(a is b for (_, a), (_, b) in zip(params, expected, strict=True))
    for view, theirs in (
        (records.named_parameters(), root.named_parameters()),
        (records.named_buffers(), root.named_buffers()),
        (records.named_modules(), root.named_modules()),
    ):
        expected_view = list(theirs)
        assert [n for n, _ in view] == [n for n, _ in expected_view]
        assert all(a is b for (_, a), (_, b) in zip(view, expected_view, strict=True))


@given(module_trees())
def test_records_follow_pytorch_on_random_trees(root: nn.Module) -> None:
    check_records(root)


# --- figures and rows -----------------------------------------------------------------------


@given(module_trees())
def test_summary_follows_pytorch_on_random_trees(root: nn.Module) -> None:
    check_summary(root)
    check_summary(root, depth=1)


@pytest.mark.parametrize("depth", [0, 1, 2, None])
def test_depth_limits_rows(depth: int | None) -> None:
    model = zoo.build("gpt2")
    summary = check_summary(model, depth)
    assert summary.rows[0].path == ""
    if depth is not None:
        assert max(row.depth for row in summary.rows) == depth


def test_negative_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        summarize(records_of(zoo.build("seed")), depth=-1)


def test_llama_layers_collapse_into_one_row() -> None:
    model = zoo.build("llama-7b")
    summary = check_summary(model)
    layers = model.model.layers
    last = len(layers) - 1
    (run,) = [row for row in summary.rows if row.repeat > 1]
    assert run.path == f"model.layers.0-{last}"
    assert run.repeat == len(layers)
    assert run.type == type(layers[0]).__name__
    assert run.params == sum(p.numel() for p in layers[0].parameters())
    # The children of the run appear once, under the run's path.
    q_proj = [row for row in summary.rows if row.path.endswith("q_proj")]
    assert [row.path for row in q_proj] == [f"model.layers.0-{last}.self_attn.q_proj"]
    # Per instance: the run row times its repeat is what the layers hold.
    assert run.params * run.repeat == sum(p.numel() for p in layers.parameters())


def test_meta_llama_7b_totals() -> None:
    model = zoo.build("llama-7b")
    summary = summarize(records_of(model))
    params = sum(p.numel() for p in model.parameters())
    assert summary.totals.params == params == summary.rows[0].params
    assert human_count(params) in str(summary)
    assert summary.totals.params_unique == params
    assert summary.totals.bytes_unique == sum(p.nbytes for p in model.parameters())


def test_deepseek_v3_summary_stays_small_and_visits_each_row_once() -> None:
    model = zoo.build("deepseek-v3")
    records = CountingRecords(records_of(model))
    summary = summarize(records)
    assert summary.totals.params == sum(p.numel() for p in model.parameters())
    # Identical experts and identical MoE layers collapse: a few dozen rows, not 60k.
    assert len(summary.rows) < 100
    assert records.calls["module_totals"] == len(summary.rows)
    assert records.calls["module_children"] <= len(summary.rows)
    assert records.calls.get("leaf_path", 0) == 0


class CountingRecords:
    """Records that count the calls made to each method."""

    def __init__(self, records: Any) -> None:
        self._records = records
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._records, name)

        def counted(*args: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args)

        return counted


def test_lazy_parameters_are_counted_apart() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.Linear(3, 2))
    summary = check_summary(model)
    lazy = [p for p in model.parameters() if is_lazy(p)]
    assert summary.totals.uninitialized == len(lazy) > 0
    assert summary.totals.params == sum(p.numel() for p in model[2].parameters())
    assert summary.rows[1].uninitialized == len(lazy) and summary.rows[1].params == 0


def test_frozen_parameters() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    summary = check_summary(model)
    assert summary.totals.frozen == sum(p.numel() for p in model[0].parameters())


def test_shared_module_positions_have_no_row_of_their_own() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    model.append(model[2])
    summary = check_summary(model)
    assert [row.path for row in summary.rows] == ["", "0", "1", "2", "3"]
    assert summary.rows[3].tied == ["2.weight", "2.bias"]
    assert summary.rows[0].tied == []


# --- ties -----------------------------------------------------------------------------------


def test_tied_gpt2_head_is_marked_where_it_appears() -> None:
    model = zoo.gpt2(config=zoo.GPT2Config(n_layer=2, vocab_size=100, n_positions=16, n_embd=8))
    summary = check_summary(model)
    weight = model.lm_head.weight
    assert weight is model.transformer.wte.weight
    (group,) = summary.ties
    assert group.names == ["transformer.wte.weight", "lm_head.weight"]
    assert group.kind == "shared"
    assert group.nbytes == group.overcount_nbytes == weight.nbytes
    rows = {row.path: row for row in summary.rows}
    assert rows["lm_head"].tied == ["lm_head.weight"]
    assert rows["transformer"].tied == ["transformer.wte.weight"]
    assert rows["transformer.wte"].tied == ["transformer.wte.weight"]
    assert rows[""].tied == []
    assert rows["transformer.h.0-1"].tied == []
    text = str(summary)
    assert "Tied" in text and "transformer.wte.weight = lm_head.weight" in text
    # Counted once in the totals, once in each row that holds it.
    assert summary.totals.params == sum(p.numel() for p in model.parameters())
    assert rows["lm_head"].params == weight.numel()


def test_views_of_one_storage() -> None:
    base = torch.zeros(4, 4)
    flat = torch.zeros(10)
    cases = {
        "alias": [nn.Parameter(base), nn.Parameter(base)],
        "overlap": [nn.Parameter(base), nn.Parameter(base.t())],
        "packed": [nn.Parameter(flat[:4]), nn.Parameter(flat[4:])],
    }
    for kind, (first, second) in cases.items():
        model = nn.Module()
        model.a, model.b = first, second
        summary = check_summary(model)
        (group,) = summary.ties
        assert (group.names, group.kind) == (["a", "b"], kind)
        storage_bytes = first.untyped_storage().nbytes()
        per_name = first.nbytes + second.nbytes
        assert group.nbytes == min(per_name, storage_bytes)
        assert group.overcount_nbytes == per_name - group.nbytes
        unique_bytes = per_name if kind == "packed" else storage_bytes
        assert summary.totals.bytes_unique == unique_bytes
        assert summary.totals.params_unique == unique_bytes // first.element_size()


def test_meta_tensors_make_no_false_ties() -> None:
    model = nn.Sequential(nn.Linear(2, 2, device="meta"), nn.Linear(2, 2, device="meta"))
    summary = check_summary(model)
    assert all(p.data_ptr() == 0 for p in model.parameters())
    assert summary.ties == []


# --- output forms ---------------------------------------------------------------------------


def test_to_dict_and_json() -> None:
    model = zoo.gpt2(config=zoo.GPT2Config(n_layer=2, vocab_size=100, n_positions=16, n_embd=8))
    summary = summarize(records_of(model))
    as_dict = summary.to_dict()
    assert set(as_dict) == {"rows", "totals", "ties"}
    row_fields = {"path", "type", "params", "trainable", "frozen", "bytes", "buffers"}
    assert row_fields | {"buffer_bytes", "repeat"} <= set(as_dict["rows"][0])
    assert set(as_dict["totals"]) == {
        "params",
        "params_unique",
        "bytes_unique",
        "trainable",
        "frozen",
        "uninitialized",
        "bytes",
        "buffers",
        "buffer_bytes",
        "bytes_by_dtype",
        "bytes_by_device",
        "local_params",
        "local_bytes",
        "bytes_by_file",
    }
    assert set(as_dict["ties"][0]) == {"names", "kind", "nbytes", "overcount_nbytes"}
    assert json.loads(summary.to_json()) == as_dict


def test_text_table_and_html() -> None:
    model = zoo.build("llama-7b")
    summary = summarize(records_of(model), depth=2)
    lines = str(summary).splitlines()
    header, rule = lines[0], lines[1]
    assert header.split()[:3] == ["Module", "Type", "Params"]
    assert set(rule) == {"-"}
    table = lines[2 : 2 + len(summary.rows)]
    # Figures align right: each row's params end where the header's "Params" ends.
    params_end = header.index("Params") + len("Params")
    for line, row in zip(table, summary.rows, strict=True):
        assert line[:params_end].endswith(human_count(row.params)), line
    assert human_bytes(summary.totals.bytes) in str(summary)
    html = summary._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == len(summary.rows) + 1


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (512, "512"),
        (999, "999"),
        (1000, "1.00 K"),
        (124_439_808, "124 M"),
        (999_999, "1.00 M"),
        (6_738_415_616, "6.74 B"),
        (671_026_404_352, "671 B"),
    ],
)
def test_human_count(count: int, text: str) -> None:
    assert human_count(count) == text


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(0, "0 B"), (512, "512 B"), (13_476_831_232, "13.5 GB"), (99_950, "100 kB")],
)
def test_human_bytes(nbytes: int, text: str) -> None:
    assert human_bytes(nbytes) == text


def test_rows_are_dataclasses_with_the_contract_fields() -> None:
    row = summarize(records_of(zoo.build("seed"))).rows[0]
    assert isinstance(row, SummaryRow) and row.path == "" and row.repeat == 1
