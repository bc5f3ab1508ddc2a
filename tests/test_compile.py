"""Under torch.compile, torchwalk changes nothing: the same results, the same graph breaks.

A forward that walks its own module, through the drop-ins or through
``nn.Module``'s methods while ``install()`` is active (as Hugging Face models
do for ``self.dtype``), is compiled and compared with the same forward
compiled without torchwalk: its output bit for bit, and the graph breaks
``torch._dynamo.explain`` counts. Eager calls must stay on the C++ path.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import python_code_run_by, run_child
from torch import nn
from torchwalk.installation import is_installed

# Dynamo is what these tests are about; the backend only runs its graphs. The
# default backend (inductor) compiles the real models below.
BACKEND = "eager"


class ReadsItself(nn.Module):
    """Reads its own parameters, buffers and modules in ``forward``, through nn.Module's methods."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
        self.norm = nn.LayerNorm(4)
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.parameters()).dtype
        count = sum(p.numel() for p in self.parameters(recurse=True))
        for _, buffer in self.named_buffers():
            x = x * buffer
        for buffer in self.buffers():
            x = x + buffer.mean()
        for name, parameter in self.named_parameters(prefix="model"):
            if name.endswith("bias"):
                x = x + parameter.sum()
        modules = len(list(self.modules())) + len(list(self.named_modules(remove_duplicate=False)))
        children = len(list(self.children())) + len([n for n, _ in self.named_children()])
        return self.norm(self.encoder(x.to(dtype))) * count + modules + children


class ReadsItselfThroughDropIns(ReadsItself):
    """The same forward, written with torchwalk's functions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(tw.parameters(self)).dtype
        count = sum(p.numel() for p in tw.parameters(self, recurse=True))
        for _, buffer in tw.named_buffers(self):
            x = x * buffer
        for buffer in tw.buffers(self):
            x = x + buffer.mean()
        for name, parameter in tw.named_parameters(self, prefix="model"):
            if name.endswith("bias"):
                x = x + parameter.sum()
        modules = len(list(tw.modules(self))) + len(
            list(tw.named_modules(self, remove_duplicate=False))
        )
        children = len(list(tw.children(self))) + len([n for n, _ in tw.named_children(self)])
        return self.norm(self.encoder(x.to(dtype))) * count + modules + children


class ReadsItsState(ReadsItself):
    """Reads its state_dict and a submodule in ``forward`` (torch 2.14 breaks the graph there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.state_dict()
        norm = self.get_submodule("norm")
        return norm(self.encoder(x)) + state["encoder.0.bias"].sum()


class ReadsItsStateThroughDropIns(ReadsItself):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = tw.state_dict(self)
        norm = tw.get_submodule(self, "norm")
        return norm(self.encoder(x)) + state["encoder.0.bias"].sum()


def twin(model: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A copy of `model` (same weights) whose forward is `cls`'s."""
    copied = copy.deepcopy(model)
    copied.__class__ = cls
    return copied


def compiled(model: nn.Module, fullgraph: bool, *inputs: Any) -> Any:
    """What compiled `model` returns, or the type of the error that compiling it raised.

    (With ``fullgraph=True`` a graph break is an error: the same one with and
    without torchwalk.)
    """
    torch._dynamo.reset()
    try:
        return torch.compile(model, backend=BACKEND, fullgraph=fullgraph)(*inputs)
    except torch._dynamo.exc.Unsupported as error:
        return type(error)


def assert_same_outcome(ours: Any, expected: Any) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and torch.equal(ours, expected)
    else:
        assert ours is expected


def graph_breaks(model: nn.Module, *inputs: Any) -> int:
    torch._dynamo.reset()
    return int(torch._dynamo.explain(model)(*inputs).graph_break_count)


def reference(model: nn.Module, fullgraph: bool, *inputs: Any) -> tuple[Any, int]:
    """What `model` gives compiled, and how often its graph breaks, without torchwalk."""
    was_installed = is_installed()
    tw.uninstall()
    try:
        return compiled(model, fullgraph, *inputs), graph_breaks(model, *inputs)
    finally:
        if was_installed:
            tw.install()


INPUT = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)


@pytest.mark.parametrize("fullgraph", [False, True], ids=["default", "fullgraph"])
def test_compiled_forward_through_installed_methods(fullgraph: bool) -> None:
    model = ReadsItself()
    expected, expected_breaks = reference(model, fullgraph, INPUT)
    assert expected_breaks == 0
    with tw.installed():
        assert_same_outcome(compiled(model, fullgraph, INPUT), expected)
        assert graph_breaks(model, INPUT) == expected_breaks


@pytest.mark.parametrize("fullgraph", [False, True], ids=["default", "fullgraph"])
@pytest.mark.parametrize("install", [False, True], ids=["plain", "installed"])
def test_compiled_forward_through_drop_ins(fullgraph: bool, install: bool) -> None:
    model = ReadsItself()
    expected, expected_breaks = reference(model, fullgraph, INPUT)
    assert expected_breaks == 0
    ours = twin(model, ReadsItselfThroughDropIns)
    with tw.installed() if install else contextlib.nullcontext():
        assert_same_outcome(compiled(ours, fullgraph, INPUT), expected)
        assert graph_breaks(ours, INPUT) == expected_breaks


@pytest.mark.parametrize("fullgraph", [False, True], ids=["default", "fullgraph"])
@pytest.mark.parametrize("install", [False, True], ids=["plain", "installed"])
def test_state_dict_and_get_submodule_in_a_compiled_forward(fullgraph: bool, install: bool) -> None:
    model = ReadsItsState()
    expected, expected_breaks = reference(model, fullgraph, INPUT)
    for version in (model, twin(model, ReadsItsStateThroughDropIns)):
        with tw.installed() if install else contextlib.nullcontext():
            assert_same_outcome(compiled(version, fullgraph, INPUT), expected)
            assert graph_breaks(version, INPUT) == expected_breaks


def test_eager_calls_stay_in_cpp_after_compiling() -> None:
    model = ReadsItself()
    twin_model = twin(model, ReadsItselfThroughDropIns)
    compiled(twin_model, True, INPUT)
    pytorch_walks = {
        nn.Module.named_parameters.__code__,
        nn.Module.named_modules.__code__,
        nn.Module._named_members.__code__,
    }

    def walk_eagerly() -> None:
        list(tw.named_parameters(model))
        list(tw.parameters(model))
        list(tw.named_modules(model))

    assert not pytorch_walks & python_code_run_by(walk_eagerly)
    with tw.installed():
        compiled(model, True, INPUT)
        assert not pytorch_walks & python_code_run_by(lambda: model(INPUT))


# --- real models ------------------------------------------------------------------------


def _tiny_gpt2(transformers: Any) -> nn.Module:
    # Its forward walks nothing; the compiled step below reads model.dtype, as generation does.
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=101,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _tiny_layoutlm(transformers: Any) -> nn.Module:
    # Its forward reads self.dtype, which walks self.parameters().
    config = transformers.LayoutLMConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=101,
        max_position_embeddings=16,
    )
    return transformers.LayoutLMModel(config).eval()


