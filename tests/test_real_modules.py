"""Real models from torch.nn (and transformers, when installed) walk as PyTorch walks them.

These are the modules users have: their own classes, hooks, parametrizations,
wrappers that override attribute access. Every drop-in and every flag
combination is compared with the model's own methods.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from helpers.module_trees import check_every_dropin
from torch import nn


def transformer_encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=3, norm=nn.LayerNorm(8))


def transformer() -> nn.Module:
    return nn.Transformer(
        d_model=8,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=16,
        batch_first=True,
    )


def lstm() -> nn.Module:
    return nn.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=3)


def gru_after_flatten() -> nn.Module:
    gru = nn.GRU(4, 8, num_layers=2)
    gru.flatten_parameters()
    return gru


def batch_norms() -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm1d(4),
        nn.BatchNorm2d(4, affine=False),
        nn.BatchNorm3d(4, track_running_stats=False),
        nn.SyncBatchNorm(4),
        nn.LazyBatchNorm1d(),
    )


def multihead_attention() -> nn.Module:
    return nn.ModuleDict(
        {
            "packed": nn.MultiheadAttention(8, 2),
            "separate": nn.MultiheadAttention(8, 2, kdim=4, vdim=5, add_bias_kv=True),
            "no_bias": nn.MultiheadAttention(8, 2, bias=False, batch_first=True),
        }
    )


def convolutional_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.GroupNorm(2, 4),
        nn.ConvTranspose2d(4, 4, 2),
        nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Bilinear(4, 4, 2),
    )


def weight_normalised() -> nn.Module:
    return nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Linear(3, 3)),
        nn.utils.parametrizations.spectral_norm(nn.Linear(3, 3)),
        nn.utils.parametrizations.orthogonal(nn.Linear(3, 3)),
    )


def legacy_spectral_norm() -> nn.Module:
    """The hook-based spectral norm: `weight` is a plain attribute, with buffers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nn.Sequential(nn.utils.spectral_norm(nn.Linear(3, 3)), nn.ReLU())


def meta_device_model() -> nn.Module:
    with torch.device("meta"):
        return transformer_encoder()


def embedding_bag_with_tied_head() -> nn.Module:
    embedding = nn.Embedding(10, 4, padding_idx=0)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    return nn.ModuleDict({"embedding": embedding, "bag": nn.EmbeddingBag(10, 4), "head": head})


def traced_graph_module() -> nn.Module:
    return torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))


def compiled_module() -> nn.Module:
    """torch.compile's wrapper: it overrides __getattr__ and holds `_orig_mod`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.compile(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), backend="eager")


MODELS: list[Callable[[], nn.Module]] = [
    transformer_encoder,
    transformer,
    lstm,
    gru_after_flatten,
    batch_norms,
    multihead_attention,
    convolutional_net,
    weight_normalised,
    legacy_spectral_norm,
    meta_device_model,
    embedding_bag_with_tied_head,
    traced_graph_module,
    compiled_module,
]


@pytest.mark.parametrize("build", MODELS, ids=lambda build: build.__name__)
def test_torch_nn_model_matches_pytorch(build: Callable[[], nn.Module]) -> None:
    check_every_dropin(build())


def test_model_after_a_forward_pass_matches_pytorch() -> None:
    """Lazy modules materialise their parameters on the first forward."""
    model = nn.Sequential(nn.LazyLinear(4), nn.LazyBatchNorm1d(), nn.ReLU(), nn.LazyLinear(2))
    check_every_dropin(model)
    model(torch.zeros(3, 5))
    check_every_dropin(model)


# --- transformers ----------------------------------------------------------------------


def test_gpt2_matches_pytorch(transformers_offline) -> None:  # noqa: ANN001
    config = transformers_offline.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=8, n_layer=2, n_head=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers_offline.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    check_every_dropin(model)


def test_llama_matches_pytorch(transformers_offline) -> None:  # noqa: ANN001
    config = transformers_offline.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers_offline.LlamaForCausalLM(config)
    check_every_dropin(model)
