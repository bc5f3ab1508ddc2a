"""Loading what the command line walks: built-in models, ``module:callable``, checkpoints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchwalk import sources, zoo
from torchwalk.checkpoint_entries import Checkpoint, CheckpointError
from torchwalk.sources import SourceError, load_source

FACTORY_MODULE = "torchwalk_test_factories"
"""A module written under tmp_path by the ``factories`` fixture."""

FACTORIES = """
import torch
from torch import nn


def make():
    return nn.Linear(3, 2)


def make_on_current_device():
    return nn.Linear(3, 2, device=torch.get_default_device())


class Factory:
    @staticmethod
    def create():
        return nn.Sequential(nn.Linear(2, 2))


instance = nn.Linear(5, 5)


def broken():
    raise RuntimeError("boom\\nsecond line")


def not_a_module():
    return {"weight": torch.zeros(2)}


answer = 42
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write :data:`FACTORIES` as an importable module; return its name."""
    (tmp_path / f"{FACTORY_MODULE}.py").write_text(FACTORIES)
    (tmp_path / "torchwalk_test_import_fails.py").write_text("raise ValueError('bad module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in (FACTORY_MODULE, "torchwalk_test_import_fails"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return FACTORY_MODULE


def assert_one_line_naming(error: pytest.ExceptionInfo[Exception], source: str) -> None:
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    assert repr(source) in message or message.startswith(f"{source}: ")


def seed_state_dict() -> dict[str, torch.Tensor]:
    return zoo.build("seed", "cpu").state_dict()


def assert_same_tensors(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
        assert loaded[name].dtype == tensor.dtype


# -- built-in models --------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo.names())
def test_built_in_models_are_built_on_meta(name: str) -> None:
    model = load_source(name)
    assert type(model) is type(zoo.build(name))
    assert isinstance(model, nn.Module)
    assert all(tensor.is_meta for tensor in model.parameters())


def test_no_source_means_llama_7b() -> None:
    model = load_source(None)
    assert type(model) is zoo.LlamaForCausalLM
    assert sum(parameter.numel() for parameter in model.parameters()) == 6_738_415_616


def test_built_in_models_follow_the_device() -> None:
    model = load_source("seed", device="cpu")
    assert isinstance(model, nn.Module)
    reference = zoo.build("seed", "cpu")
    assert_same_tensors(model.state_dict(), reference.state_dict())


# -- package.module:callable ------------------------------------------------------------------


def test_callable_is_called_under_the_meta_device(factories: str) -> None:
    model = load_source(f"{factories}:make")
    assert isinstance(model, nn.Linear)
    assert model.weight.is_meta and model.weight.shape == (2, 3)


def test_callable_is_called_under_the_given_device(factories: str) -> None:
    model = load_source(f"{factories}:make_on_current_device", device="cpu")
    assert isinstance(model, nn.Linear)
    assert model.weight.device == torch.device("cpu")


def test_callable_may_be_a_dotted_path(factories: str) -> None:
    assert isinstance(load_source(f"{factories}:Factory.create"), nn.Sequential)


def test_a_module_instance_is_taken_as_it_is(factories: str) -> None:
    model = load_source(f"{factories}:instance")
    assert model is sys.modules[factories].instance


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("torchwalk_test_no_such_module:make", "ModuleNotFoundError"),
        ("torchwalk_test_import_fails:make", "ValueError: bad module"),
        (f"{FACTORY_MODULE}:missing", "has no attribute 'missing'"),
        (f"{FACTORY_MODULE}:Factory.missing", "has no attribute 'Factory.missing'"),
        (f"{FACTORY_MODULE}:answer", "answer is not callable ('int' object)"),
        (f"{FACTORY_MODULE}:broken", "broken() raised RuntimeError: boom"),
        (f"{FACTORY_MODULE}:not_a_module", "not_a_module() returned a dict, not an nn.Module"),
        ("json:dumps", "dumps() raised TypeError"),
        (f"{FACTORY_MODULE}:", "expected package.module:callable"),
        (":make", "expected package.module:callable"),
    ],
)
def test_bad_callables_raise_one_line(factories: str, source: str, reason: str) -> None:
    with pytest.raises(SourceError) as error:
        load_source(source)
    assert_one_line_naming(error, source)
    assert reason in str(error.value)


# -- torch.save checkpoints -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".PT", ".ckpt"])
def test_state_dict_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save(seed_state_dict(), path)
    loaded = load_source(str(path))
    assert isinstance(loaded, Checkpoint)
    assert loaded.path == str(path)
    assert loaded.skipped == ()
    assert_same_tensors(loaded, seed_state_dict())


def test_checkpoint_is_memory_mapped_and_loaded_with_weights_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    torch.save(seed_state_dict(), path)
    load_calls: list[dict[str, object]] = []
    real_load = torch.load

    def recording_load(*arguments: Any, **options: Any) -> Any:
        load_calls.append(options)
        return real_load(*arguments, **options)

    monkeypatch.setattr(torch, "load", recording_load)
    loaded = load_source(str(path), device="meta")
    assert load_calls == [{"mmap": True, "weights_only": True, "map_location": "cpu"}]
    assert isinstance(loaded, Checkpoint)
    # Checkpoints ignore the device: their tensors stay where the file is mapped.
    assert all(tensor.device == torch.device("cpu") for tensor in loaded.values())


def test_checkpoint_keeps_shared_storages(tmp_path: Path) -> None:
    embedding = torch.randn(10, 4)
    path = tmp_path / "tied.pt"
    torch.save({"wte.weight": embedding, "lm_head.weight": embedding, "half": embedding[:5]}, path)
    loaded = load_source(str(path))
    assert isinstance(loaded, Checkpoint)
    storages = {name: tensor.untyped_storage().data_ptr() for name, tensor in loaded.items()}
    assert storages["wte.weight"] == storages["lm_head.weight"] == storages["half"]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: {"state_dict": state, "epoch": 3, "optimizer_states": [{}]},
        lambda state: {"model": state, "optimizer": {"state": {}, "param_groups": []}},
        lambda state: {"module": state, "global_steps": 10},
        lambda state: {"model": {"state_dict": state}, "config": {"layers": 2}},
        lambda state: {"model": {"name": "seed"}, "state_dict": state},
        lambda state: {"model": state, "rng_state": torch.get_rng_state()},
    ],
    ids=["lightning", "model", "deepspeed", "nested-twice", "config-under-model", "rng-beside"],
)
def test_nested_state_dict_is_found(
    tmp_path: Path, wrap: Callable[[dict[str, torch.Tensor]], object]
) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(wrap(seed_state_dict()), path)
    loaded = load_source(str(path))
    assert isinstance(loaded, Checkpoint)
    assert_same_tensors(loaded, seed_state_dict())
    assert loaded.skipped == ()


def test_non_tensor_entries_are_left_out_and_named(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    weight = torch.ones(2, 2)
    torch.save(
        {"weight": weight, "step": 3, "name": "net", 7: weight, "bias": torch.zeros(2)}, path
    )
    loaded = load_source(str(path))
    assert isinstance(loaded, Checkpoint)
    assert list(loaded) == ["weight", "bias"]
    assert loaded.skipped == ("step", "name", "7")


# -- safetensors ------------------------------------------------------------------------------


def test_safetensors_file_is_read_from_its_header(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    state = {name: tensor.contiguous() for name, tensor in seed_state_dict().items()}
    state["half"] = torch.ones(3, dtype=torch.bfloat16)
    save_file(state, str(path))
    loaded = load_source(str(path))
    assert isinstance(loaded, Checkpoint)
    assert loaded.skipped == ()
    assert sorted(loaded) == sorted(state)
    for name, tensor in state.items():
        entry = loaded[name]
        assert (entry.dtype, entry.shape, entry.nbytes) == (
            str(tensor.dtype),
            tuple(tensor.shape),
            tensor.nbytes,
        )


# -- bad files and names ----------------------------------------------------------------------


def write_bad_file(tmp_path: Path, kind: str) -> str:
    """Make a file (or directory) of the given kind that is not a loadable checkpoint."""
    if kind == "missing.pt":
        return str(tmp_path / kind)
    if kind == "missing.safetensors":
        return str(tmp_path / kind)
    path = tmp_path / kind
    if kind == "directory.pt":
        path.mkdir()
    elif kind in ("junk.pt", "junk.safetensors", "junk.ckpt"):
        path.write_bytes(b"this is not a checkpoint\n")
    elif kind == "empty.pt":
        path.write_bytes(b"")
    elif kind == "legacy.pt":
        torch.save(seed_state_dict(), path, _use_new_zipfile_serialization=False)
    elif kind == "zip-not-torch.pt":
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "hello")
    elif kind == "unsafe-pickle.pt":
        torch.save({"weight": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, path)
    elif kind == "tensor.pt":
        torch.save(torch.ones(2), path)
    elif kind == "list.pt":
        torch.save([torch.ones(2)], path)
    elif kind == "optimizer.pt":
        torch.save({"state": {}, "param_groups": [{"lr": 0.1}]}, path)
    elif kind == "empty-dict.pt":
        torch.save({}, path)
    else:
        raise AssertionError(kind)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing.pt", "no such file"),
        ("missing.safetensors", "no such file"),
        ("directory.pt", "holds no checkpoint"),
        ("junk.pt", "not in torch.save's zip format"),
        ("junk.ckpt", "not in torch.save's zip format"),
        ("empty.pt", "not in torch.save's zip format"),
        ("legacy.pt", "not in torch.save's zip format"),
        ("zip-not-torch.pt", "torch.load raised"),
        ("unsafe-pickle.pt", "argparse.Namespace is not a tensor or a plain container"),
        ("tensor.pt", "holds a Tensor, not a state dict"),
        ("list.pt", "holds a list, not a state dict"),
        ("optimizer.pt", "holds no tensors"),
        ("empty-dict.pt", "holds no tensors"),
        ("junk.safetensors", "not a .safetensors file"),
    ],
)
def test_bad_files_raise_one_line(tmp_path: Path, kind: str, reason: str) -> None:
    path = write_bad_file(tmp_path, kind)
    with pytest.raises(CheckpointError) as error:
        load_source(path)
    assert_one_line_naming(error, path)
    assert reason in str(error.value)


@pytest.mark.parametrize("source", ["gpt-5", "", "no\nsuch model", "Seed", "model.onnx"])
def test_unknown_names_raise_one_line_listing_the_built_in_models(source: str) -> None:
    with pytest.raises(SourceError) as error:
        load_source(source)
    assert_one_line_naming(error, source)
    assert all(name in str(error.value) for name in zoo.names())


def test_default_source_is_a_built_in_model() -> None:
    assert sources.DEFAULT_SOURCE in zoo.names()
