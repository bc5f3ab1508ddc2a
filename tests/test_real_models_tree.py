"""The snapshot, ties and summary on model definitions we did not write.

torch.nn's own models and transformers' GPT-2 and Llama (built from configs,
no download). PyTorch is the oracle: its views, its parameter counts and its
storage identity; the C++ records must also equal the pure-Python oracle's.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import assert_same_items
from test_real_modules import MODELS
from test_records import assert_same_records
from torch import nn


def storage_classes(model: nn.Module) -> list[list[str]]:
    """Names held at every position, grouped by shared storage (2 or more), by first name."""
    positions = list(model.named_parameters(remove_duplicate=False))
    positions += list(model.named_buffers(remove_duplicate=False))
    by_storage: dict[int, list[str]] = {}
    for name, tensor in positions:
        # A lazy tensor refuses untyped_storage(); its storage is its own.
        key = id(tensor) if nn.parameter.is_lazy(tensor) else tensor.untyped_storage()._cdata
        by_storage.setdefault(key, []).append(name)
    return sorted(sorted(names) for names in by_storage.values() if len(names) > 1)


def check_snapshot(model: nn.Module) -> None:
    tree = tw.walk(model)
    assert_same_items(tree.named_parameters(), list(model.named_parameters()), named=True)
    assert_same_items(tree.named_buffers(), list(model.named_buffers()), named=True)
    assert_same_items(tree.named_modules(), list(model.named_modules()), named=True)
    assert sorted(sorted(group.names) for group in tree.ties()) == storage_classes(model)
    totals = tree.summary().totals
    parameters = [p for p in model.parameters() if not nn.parameter.is_lazy(p)]
    assert totals.params == sum(p.numel() for p in parameters)
    assert totals.trainable == sum(p.numel() for p in parameters if p.requires_grad)
    assert totals.buffers == sum(b.numel() for b in model.buffers() if not nn.parameter.is_lazy(b))
    assert_same_records(model, buffers=True)


@pytest.mark.parametrize("build", MODELS, ids=lambda build: build.__name__)
def test_torch_nn_models(build: Callable[[], nn.Module]) -> None:
    check_snapshot(build())


def build_quietly(model_class: Any, config: Any) -> nn.Module:
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return model_class(config)  # type: ignore[no-any-return]


def test_gpt2_ties_its_head_and_collapses_its_blocks(transformers_offline: Any) -> None:
    config = transformers_offline.GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=1000)
    model = build_quietly(transformers_offline.GPT2LMHeadModel, config)
    check_snapshot(model)
    (group,) = tw.ties(model)
    assert group.names == ["transformer.wte.weight", "lm_head.weight"]
    assert group.kind == "shared"
    rows = {row.path: row for row in tw.summary(model).rows}
    blocks = rows["transformer.h.0-3"]
    assert blocks.repeat == 4
    assert blocks.params == sum(p.numel() for p in model.transformer.h[0].parameters())


def test_llama_summary_rows_count_like_pytorch(transformers_offline: Any) -> None:
    config = transformers_offline.LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = build_quietly(transformers_offline.LlamaForCausalLM, config)
    check_snapshot(model)
    summary = tw.summary(model)
    for row in summary.rows:
        if row.repeat == 1 and row.path and "-" not in row.path:
            module = model.get_submodule(row.path)
            assert row.params == sum(p.numel() for p in module.parameters()), row.path
    assert not tw.ties(model)
    assert list(itertools.islice((r.path for r in summary.rows), 1)) == [""]
