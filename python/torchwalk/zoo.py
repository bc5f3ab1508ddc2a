"""Built-in models, by name, for the command line, the benchmarks and the tests.

Each builder returns an ``nn.Module`` made of plain ``torch.nn`` layers whose
module tree, names, shapes, dtypes and weight ties follow the published model
(the names are those of the Hugging Face checkpoints, e.g.
``model.layers.0.self_attn.q_proj.weight``). Models are built on the meta
device by default, so even the 671 B-parameter DeepSeek-V3 shape allocates no
tensor memory. The classes describe structure only: they have no ``forward``.

    >>> from torchwalk import zoo
    >>> zoo.names()
    ['seed', 'gpt2', 'llama-7b', 'deepseek-v3', 'chain']
    >>> model = zoo.build("llama-7b")
    >>> sum(p.numel() for p in model.parameters())
    6738415616
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from torchwalk.gc_pause import gc_paused

Device = torch.device | str


@dataclass(frozen=True)
class GPT2Config:
    """The shape of a GPT-2 model; the defaults are GPT-2 small (124 M parameters)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int = 3072
    layer_norm_epsilon: float = 1e-5


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a Llama model; the defaults are Llama 2 7B (6.74 B parameters)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    dtype: torch.dtype = torch.bfloat16


@dataclass(frozen=True)
class DeepseekV3Config:
    """The shape of a DeepSeek-V3 model; the defaults are DeepSeek-V3 (671 B parameters)."""

    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 61
    first_k_dense_replace: int = 3
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_attention_heads: int = 128
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    dtype: torch.dtype = torch.bfloat16


GPT2_SMALL = GPT2Config()
LLAMA_7B = LlamaConfig()
DEEPSEEK_V3 = DeepseekV3Config()

CHAIN_DEPTH = 900
"""Default depth of :func:`chain`: just inside Python's default recursion limit of 1000."""


# -- GPT-2 ------------------------------------------------------------------------------------


class GPT2Attention(nn.Module):
    """GPT-2 self-attention: fused query/key/value projection and output projection.

    Hugging Face stores these as ``Conv1D`` with the weight transposed; here they
    are ``nn.Linear``, with the same names and parameter counts.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(0.1)
        self.resid_dropout = nn.Dropout(0.1)


class GPT2MLP(nn.Module):
    """GPT-2 feed-forward block: expansion, GELU (a function), projection."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.n_inner)
        self.c_proj = nn.Linear(config.n_inner, config.n_embd)
        self.dropout = nn.Dropout(0.1)


class GPT2Block(nn.Module):
    """One pre-norm GPT-2 transformer block."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)


class GPT2Model(nn.Module):
    """GPT-2 body: token and position embeddings, the blocks, the final LayerNorm."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(0.1)
        self.h = nn.ModuleList(GPT2Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class GPT2LMHeadModel(nn.Module):
    """GPT-2 with its language-model head, whose weight *is* the token embedding's."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight


# -- Llama and DeepSeek-V3 share these --------------------------------------------------------


class RotaryEmbedding(nn.Module):
    """Rotary position embedding: only the ``inv_freq`` buffer, non-persistent as in Hugging Face.

    ``inv_freq`` is float32 whatever the model's dtype, and is left out of the
    state dict (it is recomputed, never loaded).
    """

    inv_freq: torch.Tensor

    def __init__(self, rotary_dim: int, theta: float) -> None:
        super().__init__()
        exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim
        self.register_buffer("inv_freq", 1.0 / theta**exponents, persistent=False)


class GatedMLP(nn.Module):
    """SwiGLU feed-forward block (``gate_proj``, ``up_proj``, ``down_proj``; SiLU is a function).

    The MLP of Llama, and of DeepSeek-V3's dense layers, routed experts and shared expert.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False, dtype=dtype)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False, dtype=dtype)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False, dtype=dtype)


# -- Llama ------------------------------------------------------------------------------------


class LlamaAttention(nn.Module):
    """Llama multi-head attention: four bias-free projections."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        hidden, dtype = config.hidden_size, config.dtype
        self.q_proj = nn.Linear(hidden, hidden, bias=False, dtype=dtype)
        self.k_proj = nn.Linear(hidden, hidden, bias=False, dtype=dtype)
        self.v_proj = nn.Linear(hidden, hidden, bias=False, dtype=dtype)
        self.o_proj = nn.Linear(hidden, hidden, bias=False, dtype=dtype)


class LlamaDecoderLayer(nn.Module):
    """One Llama decoder layer: RMSNorm, attention, RMSNorm, gated MLP."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        hidden, dtype = config.hidden_size, config.dtype
        self.self_attn = LlamaAttention(config)
        self.mlp = GatedMLP(hidden, config.intermediate_size, dtype)
        self.input_layernorm = nn.RMSNorm(hidden, eps=config.rms_norm_eps, dtype=dtype)
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=config.rms_norm_eps, dtype=dtype)


