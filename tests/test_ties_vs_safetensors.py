"""Where safetensors' shared-tensor detection is wrong and ``tw.ties`` is right.

Before saving, safetensors finds the names of a state dict that share memory
with ``safetensors.torch._find_shared_tensors``: it keys each tensor by
(device, storage data pointer, storage bytes), leaving out meta tensors and
empty storages, then splits the names under each key into runs of overlapping
byte ranges, the end of each range found with ``view(-1)``. Three models show
it wrong; the ``test_safetensors_*`` tests pin what safetensors returns today
(0.8.0), so that a fix upstream shows up here:

- a tie on the meta device (where every data pointer is null): meta tensors are
  left out altogether, so the tie is missed (and, since nothing is keyed, no
  false tie is made either);
- a buffer holding the transpose of a parameter: ``view(-1)`` of the
  transposed view raises ``RuntimeError``;
- two slices inside a flat parameter: the second slice starts past the end of
  the first, so it is split off the group, though it lies inside the flat
  parameter (a missed overlap).

The oracle for ``tw.ties`` is PyTorch's storage identity: names whose tensors
share one ``StorageImpl`` (``untyped_storage()._cdata``, the key ``torch.save``
de-duplicates storages by) form one group, and no other names are grouped; the
kind and byte figures of each group follow docs/api.md (Ties).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchwalk as tw
from torch import nn

safetensors_torch = pytest.importorskip("safetensors.torch")


def tied_linears_on_meta() -> nn.Sequential:
    """Three ``nn.Linear(4, 4)`` on meta; the second's weight is the first's (one shared tie)."""
    with torch.device("meta"):
        linears = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    linears[1].weight = linears[0].weight
    return linears


class TransposedCache(nn.Module):
    """A (4, 8) float32 ``weight`` and a buffer ``weight_t``, its transpose: one storage."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 8))
        self.register_buffer("weight_t", self.weight.detach().t())


class NestedViews(nn.Module):
    """A flat float32 parameter of 64 and two parameters viewing its floats 8-23 and 32-47."""

    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Parameter(torch.zeros(64))
        self.middle = nn.Parameter(self.flat.detach()[8:24])
        self.late = nn.Parameter(self.flat.detach()[32:48])


def storage_groups(module: nn.Module) -> list[list[str]]:
    """Names at every position grouped by storage identity, groups of two or more, in walk order.

    Positions are walked as ``named_modules(remove_duplicate=False)`` walks
    them, each module's parameters then its buffers.
    """
    names_by_storage: dict[int, list[str]] = {}
    for module_path, submodule in module.named_modules(remove_duplicate=False):
        prefix = f"{module_path}." if module_path else ""
        for leaf_name, tensor in (*submodule._parameters.items(), *submodule._buffers.items()):
            if tensor is not None:
                storage_key = tensor.untyped_storage()._cdata
                names_by_storage.setdefault(storage_key, []).append(prefix + leaf_name)
    return [names for names in names_by_storage.values() if len(names) > 1]


# Each model with its one tie group as docs/api.md (Ties) describes it:
# (names, kind, nbytes, overcount_nbytes).
EXPECTED_GROUPS = [
    pytest.param(
        tied_linears_on_meta, (["0.weight", "1.weight"], "shared", 64, 64), id="meta-shared"
    ),
    # The transpose spans the same 128 bytes with other strides: an overlap.
    pytest.param(TransposedCache, (["weight", "weight_t"], "overlap", 128, 128), id="transposed"),
    # flat overlaps both slices (the slices are disjoint from each other, which
    # is weaker): one overlap group of flat's 256 bytes; the slices' 2 x 64
    # bytes are what counting every name would add.
    pytest.param(NestedViews, (["flat", "middle", "late"], "overlap", 256, 128), id="nested"),
]


@pytest.mark.parametrize(("build", "expected_group"), EXPECTED_GROUPS)
def test_ties_match_storage_identity(
    build: Callable[[], nn.Module], expected_group: tuple[list[str], str, int, int]
) -> None:
    model = build()
    names, kind, nbytes, overcount_nbytes = expected_group
    assert storage_groups(model) == [names]
    groups = tw.ties(model)
    assert [list(group.names) for group in groups] == [names]
    assert [(group.kind, group.nbytes, group.overcount_nbytes) for group in groups] == [
        (kind, nbytes, overcount_nbytes)
    ]


def test_safetensors_misses_a_tie_on_meta() -> None:
    model = tied_linears_on_meta()
    assert storage_groups(model) == [["0.weight", "1.weight"]]
    assert safetensors_torch._find_shared_tensors(model.state_dict()) == []


def test_safetensors_raises_on_a_transposed_view() -> None:
    model = TransposedCache()
    assert storage_groups(model) == [["weight", "weight_t"]]
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        safetensors_torch._find_shared_tensors(model.state_dict())


def test_safetensors_splits_a_view_off_the_view_holding_it() -> None:
    model = NestedViews()
    assert storage_groups(model) == [["flat", "middle", "late"]]
    assert safetensors_torch._find_shared_tensors(model.state_dict()) == [
        {"flat", "middle"},
        {"late"},
    ]
