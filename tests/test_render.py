"""The tree drawing: the seed's drawing line by line, references, runs, depth."""

from __future__ import annotations

import warnings

import pytest
from helpers.module_trees import module_trees
from helpers.tree_oracle import records_of
from hypothesis import given
from torch import nn
from torchwalk import zoo
from torchwalk.drawing import render_records
from torchwalk.summary_table import human_count

# The seed's drawing, as docs/api.md shows it.
SEED_DRAWING = """\
net (Sequential)
├─ 0: Linear
│  ├─ weight (8, 4)
│  └─ bias (8,)
├─ 1: ReLU (no params)
└─ 2: Linear
   ├─ weight (1, 8)
   └─ bias (1,)"""

ASCII_FOR_BOX = {"├─": "|-", "└─": "`-", "│": "|", "→": "->", "×": "x", "…": "..."}


def to_ascii(drawing: str) -> str:
    for box, plain in ASCII_FOR_BOX.items():
        drawing = drawing.replace(box, plain)
    return drawing


def small_llama() -> nn.Module:
    config = zoo.LlamaConfig(
        vocab_size=10,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
    )
    return zoo.llama_7b(config=config)


def test_seed_draws_as_the_contract_says() -> None:
    drawing = render_records(records_of(zoo.build("seed")), name="net")
    assert drawing.splitlines() == SEED_DRAWING.splitlines()
    assert drawing == SEED_DRAWING


def test_seed_in_ascii() -> None:
    drawing = render_records(records_of(zoo.build("seed")), name="net", ascii=True)
    assert drawing == to_ascii(SEED_DRAWING)
    assert drawing.isascii()


def test_without_a_name_the_first_line_is_the_type() -> None:
    drawing = render_records(records_of(zoo.build("seed")))
    assert drawing.splitlines()[0] == "Sequential"
    assert drawing.splitlines()[1:] == SEED_DRAWING.splitlines()[1:]


def test_shared_module_is_drawn_once_then_referenced() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    net.append(net[2])
    lines = render_records(records_of(net), name="net").splitlines()
    assert lines[-1] == "└─ 4: Linear → same module as 2"
    assert lines.count("│  ├─ weight (8, 8)") == 1
    ascii_lines = render_records(records_of(net), name="net", ascii=True).splitlines()
    assert ascii_lines[-1] == "`- 4: Linear -> same module as 2"


def test_tied_tensor_points_at_its_first_name() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    net[2].weight = net[0].weight
    shape = tuple(net[0].weight.shape)
    lines = render_records(records_of(net)).splitlines()
    assert f"   ├─ weight {shape} → tied to 0.weight" in lines
    assert f"│  ├─ weight {shape}" in lines  # the first name carries no reference
    assert f"weight {shape} -> tied to 0.weight" in render_records(records_of(net), ascii=True)


def test_tied_gpt2_head() -> None:
    model = zoo.gpt2(config=zoo.GPT2Config(n_layer=2, vocab_size=100, n_positions=16, n_embd=8))
    lines = render_records(records_of(model)).splitlines()
    shape = tuple(model.lm_head.weight.shape)
    assert lines[-2:] == [
        "└─ lm_head: Linear",
        f"   └─ weight {shape} → tied to transformer.wte.weight",
    ]


def test_lazy_parameter() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = nn.Sequential(nn.LazyLinear(3))
    assert render_records(records_of(net)).splitlines() == [
        "Sequential",
        "└─ 0: LazyLinear",
        "   ├─ weight (uninitialized)",
        "   └─ bias (uninitialized)",
    ]


def test_lazy_parameter_held_twice_is_tied() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = nn.Sequential(nn.LazyLinear(3), nn.ReLU())
    net[1].w = net[0].weight
    lines = render_records(records_of(net)).splitlines()
    assert lines[-1] == "   └─ w (uninitialized) → tied to 0.weight"


def test_buffers_are_marked() -> None:
    lines = render_records(records_of(nn.Sequential(nn.BatchNorm1d(3)))).splitlines()
    assert "   ├─ running_mean (3,) [buffer]" in lines
    assert "   └─ num_batches_tracked () [buffer]" in lines
    without_buffers = render_records(records_of(nn.Sequential(nn.BatchNorm1d(3)), buffers=False))
    assert "[buffer]" not in without_buffers