class LlamaModel(nn.Module):
    """Llama body: token embedding, decoder layers, final RMSNorm, rotary embedding."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        hidden, dtype = config.hidden_size, config.dtype
        self.embed_tokens = nn.Embedding(config.vocab_size, hidden, dtype=dtype)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = nn.RMSNorm(hidden, eps=config.rms_norm_eps, dtype=dtype)
        head_dim = hidden // config.num_attention_heads
        self.rotary_emb = RotaryEmbedding(head_dim, config.rope_theta)


class LlamaForCausalLM(nn.Module):
    """Llama with its (untied) language-model head."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(
            config.hidden_size, config.vocab_size, bias=False, dtype=config.dtype
        )


# -- DeepSeek-V3 ------------------------------------------------------------------------------


class DeepseekV3Attention(nn.Module):
    """Multi-head latent attention (MLA): low-rank query and key/value projections."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        hidden, heads, dtype = config.hidden_size, config.num_attention_heads, config.dtype
        qk_head_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
        self.q_a_proj = nn.Linear(hidden, config.q_lora_rank, bias=False, dtype=dtype)
        self.q_a_layernorm = nn.RMSNorm(config.q_lora_rank, eps=config.rms_norm_eps, dtype=dtype)
        self.q_b_proj = nn.Linear(config.q_lora_rank, heads * qk_head_dim, bias=False, dtype=dtype)
        self.kv_a_proj_with_mqa = nn.Linear(
            hidden, config.kv_lora_rank + config.qk_rope_head_dim, bias=False, dtype=dtype
        )
        self.kv_a_layernorm = nn.RMSNorm(config.kv_lora_rank, eps=config.rms_norm_eps, dtype=dtype)
        self.kv_b_proj = nn.Linear(
            config.kv_lora_rank,
            heads * (config.qk_nope_head_dim + config.v_head_dim),
            bias=False,
            dtype=dtype,
        )
        self.o_proj = nn.Linear(heads * config.v_head_dim, hidden, bias=False, dtype=dtype)


class DeepseekV3TopkRouter(nn.Module):
    """The MoE router: a gate weight per expert, and the float32 score-correction bias buffer.

    As in Hugging Face's ``DeepseekV3TopkRouter``, ``e_score_correction_bias`` is a
    persistent buffer (it is in the checkpoint), not a parameter.
    """

    e_score_correction_bias: torch.Tensor

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(config.n_routed_experts, config.hidden_size, dtype=config.dtype)
        )
        self.register_buffer(
            "e_score_correction_bias", torch.zeros(config.n_routed_experts, dtype=torch.float32)
        )


class DeepseekV3MoE(nn.Module):
    """Mixture of experts: the routed experts, their router and the shared expert(s)."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        hidden, dtype = config.hidden_size, config.dtype
        intermediate = config.moe_intermediate_size
        self.experts = nn.ModuleList(
            _replicas(lambda: GatedMLP(hidden, intermediate, dtype), config.n_routed_experts)
        )
        self.gate = DeepseekV3TopkRouter(config)
        self.shared_experts = GatedMLP(hidden, intermediate * config.n_shared_experts, dtype)


class DeepseekV3DecoderLayer(nn.Module):
    """One DeepSeek-V3 decoder layer: MLA attention and a dense MLP or a mixture of experts."""

    def __init__(self, config: DeepseekV3Config, layer_index: int) -> None:
        super().__init__()
        hidden, dtype = config.hidden_size, config.dtype
        self.self_attn = DeepseekV3Attention(config)
        self.mlp: nn.Module
        if layer_index < config.first_k_dense_replace:
            self.mlp = GatedMLP(hidden, config.intermediate_size, dtype)
        else:
            self.mlp = DeepseekV3MoE(config)
        self.input_layernorm = nn.RMSNorm(hidden, eps=config.rms_norm_eps, dtype=dtype)
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=config.rms_norm_eps, dtype=dtype)