def _step(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One forward, its output cast to the model's dtype, as generation utilities do."""
    output = model(ids, attention_mask=mask)
    logits = output.logits if hasattr(output, "logits") else output.last_hidden_state
    return logits.to(model.dtype)


# Importing inductor (the default backend) imports a torch.jit module that warns.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("build", [_tiny_gpt2, _tiny_layoutlm], ids=["gpt2", "layoutlm"])
def test_transformers_model_compiled_with_install(
    build: Callable[[Any], nn.Module], transformers_offline: Any
) -> None:
    torch.manual_seed(0)
    model = build(transformers_offline)
    ids = torch.randint(0, 101, (2, 8))
    mask = torch.ones(2, 8)
    with torch.no_grad():
        eager = _step(model, ids, mask)
        torch._dynamo.reset()
        without = torch.compile(_step)(model, ids, mask)
        with tw.installed():
            for fullgraph in (False, True):
                torch._dynamo.reset()
                ours = torch.compile(_step, fullgraph=fullgraph)(model, ids, mask)
                assert torch.equal(ours, without)
                torch.testing.assert_close(ours, eager)


# --- the order of imports ---------------------------------------------------------------


def check_install_before_dynamo_is_imported() -> None:
    """Run in a fresh interpreter: install() first, then build and compile."""
    import sys

    tw.install()
    assert "torch._dynamo" not in sys.modules
    torch.manual_seed(0)
    model = ReadsItself()
    eager = model(INPUT)
    for fullgraph in (False, True):
        torch._dynamo.reset()
        # float32 tolerances: the compiled kernels round differently (a fixed
        # allclose failed now and then on unseeded weights).
        torch.testing.assert_close(torch.compile(model, fullgraph=fullgraph)(INPUT), eager)


def test_install_before_dynamo_is_imported() -> None:
    run_child(
        "import test_compile as t; t.check_install_before_dynamo_is_imported()",
        "install() in a fresh process, then torch.compile",
        timeout=300,
    )


def test_importing_torchwalk_imports_no_dynamo_and_dynamo_first_works() -> None:
    run_child(
        "import sys, torchwalk; assert 'torch._dynamo' not in sys.modules, 'dynamo imported'",
        "import torchwalk",
        timeout=120,
    )
    run_child(
        "import torch._dynamo, torchwalk as tw, test_compile as t;"
        "m = t.ReadsItself(); d = t.twin(m, t.ReadsItselfThroughDropIns);"
        "t.assert_same_outcome(t.compiled(d, True, t.INPUT), t.compiled(m, True, t.INPUT))",
        "torch._dynamo imported before torchwalk",
        timeout=120,
    )
