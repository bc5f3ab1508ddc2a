"""``torchwalk diff A B``: the library's result printed, exit status 0, 1 or 2, as ``cmp`` has.

Run in this process (``cli.main``) on safetensors files and on a model built
by a callable source, so that the output can be compared with ``tw.diff`` of
the same sources; one run goes through ``python -m torchwalk`` end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchwalk as tw
from helpers.command_line import make_builder_importable, run_torchwalk
from torch import nn
from torchwalk import cli

safetensors_torch = pytest.importorskip("safetensors.torch")

MODELS = "torchwalk_test_diff_models"
SOURCE = f"{MODELS}:build"


def build() -> nn.Module:
    """A small model with fixed weights and buffers."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


@pytest.fixture(autouse=True)
def models_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes ``SOURCE`` importable: a module whose ``build`` is the one above."""
    make_builder_importable(MODELS, __name__, tmp_path, monkeypatch)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The model's state saved as is, with one weight moved by 0.01, and with a name renamed."""
    state = {name: tensor.clone() for name, tensor in build().state_dict().items()}
    moved = dict(state, **{"0.weight": state["0.weight"] + 0.01})
    renamed = {("extra" if name == "2.bias" else name): tensor for name, tensor in state.items()}
    paths = {}
    for name, tensors in [("same", state), ("moved", moved), ("renamed", renamed)]:
        paths[name] = tmp_path / f"{name}.safetensors"
        safetensors_torch.save_file(tensors, paths[name])
    return paths


def run(capsys: pytest.CaptureFixture[str], *arguments: str | Path) -> tuple[int, str, str]:
    status = cli.main(["diff", *map(str, arguments)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_equal_sources_exit_0_with_the_librarys_table(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path]
) -> None:
    status, output, errors = run(capsys, SOURCE, files["same"])
    assert (status, errors) == (0, "")
    assert output == str(tw.diff(build(), files["same"])) + "\n"
    assert output.splitlines()[-1].startswith("equal within atol=0, rtol=0")


@pytest.mark.parametrize("other", ["moved", "renamed"])
def test_differing_sources_exit_1(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], other: str
) -> None:
    status, output, errors = run(capsys, files["same"], files[other])
    assert (status, errors) == (1, "")
    assert output == str(tw.diff(files["same"], files[other])) + "\n"


def test_json_is_the_librarys_result(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path]
) -> None:
    status, output, _ = run(capsys, files["same"], files["moved"], "--json")
    assert status == 1
    assert json.loads(output) == json.loads(tw.diff(files["same"], files["moved"]).to_json())
    status, output, _ = run(capsys, files["same"], files["moved"], "--json", "--depth", "1")
    assert status == 1
    assert json.loads(output) == json.loads(tw.diff(files["same"], files["moved"]).to_json(depth=1))
    assert [row["name"] for row in json.loads(output)["by_module"]] == ["0", "1", "2"]


def test_depth_prints_the_roll_up(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path]
) -> None:
    status, output, _ = run(capsys, files["same"], files["moved"], "--depth", "1")
    assert status == 1
    assert output == tw.diff(files["same"], files["moved"]).table(depth=1) + "\n"
    assert output.splitlines()[2].split()[:2] == ["0", "differs"]


@pytest.mark.parametrize(("atol", "status"), [("0.001", 1), ("0.02", 0)])
def test_tolerances_decide_the_status(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], atol: str, status: int
) -> None:
    got, output, _ = run(capsys, files["same"], files["moved"], "--atol", atol)
    assert got == status
    expected = tw.diff(files["same"], files["moved"], atol=float(atol))
    assert output == str(expected) + "\n"
    relative = run(capsys, files["same"], files["moved"], "--rtol", "0.5", "--atol", atol)
    assert (
        relative[1]
        == str(tw.diff(files["same"], files["moved"], rtol=0.5, atol=float(atol))) + "\n"
    )


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
def test_a_distributed_checkpoint_needs_allow_pickle(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: dict[str, Path]
) -> None:
    from torch.distributed import checkpoint as dcp

    state = {name: tensor.clone() for name, tensor in build().state_dict().items()}
    dcp.save(state, checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    status, output, errors = run(capsys, tmp_path / "dcp", files["same"])
    assert (status, output) == (2, "")
    assert len(errors.splitlines()) == 1 and "--allow-pickle" in errors
    assert run(capsys, tmp_path / "dcp", files["same"], "--allow-pickle")[0] == 0


def test_bad_input_is_one_line_and_exit_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: dict[str, Path]
) -> None:
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(files["same"].read_bytes()[:-16])  # the header intact, data short
    cases = {
        "no such file": [files["same"], tmp_path / "missing.safetensors"],
        "truncated": [files["same"], truncated],
        "not a number": [files["same"], files["same"], "--atol", "x"],
        "must be 0 or more": [files["same"], files["same"], "--rtol", "-1"],
        "not a built-in model": [files["same"], "nonsense"],
        "the following arguments are required": [files["same"]],
    }
    for fault, arguments in cases.items():
        status, output, errors = run(capsys, *arguments)
        assert (status, output) == (2, ""), fault
        assert len(errors.splitlines()) == 1 and fault in errors, (fault, errors)


def test_the_exit_status_reaches_the_shell(files: dict[str, Path]) -> None:
    for other, status in [("same", 0), ("moved", 1)]:
        completed = run_torchwalk("diff", str(files["same"]), str(files[other]))
        assert completed.returncode == status, completed.stderr
        assert completed.stderr == ""
    completed = run_torchwalk("diff", str(files["same"]))
    assert completed.returncode == 2
