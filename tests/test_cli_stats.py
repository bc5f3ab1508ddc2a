"""``torchwalk stats``: the figures ``tw.stats`` gives, its options, its progress bar, bad devices.

Run in this process (``cli.main``) on a model built by a callable source with
fixed weights, so that the command line's output can be compared with the
library's result for the same model.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
import torchwalk as tw
from helpers.command_line import make_builder_importable
from torch import nn
from torchwalk import cli

MODELS = "torchwalk_test_stats_models"
SOURCE = f"{MODELS}:build"


def build() -> nn.Module:
    """A small model with fixed weights, a buffer and an all-zero parameter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    nn.init.zeros_(model[2].bias)
    return model


@pytest.fixture(autouse=True)
def models_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes ``SOURCE`` importable: a module whose ``build`` is the one above."""
    make_builder_importable(MODELS, __name__, tmp_path, monkeypatch)


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    status = cli.main(["stats", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expected(buffers: bool) -> dict[str, object]:
    return dict(json.loads(tw.walk(build()).stats(buffers=buffers).to_json()))


@pytest.mark.parametrize("buffers", [False, True], ids=["parameters", "with-buffers"])
def test_json_is_the_librarys_result(capsys: pytest.CaptureFixture[str], buffers: bool) -> None:
    arguments = [SOURCE, "--json", *(["--buffers"] if buffers else [])]
    status, output, errors = run(capsys, *arguments)
    assert (status, errors) == (0, "")
    assert json.loads(output) == expected(buffers)
    names = [row["name"] for row in json.loads(output)["tensors"]]
    assert ("1.running_mean" in names) == buffers


def test_table_flags_the_all_zero_bias(capsys: pytest.CaptureFixture[str]) -> None:
    status, output, errors = run(capsys, SOURCE, "--device", "cpu")
    assert (status, errors) == (0, "")
    assert output == str(tw.walk(build()).stats()) + "\n"
    [flagged] = [line for line in output.splitlines() if line.startswith("2.bias")]
    assert "all zero" in flagged


def test_meta_device_gives_counts_only(capsys: pytest.CaptureFixture[str]) -> None:
    status, output, _ = run(capsys, SOURCE, "--device", "meta", "--json")
    assert status == 0
    rows = json.loads(output)["tensors"]
    assert [row["numel"] for row in rows] == [p.numel() for p in build().parameters()]
    assert all(row["mean"] is None and row["zeros"] is None for row in rows)


@pytest.mark.parametrize("device", ["nonsense", "cuda:x"])
def test_a_bad_device_is_one_line_and_exit_status_2(
    capsys: pytest.CaptureFixture[str], device: str
) -> None:
    status, output, errors = run(capsys, SOURCE, "--device", device)
    assert (status, output) == (2, "")
    assert len(errors.splitlines()) == 1 and "not a device" in errors


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_progress_in_bytes_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    pytest.importorskip("tqdm")
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(cli, "PROGRESS_MIN_BYTES", 0)
    status, output, _ = run(capsys, SOURCE, "--json")
    assert status == 0 and json.loads(output) == expected(False)
    nbytes = sum(p.numel() * p.element_size() for p in build().parameters())
    progress = stderr.getvalue()
    if terminal:
        assert "stats" in progress and f"{nbytes}/{nbytes}" in progress.replace("B", "")
    else:
        assert progress == ""