def test_identical_layers_collapse_and_are_drawn_once() -> None:
    model = small_llama()
    layers = model.model.layers
    drawing = render_records(records_of(model))
    lines = drawing.splitlines()
    run = f"layers.0-{len(layers) - 1}: {len(layers)} × {type(layers[0]).__name__}"
    assert f"│  ├─ {run}" in lines
    assert sum("q_proj" in line for line in lines) == 1
    assert f"{len(layers)} x {type(layers[0]).__name__}" in render_records(
        records_of(model), ascii=True
    )


def test_a_run_among_other_children_keeps_its_container() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 3))
    lines = render_records(records_of(net)).splitlines()
    assert lines[1] == "├─ 0-1: 2 × Linear"
    assert lines[4] == "└─ 2: Linear"


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_depth_cuts_and_counts_what_is_hidden(depth: int) -> None:
    model = small_llama()
    lines = render_records(records_of(model), depth=depth).splitlines()
    hidden = [line for line in lines if "hidden" in line]
    assert hidden
    if depth == 0:
        positions = list(nn.Module.named_modules(model, remove_duplicate=False))
        params = sum(p.numel() for p in model.parameters())
        buffers = sum(b.numel() for b in model.buffers())
        assert lines == [
            "LlamaForCausalLM",
            f"└─ … {len(positions) - 1} modules, {human_count(params)} params, "
            f"{human_count(buffers)} buffer elements hidden",
        ]
    if depth == 1:
        inner = model.model
        positions = list(nn.Module.named_modules(inner, remove_duplicate=False))
        params = sum(p.numel() for p in inner.parameters())
        buffers = sum(b.numel() for b in inner.buffers())
        assert lines[:2] == [
            "LlamaForCausalLM",
            "├─ model: LlamaModel",
        ]
        assert lines[2] == (
            f"│  └─ … {len(positions) - 1} modules, {human_count(params)} params, "
            f"{human_count(buffers)} buffer elements hidden"
        )
        # A module whose leaves alone are below the cut counts just them.
        assert lines[-2:] == [
            "└─ lm_head: Linear",
            f"   └─ … {human_count(model.lm_head.weight.numel())} params hidden",
        ]
    assert "..." in render_records(records_of(model), depth=depth, ascii=True)


def test_negative_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        render_records(records_of(zoo.build("seed")), depth=-1)


def test_deep_chain_draws_without_recursion() -> None:
    depth = 1500  # deeper than Python's default recursion limit
    lines = render_records(records_of(zoo.chain(depth=depth))).splitlines()
    # The root line, then for each link its parameter, and below the root each link's line.
    assert len(lines) == 2 * depth
    assert lines[-1].endswith("└─ scale (4,)")


def assert_labels_cover(labels: list[str], children: list[str]) -> None:
    """Each label is the next child's name, or ``first-last`` for a run of them."""
    remaining = iter(children)
    for label in labels:
        first, _, last = label.partition("-") if label not in children else (label, "", "")
        assert next(remaining) == first, f"{label!r} is not the next child of {children}"
        if last:
            assert last in children, f"run {label!r} does not end at a child"
            while next(remaining) != last:
                pass
    assert next(remaining, None) is None, f"children missing from the drawing: {labels}"


@given(module_trees())
def test_random_trees_draw(root: nn.Module) -> None:
    records = records_of(root)
    drawing = render_records(records, name="root")
    lines = drawing.splitlines()
    assert lines[0] == f"root ({type(root).__name__})"
    # The root's children are drawn below it in order, each on its own line or
    # inside the line of a collapsed run ("first-last: n × Type").
    labels = [
        line[3:].split(": ")[0] for line in lines[1:] if line[:3] in ("├─ ", "└─ ") and ": " in line
    ]
    children = [name for name, child in root._modules.items() if child is not None]
    assert_labels_cover(labels, children)
    plain = render_records(records, name="root", ascii=True)
    assert not set(plain) & set("├└│→×…")
    assert len(plain.splitlines()) == len(lines)
    cut = render_records(records, depth=0).splitlines()
    assert len(cut) <= 2
