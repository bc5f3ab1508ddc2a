"""``torchwalk summary``, ``tree`` and ``ties``: sources, options, output, and bad input.

The first tests run the command line in this process with ``tw.walk`` replaced
by a recorder, so they check what the command line hands the walk and prints,
whatever the walk does. The rest run ``python -m torchwalk`` end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchwalk
from helpers.command_line import run_torchwalk
from test_render import SEED_DRAWING
from torch import nn
from torchwalk import cli, zoo
from torchwalk.sources import Checkpoint
from torchwalk.tie_groups import TieGroup

"""``torchwalk tree seed --name net``, as docs/api.md draws it."""

GPT2_TIE = {
    "names": ["transformer.wte.weight", "lm_head.weight"],
    "kind": "shared",
    "nbytes": 50257 * 768 * 4,
    "overcount_nbytes": 50257 * 768 * 4,
}
"""GPT-2's one tie group: the head is the token embedding (float32)."""


# -- in process, with a recording walk --------------------------------------------------------


@dataclass
class RecordedSummary:
    depth: int | None

    def __str__(self) -> str:
        return f"summary table, depth {self.depth}"

    def to_json(self) -> str:
        return json.dumps({"depth": self.depth})


@dataclass
class RecordingTree:
    """Stands in for ``ParamTree``: answers with what it was asked."""

    tie_groups: list[TieGroup] = field(default_factory=list)

    def summary(self, depth: int | None = None) -> RecordedSummary:
        return RecordedSummary(depth)

    def render(self, name: str | None = None, depth: int | None = None, ascii: bool = False) -> str:
        return f"drawing name={name} depth={depth} ascii={ascii}"

    def ties(self) -> list[TieGroup]:
        return self.tie_groups


@dataclass
class RecordingWalk:
    tree: RecordingTree = field(default_factory=RecordingTree)
    sources: list[object] = field(default_factory=list)
    raises: BaseException | None = None

    def __call__(self, source: object) -> RecordingTree:
        self.sources.append(source)
        if self.raises is not None:
            raise self.raises
        return self.tree


@pytest.fixture
def recording_walk(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingWalk]:
    walk = RecordingWalk()
    monkeypatch.setattr(torchwalk, "walk", walk)
    yield walk


