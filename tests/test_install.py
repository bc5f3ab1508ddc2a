"""`tw.install()` routes nn.Module's traversal and state_dict through torchwalk.

Installed methods give what PyTorch's own functions give (called directly,
as the oracle); uninstall puts back the very same function objects; a
training loop with checkpointing is bit-identical with and without it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torchwalk as tw
from helpers.module_trees import assert_same_items, module_trees, python_code_run_by
from helpers.state_dict_oracle import assert_same_call, check_state_dict, decorated_trees
from hypothesis import given
from torch import nn

# These tests install and uninstall themselves, against PyTorch's own functions.
pytestmark = pytest.mark.skipif(
    os.environ.get("TORCHWALK_TEST_INSTALLED") == "1", reason="needs PyTorch's methods in place"
)

ROUTED = (
    "named_parameters",
    "parameters",
    "named_buffers",
    "buffers",
    "named_modules",
    "modules",
    "named_children",
    "children",
    "state_dict",
)
PYTORCH = {name: nn.Module.__dict__[name] for name in ROUTED}


@pytest.fixture
def installed() -> Iterator[None]:
    with tw.installed():
        yield


def test_install_replaces_and_uninstall_restores_the_same_functions() -> None:
    tw.install()
    tw.install()  # twice is harmless
    try:
        for name in ROUTED:
            assert nn.Module.__dict__[name] is not PYTORCH[name]
    finally:
        tw.uninstall()
    tw.uninstall()
    for name in ROUTED:
        assert nn.Module.__dict__[name] is PYTORCH[name]


def test_installed_scopes_and_nests() -> None:
    with tw.installed():
        with tw.installed():
            assert nn.Module.__dict__["parameters"] is not PYTORCH["parameters"]
        assert nn.Module.__dict__["parameters"] is not PYTORCH["parameters"]
    assert nn.Module.__dict__["parameters"] is PYTORCH["parameters"]


def test_importing_torchwalk_patches_nothing() -> None:
    code = (
        "from torch import nn; before = dict(vars(nn.Module)); import torchwalk; "
        "assert all(vars(nn.Module)[k] is v for k, v in before.items()); "
        "assert set(vars(nn.Module)) == set(before)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@given(tree=module_trees())
def test_installed_methods_match_pytorch_on_random_trees(tree: nn.Module) -> None:
    calls: list[tuple[str, tuple[Any, ...], bool]] = [
        ("named_parameters", ("p.", True, False), True),
        ("named_parameters", (), True),
        ("parameters", (False,), False),
        ("parameters", (), False),
        ("named_buffers", ("", True, False), True),
        ("buffers", (), False),
        ("named_modules", (None, "m", False), True),
        ("named_modules", (), True),
        ("modules", (), False),
        ("named_children", (), True),
        ("children", (), False),
    ]
    for name, args, named in calls:
        expected = list(PYTORCH[name](tree, *args))
        with tw.installed():
            got = list(getattr(tree, name)(*args))
        assert_same_items(got, expected, named)


@given(tree=decorated_trees())
def test_installed_state_dict_matches_pytorch_on_random_trees(tree: nn.Module) -> None:
    with tw.installed():
        check_state_dict(
            tree,
            lambda **flags: tree.state_dict(**flags),
            prefixes=("", "x."),
        )


def test_installed_state_dict_is_compared_with_pytorch_not_itself() -> None:
    tree = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    tree[0].register_state_dict_pre_hook(lambda *args: None)
    with tw.installed():
        assert_same_call(
            lambda **f: tree.state_dict(**f), lambda **f: PYTORCH["state_dict"](tree, **f)
        )


class CallsSuper(nn.Module):
    """Overrides that reach the installed functions through super()."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(2, 2), nn.ReLU())

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]:
        for name, parameter in super().named_parameters(*args, **kwargs):
            yield name.upper(), parameter

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        result = super().state_dict(*args, **kwargs)
        result["seen"] = True
        return result


def test_overrides_that_call_super_neither_recurse_nor_change() -> None:
    module = nn.Sequential(CallsSuper(), nn.Linear(2, 2))
    expected = [list(module[0].named_parameters()), list(module.named_parameters())]
    expected_state = module.state_dict()
    with tw.installed():
        got = [list(module[0].named_parameters()), list(module.named_parameters())]
        for ours, theirs in zip(got, expected, strict=True):
            assert_same_items(ours, theirs, named=True)
        assert module[0].state_dict()["seen"] is True
        assert_same_call(
            lambda **f: module.state_dict(**f), lambda **f: PYTORCH["state_dict"](module, **f)
        )
        assert list(module.state_dict()) == list(expected_state)


def test_positional_arguments_work_as_with_pytorch(installed: None) -> None:
    module = nn.Sequential(nn.Linear(2, 2))
    assert [n for n, _ in module.named_parameters("p", False)] == []
    assert [n for n, _ in module[0].named_parameters("p", False)] == ["p.weight", "p.bias"]
    assert [n for n, _ in module.named_modules(None, "r")] == ["r", "r.0"]
    with pytest.warns(FutureWarning):
        assert list(module.state_dict(None, "s.")) == ["s.0.weight", "s.0.bias"]


# --- a real training loop ----------------------------------------------------------------


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 32)
        self.head.weight = self.embed.weight  # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


def _train(steps: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        tokens = torch.randint(0, 32, (4, 8), generator=generator)
        loss = nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()


def _training_run() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyTransformer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(3, model, optimizer)
    checkpoint = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint)
    checkpoint.seek(0)
    saved = torch.load(checkpoint, weights_only=True)
    restored = TinyTransformer()
    restored.load_state_dict(saved["model"], strict=True)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-2)
    restored_optimizer.load_state_dict(saved["optimizer"])
    _train(3, restored, restored_optimizer)
    return {name: tensor.clone() for name, tensor in PYTORCH["state_dict"](restored).items()}


def test_training_with_install_is_bit_identical() -> None:
    expected = _training_run()
    with tw.installed():
        got = _training_run()
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
        assert got[name].dtype == tensor.dtype


# --- the C++ path is the one taken ------------------------------------------------------

PYTORCH_CODE = {
    function.__code__
    for function in (
        *PYTORCH.values(),
        nn.Module._named_members,
        nn.Module._save_to_state_dict,
        nn.Module.get_submodule,
        nn.Module.get_parameter,
        nn.Module.get_buffer,
    )
}


def _plain_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 2)))


def test_installed_methods_run_none_of_pytorchs_walks(installed: None) -> None:
    model = _plain_model()

    def use() -> None:
        for name in ROUTED:
            result = getattr(model, name)()
            if name != "state_dict":
                list(result)

    use()  # class facts cached
    assert not PYTORCH_CODE & python_code_run_by(use)


def test_drop_ins_run_none_of_pytorchs_walks() -> None:
    model = _plain_model()

    def use() -> None:
        tw.state_dict(model)
        tw.get_submodule(model, "2.0")
        tw.get_parameter(model, "2.0.weight")
        tw.get_buffer(model, "1.running_mean")
        list(tw.named_parameters(model))
        list(tw.named_modules(model))

    use()
    assert not PYTORCH_CODE & python_code_run_by(use)


def test_the_check_sees_pytorchs_walks_when_they_run() -> None:
    """The oracle of the two tests above: PyTorch's own calls are seen."""
    model = _plain_model()
    seen = python_code_run_by(lambda: (model.state_dict(), model.get_submodule("2.0")))
    assert nn.Module.state_dict.__code__ in seen and nn.Module.get_submodule.__code__ in seen
