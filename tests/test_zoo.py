"""The built-in models: shapes, counts, ties, dtypes and devices, checked against their configs.

Expected counts are computed here from the configuration values, layer by
layer, and compared with what PyTorch itself counts on the built model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchwalk import zoo

TINY_DEEPSEEK = zoo.DeepseekV3Config(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=24,
    moe_intermediate_size=8,
    num_hidden_layers=3,
    first_k_dense_replace=1,
    n_routed_experts=4,
    num_attention_heads=2,
    q_lora_rank=12,
    kv_lora_rank=6,
    qk_nope_head_dim=4,
    qk_rope_head_dim=2,
    v_head_dim=4,
)


def pytorch_parameter_count(model: nn.Module) -> int:
    """Elements of every parameter, each object once, as PyTorch counts them."""
    return sum(param.numel() for param in model.parameters())


def gpt2_parameter_count(config: zoo.GPT2Config) -> int:
    """GPT-2's parameters from its config; the head is tied to the embedding, so counted once."""
    embed, inner = config.n_embd, config.n_inner
    layer_norm = 2 * embed
    attention = (embed * 3 * embed + 3 * embed) + (embed * embed + embed)
    mlp = (embed * inner + inner) + (inner * embed + embed)
    block = layer_norm + attention + layer_norm + mlp
    embeddings = config.vocab_size * embed + config.n_positions * embed
    return embeddings + config.n_layer * block + layer_norm


def llama_parameter_count(config: zoo.LlamaConfig) -> int:
    """Llama's parameters from its config: embedding, layers, final norm, untied head."""
    hidden = config.hidden_size
    attention = 4 * hidden * hidden
    mlp = 3 * hidden * config.intermediate_size
    layer = attention + mlp + 2 * hidden
    embedding = config.vocab_size * hidden
    return embedding + config.num_hidden_layers * layer + hidden + embedding


def deepseek_attention_parameters(config: zoo.DeepseekV3Config) -> int:
    """One MLA attention block's parameters."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    qk_head = config.qk_nope_head_dim + config.qk_rope_head_dim
    return (
        hidden * config.q_lora_rank
        + config.q_lora_rank
        + config.q_lora_rank * heads * qk_head
        + hidden * (config.kv_lora_rank + config.qk_rope_head_dim)
        + config.kv_lora_rank
        + config.kv_lora_rank * heads * (config.qk_nope_head_dim + config.v_head_dim)
        + heads * config.v_head_dim * hidden
    )


def deepseek_parameter_count(config: zoo.DeepseekV3Config) -> int:
    """DeepSeek-V3's parameters from its config (the router's bias is a buffer)."""
    hidden = config.hidden_size
    attention = deepseek_attention_parameters(config)
    dense_mlp = 3 * hidden * config.intermediate_size
    expert = 3 * hidden * config.moe_intermediate_size
    shared = 3 * hidden * config.moe_intermediate_size * config.n_shared_experts
    router = config.n_routed_experts * hidden
    moe = config.n_routed_experts * expert + router + shared
    norms = 2 * hidden
    dense_layers = config.first_k_dense_replace
    moe_layers = config.num_hidden_layers - dense_layers
    embedding = config.vocab_size * hidden
    return (
        embedding
        + dense_layers * (attention + dense_mlp + norms)
        + moe_layers * (attention + moe + norms)
        + hidden
        + embedding
    )


def deepseek_module_count(config: zoo.DeepseekV3Config) -> int:
    """DeepSeek-V3's modules from its config, the root included."""
    gated_mlp = 1 + 3  # the container and its three Linear
    attention = 1 + 7  # four projections' worth: q_a, q_a norm, q_b, kv_a, kv_a norm, kv_b, o
    norms = 2
    moe = 1 + 1 + config.n_routed_experts * gated_mlp + 1 + gated_mlp  # experts list, router
    dense_layer = 1 + attention + gated_mlp + norms
    moe_layer = 1 + attention + moe + norms
    top = 7  # ForCausalLM, model, embed_tokens, layers list, norm, rotary_emb, lm_head
    dense_layers = config.first_k_dense_replace
    return top + dense_layers * dense_layer + (config.num_hidden_layers - dense_layers) * moe_layer