class DeepseekV3Model(nn.Module):
    """DeepSeek-V3 body: token embedding, decoder layers, final RMSNorm, rotary embedding."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        hidden, dtype = config.hidden_size, config.dtype
        self.embed_tokens = nn.Embedding(config.vocab_size, hidden, dtype=dtype)
        self.layers = nn.ModuleList(
            DeepseekV3DecoderLayer(config, index) for index in range(config.num_hidden_layers)
        )
        self.norm = nn.RMSNorm(hidden, eps=config.rms_norm_eps, dtype=dtype)
        self.rotary_emb = RotaryEmbedding(config.qk_rope_head_dim, config.rope_theta)


class DeepseekV3ForCausalLM(nn.Module):
    """DeepSeek-V3 with its untied language-model head (no multi-token-prediction layer)."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        self.model = DeepseekV3Model(config)
        self.lm_head = nn.Linear(
            config.hidden_size, config.vocab_size, bias=False, dtype=config.dtype
        )


def _replicas(build_one: Callable[[], nn.Module], count: int) -> list[nn.Module]:
    """``count`` independent modules built by ``build_one``, quickly when they are on meta.

    Constructing an ``nn.Linear`` costs about 100 us, most of it initialising
    parameters, which on the meta device does nothing; DeepSeek-V3 has 44,544
    expert ``Linear`` modules. So only the first replica is constructed and, on
    meta, the others are copies of it made by :func:`_meta_copier`.
    """
    first = build_one()
    if not all(tensor.is_meta for tensor in (*first.parameters(), *first.buffers())):
        return [first, *(build_one() for _ in range(count - 1))]
    copy = _meta_copier(first)
    return [first, *(copy() for _ in range(count - 1))]


_TensorSpec = tuple[torch.Size, torch.dtype, bool] | None
"""Shape, dtype and ``requires_grad`` of a tensor to create, or None for a ``None`` entry."""


def _meta_copier(template: nn.Module) -> Callable[[], nn.Module]:
    """A function that makes copies of a meta-device module without calling ``__init__``.

    A copy is of the same class with the same attributes, except that its
    parameters, buffers and submodules are new objects of the same shapes and
    dtypes, and every other container (the hook dicts, the set of
    non-persistent buffers) is a copy, so that nothing is shared with
    ``template``. The template's tensors are read once, here: inside
    ``with torch.device(...)`` every tensor attribute read is a Python call.
    """
    template_state = template.__dict__
    container_keys = [
        key for key, value in template_state.items() if type(value) in _COPIED_CONTAINER_TYPES
    ]
    parameter_specs = {name: _spec(param) for name, param in template._parameters.items()}
    buffer_specs = {name: _spec(buffer) for name, buffer in template._buffers.items()}
    child_copiers = {
        name: None if child is None else _meta_copier(child)
        for name, child in template._modules.items()
    }

    def copy() -> nn.Module:
        state = template_state.copy()
        for key in container_keys:
            state[key] = template_state[key].copy()
        state["_parameters"] = {
            name: None if spec is None else nn.Parameter(_meta_tensor(spec), spec[2])
            for name, spec in parameter_specs.items()
        }
        state["_buffers"] = {
            name: None if spec is None else _meta_tensor(spec)
            for name, spec in buffer_specs.items()
        }
        state["_modules"] = {
            name: None if copy_child is None else copy_child()
            for name, copy_child in child_copiers.items()
        }
        replica = object.__new__(type(template))
        replica.__dict__.update(state)  # not `__dict__ =`, which would run Module.__setattr__
        return replica

    return copy


_COPIED_CONTAINER_TYPES = (dict, OrderedDict, set, list)
"""The types of the per-instance containers that :func:`_meta_copier` copies (exact types)."""


def _spec(tensor: torch.Tensor | None) -> _TensorSpec:
    """What :func:`_meta_tensor` needs to make a tensor like ``tensor``."""
    return None if tensor is None else (tensor.shape, tensor.dtype, tensor.requires_grad)


def _meta_tensor(spec: tuple[torch.Size, torch.dtype, bool]) -> torch.Tensor:
    """A new contiguous meta tensor of the shape and dtype in ``spec``.

    ``torch.empty_like`` would do, but on meta it runs a Python decomposition
    that is 20 times slower than ``torch.empty``.
    """
    shape, dtype, _ = spec
    return torch.empty(shape, dtype=dtype, device="meta")


