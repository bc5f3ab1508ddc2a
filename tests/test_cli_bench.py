"""``torchwalk bench`` and the command line's handling of bad input (no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.command_line import run_torchwalk
from torchwalk import bench, cli, zoo


def test_bench_prints_a_table_for_the_seed() -> None:
    completed = run_torchwalk("bench", "--models", "seed")
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stdout.splitlines()
    assert any(
        line.split() == ["model", "function", "torch", "torchwalk", "ratio"] for line in lines
    )
    rows = [line.split() for line in lines if line.startswith("seed ")]
    functions = [row[1] for row in rows]
    assert functions == [case.function for case in bench.cases(zoo.build("seed"))]
    assert all(row[-1].endswith("x") and float(row[-1][:-1]) > 0 for row in rows)
    assert any(line.startswith("machine: ") for line in lines)


def test_unknown_model_is_one_line_and_exit_status_2() -> None:
    completed = run_torchwalk("bench", "--models", "gpt-5")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert len(completed.stderr.splitlines()) == 1
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["bench", "--models", "seed,nope"],
        ["bench", "--models", ","],
        ["bench", "--bogus"],
        ["frobnicate"],
    ],
)
def test_bad_input_in_process_is_one_line_and_exit_status_2(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith("torchwalk")


def test_unknown_model_message_names_it_and_the_known_models(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "--models", "gpt-5"]) == 2
    error = capsys.readouterr().err
    assert "'gpt-5'" in error
    assert all(name in error for name in zoo.names())


def test_bench_json_has_one_row_per_case(capsys: pytest.CaptureFixture[str]) -> None:
    report = bench.run(["seed"], time_per_case_s=0.0, min_sample_s=1e-5)
    as_json = json.loads(report.to_json())
    assert as_json["machine"]["torch"]
    assert list(as_json["build_seconds"]) == ["seed"]
    rows = as_json["measurements"]
    assert [row["function"] for row in rows] == [m.function for m in report.measurements]
    assert all(row["samples"] >= bench.MIN_SAMPLES for row in rows)
    for row, measured in zip(rows, report.measurements, strict=True):
        assert row["torch_median_s"] == measured.torch_median_s > 0
        assert row["torchwalk_median_s"] == measured.torchwalk_median_s > 0
        assert row["ratio"] == measured.ratio and math.isfinite(row["ratio"])


def test_bench_rejects_unknown_models_before_building_any() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        bench.run(["seed", "nope"])


def test_cases_cover_every_drop_in_on_a_model_with_buffers() -> None:
    functions = [case.function for case in bench.cases(zoo.build("llama-7b"))]
    assert functions == [
        "named_parameters",
        "parameters",
        "named_buffers",
        "buffers",
        "named_modules",
        "modules",
        "named_children",
        "children",
        "get_parameter",
        "get_submodule",
        "get_buffer",
        "state_dict",
    ]


def identities(result: object) -> object:
    """``result`` with every object but names replaced by its ``id``, lists and tuples kept;
    a state dict's detached tensors (new objects per call) by their storage's."""
    if isinstance(result, dict):
        return [(key, tensor.untyped_storage()._cdata) for key, tensor in result.items()]
    if isinstance(result, list | tuple):
        return type(result)(identities(item) for item in result)
    return result if isinstance(result, str) else id(result)


def test_cases_compare_calls_with_the_same_results() -> None:
    model = zoo.build("gpt2")
    for case in bench.cases(model):
        assert identities(case.torch_call()) == identities(case.torchwalk_call()), case.function


def test_bench_takes_a_callable_source(tmp_path: Path) -> None:
    (tmp_path / "torchwalk_test_bench_models.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(2, 3))\n"
    )
    completed = run_torchwalk("bench", "torchwalk_test_bench_models:make", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "torchwalk_test_bench_models:make" in completed.stdout


@pytest.mark.parametrize(
    "source", ["torchwalk_test_no_such_module:make", "os:getcwd", "nope"], ids=repr
)
def test_bench_refuses_a_bad_source_in_one_line(
    source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", source]) == 2
    lines = capsys.readouterr().err.splitlines()
    # (Progress lines name each source as it is loaded.)
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert all(line.startswith("torchwalk bench: ") for line in lines)