def run_in_process(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    status = cli.main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_no_command_is_summary_of_llama_7b_on_meta(
    recording_walk: RecordingWalk, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_in_process(capsys) == (0, "summary table, depth None\n", "")
    [model] = recording_walk.sources
    assert type(model) is zoo.LlamaForCausalLM
    assert isinstance(model, nn.Module)
    assert all(parameter.is_meta for parameter in model.parameters())


@pytest.mark.parametrize(
    ("arguments", "output"),
    [
        (["summary", "seed"], "summary table, depth None"),
        (["summary", "seed", "--depth", "2"], "summary table, depth 2"),
        (["summary", "--json", "--depth", "0"], '{"depth": 0}'),
        (["tree", "seed"], "drawing name=None depth=None ascii=False"),
        (["tree", "seed", "--name", "net", "--ascii"], "drawing name=net depth=None ascii=True"),
        (["tree", "--depth", "1"], "drawing name=None depth=1 ascii=False"),
        (
            ["tree", "seed", "--depth", "1", "--json"],
            json.dumps({"text": "drawing name=None depth=1 ascii=False"}),
        ),
        (["ties", "seed"], "no tensors share memory"),
        (["ties", "seed", "--json"], "[]"),
    ],
)
def test_options_reach_the_tree_and_output_is_printed(
    recording_walk: RecordingWalk,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    output: str,
) -> None:
    assert run_in_process(capsys, *arguments) == (0, output + "\n", "")
    assert len(recording_walk.sources) == 1


def test_ties_print_one_group_per_line(
    recording_walk: RecordingWalk, capsys: pytest.CaptureFixture[str]
) -> None:
    recording_walk.tree.tie_groups = [
        TieGroup(["transformer.wte.weight", "lm_head.weight"], "shared", 154_389_504, 154_389_504),
        TieGroup(["flat.a", "flat.b", "flat.c"], "packed", 1200, 0),
    ]
    status, output, errors = run_in_process(capsys, "ties", "gpt2")
    assert (status, errors) == (0, "")
    assert output.splitlines() == [
        "shared     154 MB  overcount   154 MB  transformer.wte.weight, lm_head.weight",
        "packed    1.20 kB  overcount      0 B  flat.a, flat.b, flat.c",
    ]
    status, output, errors = run_in_process(capsys, "ties", "gpt2", "--json")
    assert json.loads(output) == [
        {
            "names": ["transformer.wte.weight", "lm_head.weight"],
            "kind": "shared",
            "nbytes": 154_389_504,
            "overcount_nbytes": 154_389_504,
        },
        {
            "names": ["flat.a", "flat.b", "flat.c"],
            "kind": "packed",
            "nbytes": 1200,
            "overcount_nbytes": 0,
        },
    ]


def test_checkpoint_entries_left_out_are_noted_on_stderr(
    recording_walk: RecordingWalk, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "checkpoint.pt"
    entries: dict[str, object] = {"weight": torch.ones(2)}
    entries.update({f"note{index}": index for index in range(12)})
    torch.save({"state_dict": entries, "epoch": 1}, path)
    status, _, errors = run_in_process(capsys, "summary", str(path))
    assert status == 0
    assert errors == (
        "torchwalk: ignored 12 non-tensor entries: "
        + ", ".join(f"note{index}" for index in range(10))
        + " and 2 more\n"
    )
    [checkpoint] = recording_walk.sources
    assert isinstance(checkpoint, Checkpoint)
    assert list(checkpoint) == ["weight"]


def test_walk_finding_a_cycle_is_one_line_and_exit_status_2(
    recording_walk: RecordingWalk, capsys: pytest.CaptureFixture[str]
) -> None:
    recording_walk.raises = RecursionError("the module graph has a cycle\nsecond line")
    status, output, errors = run_in_process(capsys, "tree", "seed")
    assert (status, output) == (2, "")
    assert errors == (
        "torchwalk tree: error: cannot walk 'seed': RecursionError: the module graph has a cycle\n"
    )


@pytest.mark.parametrize(
    "error", [AttributeError("a bug"), ValueError("a bug"), TypeError("a bug")]
)
def test_other_errors_of_the_walk_are_not_hidden(
    recording_walk: RecordingWalk, error: Exception
) -> None:
    recording_walk.raises = error
    with pytest.raises(type(error), match="bug"):
        cli.main(["summary", "seed"])


def test_callable_imports_from_the_current_directory(
    recording_walk: RecordingWalk,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As under the installed `torchwalk` script, whose sys.path lacks the current directory.
    monkeypatch.setattr(
        sys, "path", [entry for entry in sys.path if entry not in ("", str(tmp_path))]
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "torchwalk_test_cwd_models.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Linear(2, 3)\n"
    )
    monkeypatch.delitem(sys.modules, "torchwalk_test_cwd_models", raising=False)
    status, _, errors = run_in_process(capsys, "summary", "torchwalk_test_cwd_models:build")
    assert (status, errors) == (0, "")
    [model] = recording_walk.sources
    assert isinstance(model, nn.Linear) and model.weight.is_meta


@pytest.mark.parametrize(
    "arguments",
    [
        ["summary", "gpt-5"],
        ["tree", "torchwalk_test_no_such_module:build"],
        ["ties", "os:no_such_attribute"],
        ["summary", "json:dumps"],
        ["summary", "no-such-file.pt"],
        ["summary", "--depth", "-1"],
        ["tree", "--depth", "two"],
        ["summary", "seed", "--ascii"],
        ["ties", "seed", "--depth", "1"],
        ["summary", "seed", "extra"],
    ],
)
def test_bad_input_in_process_is_one_line_and_exit_status_2(
    recording_walk: RecordingWalk, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    status, output, errors = run_in_process(capsys, *arguments)
    assert (status, output) == (2, "")
    assert len(errors.splitlines()) == 1
    # Options unknown to the command are reported by the top parser, as "torchwalk: error: ...".
    assert errors.startswith("torchwalk") and ": error: " in errors
    assert recording_walk.sources == []


# -- end to end -------------------------------------------------------------------------------


def run_ok(*arguments: str, cwd: Path | None = None) -> str:
    """Run ``python -m torchwalk ARGUMENTS``, check that it succeeded quietly, return stdout."""
    completed = run_torchwalk(*arguments, cwd=cwd)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    return completed.stdout


def test_torchwalk_alone_prints_the_summary_of_llama_7b() -> None:
    output = run_ok()
    assert output == run_ok("summary")
    assert "LlamaForCausalLM" in output and "6.74 B" in output


def test_summary_json() -> None:
    summary = json.loads(run_ok("summary", "seed", "--json", "--depth", "1"))
    assert [row["path"] for row in summary["rows"]] == ["", "0", "1", "2"]
    assert summary["totals"]["params"] == 49
    assert summary["ties"] == []


def test_summary_of_deepseek_v3() -> None:
    summary = json.loads(run_ok("summary", "deepseek-v3", "--json", "--depth", "1"))
    assert summary["totals"]["params"] == 671_026_404_352


def test_tree_of_the_seed() -> None:
    assert run_ok("tree", "seed", "--name", "net") == SEED_DRAWING + "\n"
    ascii_drawing = run_ok("tree", "seed", "--name", "net", "--ascii")
    assert ascii_drawing.isascii() and ascii_drawing.splitlines()[0] == "net (Sequential)"
    assert json.loads(run_ok("tree", "seed", "--name", "net", "--json")) == {"text": SEED_DRAWING}


def test_ties_of_gpt2() -> None:
    assert json.loads(run_ok("ties", "gpt2", "--json")) == [GPT2_TIE]
    [line] = run_ok("ties", "gpt2").splitlines()
    assert line.split() == [
        "shared",
        "154",
        "MB",
        "overcount",
        "154",
        "MB",
        *"transformer.wte.weight, lm_head.weight".split(),
    ]


def test_checkpoints(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = zoo.build("seed", "cpu").state_dict()
    torch.save({"model": {**state, "step": 10}, "optimizer": {}}, tmp_path / "seed.pt")
    save_file(state, str(tmp_path / "seed.safetensors"))

    completed = run_torchwalk("summary", str(tmp_path / "seed.pt"), "--json")
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == "torchwalk: ignored 1 non-tensor entry: step\n"
    assert json.loads(completed.stdout)["totals"]["params"] == 49

    summary = json.loads(run_ok("summary", str(tmp_path / "seed.safetensors"), "--json"))
    assert summary["totals"]["params"] == 49


def test_callable_source_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))\n"
    )
    assert run_ok("tree", "my_models:build", "--name", "net", cwd=tmp_path) == SEED_DRAWING + "\n"


@pytest.mark.parametrize(
    "arguments",
    [
        ["summary", "gpt-5"],
        ["tree", "torchwalk_test_no_such_module:build"],
        ["ties", "json:dumps"],
        ["summary", "missing.pt"],
        ["summary", "not-a-checkpoint.pt"],
        ["tree", "--depth", "-1"],
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_status_2(
    tmp_path: Path, arguments: list[str]
) -> None:
    (tmp_path / "not-a-checkpoint.pt").write_text("hello\n")
    completed = run_torchwalk(*arguments, cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
    assert completed.stderr.startswith(f"torchwalk {arguments[0]}: error: ")
    assert "Traceback" not in completed.stderr


def test_module_graph_with_a_cycle_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    (tmp_path / "cyclic_models.py").write_text(
        "from torch import nn\n\n"
        "def build():\n"
        "    network = nn.Sequential(nn.Linear(2, 2))\n"
        "    network.append(network)\n"
        "    return network\n"
    )
    completed = run_torchwalk("summary", "cyclic_models:build", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith(
        "torchwalk summary: error: cannot walk 'cyclic_models:build': RecursionError: "
    )
    assert len(completed.stderr.splitlines()) == 1, completed.stderr


def test_closed_stdout_ends_quietly() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "torchwalk", "summary", "seed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # before the child, still importing torch, has written
        errors = process.stderr.read()
        status = process.wait(timeout=300)
    assert (status, errors) == (cli.BROKEN_PIPE, "")