# -- the benchmark chain ----------------------------------------------------------------------


class ChainLink(nn.Module):
    """One link of :func:`chain`: a small ``scale`` parameter and (unless last) the next link."""

    def __init__(self, inner: ChainLink | None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        if inner is not None:
            self.inner = inner


# -- builders ---------------------------------------------------------------------------------


def seed(device: Device = "meta") -> nn.Sequential:
    """The seed's network: ``nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))``.

    Its weights are drawn on the CPU from a fixed seed (without disturbing the
    global random state), then moved to ``device``.

    Args:
        device (torch.device or str): where the tensors live. Default: ``"meta"``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        network = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return network.to(device)


def gpt2(device: Device = "meta", config: GPT2Config = GPT2_SMALL) -> GPT2LMHeadModel:
    """GPT-2 (``GPT2LMHeadModel``), by default small: 124,439,808 parameters, float32.

    ``lm_head.weight`` is ``transformer.wte.weight`` (tied). 152 modules.

    Args:
        device (torch.device or str): where the tensors live. Default: ``"meta"``.
        config (GPT2Config): the shape. Default: GPT-2 small.
    """
    with torch.device(device):
        return GPT2LMHeadModel(config)


def llama_7b(device: Device = "meta", config: LlamaConfig = LLAMA_7B) -> LlamaForCausalLM:
    """Llama 2 7B (``LlamaForCausalLM``): 6,738,415,616 parameters, bfloat16, untied head.

    One buffer, ``model.rotary_emb.inv_freq`` (64 float32, non-persistent).

    Args:
        device (torch.device or str): where the tensors live. Default: ``"meta"``.
        config (LlamaConfig): the shape. Default: Llama 2 7B.
    """
    with torch.device(device):
        return LlamaForCausalLM(config)


def deepseek_v3(
    device: Device = "meta", config: DeepseekV3Config = DEEPSEEK_V3
) -> DeepseekV3ForCausalLM:
    """DeepSeek-V3 (``DeepseekV3ForCausalLM``): 671,026,404,352 parameters, bfloat16.

    61 layers, the first 3 with a dense MLP, the other 58 a mixture of 256
    routed experts and 1 shared expert; untied head; 60,488 modules. Each MoE
    layer's router holds a float32 ``e_score_correction_bias`` buffer (58
    buffers of 256, plus the rotary ``inv_freq``). Built on meta in about a
    second: see :func:`_replicas` and :func:`torchwalk.gc_pause.gc_paused`.

    Args:
        device (torch.device or str): where the tensors live. Default: ``"meta"``.
        config (DeepseekV3Config): the shape. Default: DeepSeek-V3.
    """
    with gc_paused(), torch.device(device):
        return DeepseekV3ForCausalLM(config)


def chain(device: Device = "meta", depth: int = CHAIN_DEPTH) -> ChainLink:
    """A chain of ``depth`` nested :class:`ChainLink` modules, each with a 4-element parameter.

    Module names are ``inner``, ``inner.inner``, ...; PyTorch's recursive walk
    needs one Python frame per level, so the default depth is close to the
    interpreter's limit.

    Args:
        device (torch.device or str): where the tensors live. Default: ``"meta"``.
        depth (int): the number of links. Default: 900.
    """
    if depth < 1:
        raise ValueError(f"chain depth must be at least 1, got {depth}")
    with torch.device(device):
        link = ChainLink(None)
        for _ in range(depth - 1):
            link = ChainLink(link)
    return link


_BUILDERS: dict[str, Callable[[Device], nn.Module]] = {
    "seed": seed,
    "gpt2": gpt2,
    "llama-7b": llama_7b,
    "deepseek-v3": deepseek_v3,
    "chain": chain,
}


def names() -> list[str]:
    """The names of the built-in models, in the order the benchmarks use."""
    return list(_BUILDERS)


def build(name: str, device: Device = "meta") -> nn.Module:
    """Build the built-in model called ``name``.

    Args:
        name (str): one of :func:`names`.
        device (torch.device or str): where the tensors live. Default: ``"meta"``,
            which allocates no memory for them.

    Returns:
        nn.Module: a new model.

    Raises:
        ValueError: if ``name`` is not a built-in model; the message lists them.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(_BUILDERS)}") from None
    return builder(device)