@pytest.fixture(scope="module")
def deepseek() -> zoo.DeepseekV3ForCausalLM:
    return zoo.deepseek_v3()


def test_names_include_the_documented_models() -> None:
    assert {"seed", "gpt2", "llama-7b", "deepseek-v3", "chain"} <= set(zoo.names())


def test_unknown_name_raises_value_error_listing_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'gpt-5'.*seed, gpt2, llama-7b"):
        zoo.build("gpt-5")


@pytest.mark.parametrize("name", ["seed", "gpt2", "llama-7b", "chain"])
def test_built_on_meta_by_default(name: str) -> None:
    model = zoo.build(name)
    assert all(tensor.is_meta for tensor in (*model.parameters(), *model.buffers()))


def test_deepseek_built_on_meta_by_default(deepseek: zoo.DeepseekV3ForCausalLM) -> None:
    assert all(tensor.is_meta for tensor in (*deepseek.parameters(), *deepseek.buffers()))


def test_seed_is_the_seed_network() -> None:
    model = zoo.build("seed")
    assert type(model) is nn.Sequential
    assert [type(layer) for layer in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [(name, tuple(param.shape)) for name, param in model.named_parameters()] == [
        ("0.weight", (8, 4)),
        ("0.bias", (8,)),
        ("2.weight", (1, 8)),
        ("2.bias", (1,)),
    ]


def test_seed_on_cpu_is_reproducible_and_leaves_the_global_generator_alone() -> None:
    state = torch.get_rng_state()
    first, second = zoo.build("seed", device="cpu"), zoo.build("seed", device="cpu")
    assert torch.equal(state, torch.get_rng_state())
    for (_, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert a.device.type == "cpu"
        assert torch.equal(a, b)


def test_gpt2_counts_and_tied_head() -> None:
    model = zoo.gpt2()
    assert pytorch_parameter_count(model) == gpt2_parameter_count(zoo.GPT2_SMALL)
    assert model.lm_head.weight is model.transformer.wte.weight
    all_names = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    assert len(all_names) == len(list(model.parameters())) + 1
    assert all_names[-1] == "lm_head.weight"
    assert {param.dtype for param in model.parameters()} == {torch.float32}


def test_gpt2_uses_hugging_face_names() -> None:
    names = dict(zoo.build("gpt2").named_parameters())
    config = zoo.GPT2_SMALL
    assert names["transformer.h.0.attn.c_attn.weight"].shape == (3 * config.n_embd, config.n_embd)
    assert names["transformer.wpe.weight"].shape == (config.n_positions, config.n_embd)
    assert f"transformer.h.{config.n_layer - 1}.mlp.c_proj.bias" in names


def test_llama_counts_dtype_and_rotary_buffer() -> None:
    config = zoo.LLAMA_7B
    model = zoo.llama_7b()
    assert pytorch_parameter_count(model) == llama_parameter_count(config)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert {param.dtype for param in model.parameters()} == {torch.bfloat16}
    buffers = dict(model.named_buffers())
    assert list(buffers) == ["model.rotary_emb.inv_freq"]
    head_dim = config.hidden_size // config.num_attention_heads
    assert buffers["model.rotary_emb.inv_freq"].shape == (head_dim // 2,)
    assert buffers["model.rotary_emb.inv_freq"].dtype == torch.float32
    assert "model.rotary_emb.inv_freq" not in model.state_dict()
    assert "model.layers.0.self_attn.q_proj.weight" in model.state_dict()


def test_deepseek_counts(deepseek: zoo.DeepseekV3ForCausalLM) -> None:
    config = zoo.DEEPSEEK_V3
    assert pytorch_parameter_count(deepseek) == deepseek_parameter_count(config)
    assert len(list(deepseek.modules())) == deepseek_module_count(config)
    assert 55_000 < deepseek_module_count(config) < 65_000
    assert 660e9 < deepseek_parameter_count(config) < 680e9


def test_deepseek_dtypes_and_buffers(deepseek: zoo.DeepseekV3ForCausalLM) -> None:
    config = zoo.DEEPSEEK_V3
    assert {param.dtype for param in deepseek.parameters()} == {torch.bfloat16}
    buffers = dict(deepseek.named_buffers())
    biases = {name: buf for name, buf in buffers.items() if "e_score_correction_bias" in name}
    assert len(biases) == config.num_hidden_layers - config.first_k_dense_replace
    assert {(buf.shape, buf.dtype) for buf in biases.values()} == {
        ((config.n_routed_experts,), torch.float32)
    }
    assert buffers["model.rotary_emb.inv_freq"].shape == (config.qk_rope_head_dim // 2,)


def test_deepseek_layer_structure(deepseek: zoo.DeepseekV3ForCausalLM) -> None:
    config = zoo.DEEPSEEK_V3
    layers = deepseek.model.layers
    assert isinstance(layers[config.first_k_dense_replace - 1].mlp, zoo.GatedMLP)
    moe = layers[config.first_k_dense_replace].mlp
    assert isinstance(moe, zoo.DeepseekV3MoE)
    assert len(moe.experts) == config.n_routed_experts
    assert moe.gate.weight.shape == (config.n_routed_experts, config.hidden_size)
    last_expert = moe.experts[-1]
    assert type(last_expert.down_proj) is nn.Linear
    assert last_expert.down_proj.bias is None
    assert last_expert.down_proj.weight.shape == (
        config.hidden_size,
        config.moe_intermediate_size,
    )
    attention = layers[0].self_attn
    qk_head = config.qk_nope_head_dim + config.qk_rope_head_dim
    assert attention.q_b_proj.weight.shape == (
        config.num_attention_heads * qk_head,
        config.q_lora_rank,
    )


def test_deepseek_shares_no_module_or_tensor(deepseek: zoo.DeepseekV3ForCausalLM) -> None:
    every_module = [module for _, module in deepseek.named_modules(remove_duplicate=False)]
    assert len({id(module) for module in every_module}) == len(every_module)
    every_param = [param for _, param in deepseek.named_parameters(remove_duplicate=False)]
    storages = {param.untyped_storage()._cdata for param in every_param}
    assert len(storages) == len(every_param)


def test_copied_experts_have_their_own_hooks(deepseek: zoo.DeepseekV3ForCausalLM) -> None:
    moe = deepseek.model.layers[-1].mlp
    assert isinstance(moe, zoo.DeepseekV3MoE)
    first, second, third = list(moe.experts)[:3]
    second.register_forward_hook(lambda module, args, output: None)
    second.get_submodule("down_proj").register_forward_pre_hook(lambda module, args: None)
    assert len(second._forward_hooks) == 1
    assert len(first._forward_hooks) == len(third._forward_hooks) == 0
    assert len(third.get_submodule("down_proj")._forward_pre_hooks) == 0


def test_deepseek_on_meta_matches_the_constructed_model() -> None:
    def layout(model: nn.Module) -> list[tuple[str, str, tuple[int, ...], torch.dtype]]:
        return [
            (name, type(module).__name__, tuple(tensor.shape), tensor.dtype)
            for name, module in model.named_modules()
            for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False))
        ]

    on_meta = zoo.deepseek_v3(device="meta", config=TINY_DEEPSEEK)
    on_cpu = zoo.deepseek_v3(device="cpu", config=TINY_DEEPSEEK)
    assert layout(on_meta) == layout(on_cpu)
    assert on_meta.state_dict().keys() == on_cpu.state_dict().keys()
    assert pytorch_parameter_count(on_cpu) == deepseek_parameter_count(TINY_DEEPSEEK)
    assert len(list(on_cpu.modules())) == deepseek_module_count(TINY_DEEPSEEK)


def test_chain_depth_and_parameters() -> None:
    links = [zoo.chain()]
    while hasattr(links[-1], "inner"):
        links.append(links[-1].inner)
    assert len(links) == zoo.CHAIN_DEPTH
    assert all(type(link) is zoo.ChainLink for link in links)
    assert all(link.scale.shape == (4,) for link in links)


def test_chain_rejects_zero_depth() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        zoo.chain(depth=0)
