"""`ties()`: groups of names sharing one storage, their kinds and byte figures.

The oracle is PyTorch's own storage identity (`untyped_storage()._cdata`)
and byte spans computed from sizes, strides and offsets in Python.
"""

from __future__ import annotations

import itertools

import torch
import torchwalk as tw
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

KIND_ORDER = ("packed", "overlap", "alias", "shared")


def span(tensor: torch.Tensor) -> tuple[int, int]:
    """The bytes of its storage a view can touch, per docs/api.md (Ties)."""
    begin = tensor.storage_offset() * tensor.element_size()
    if tensor.numel() == 0:
        return begin, begin
    last = tensor.storage_offset() + sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    return begin, (last + 1) * tensor.element_size()


def holder(**tensors: torch.Tensor) -> nn.Module:
    """A module holding each tensor as a parameter (or a buffer when it cannot be one)."""
    module = nn.Module()
    for name, tensor in tensors.items():
        if isinstance(tensor, nn.Parameter):
            module.register_parameter(name, tensor)
        else:
            module.register_buffer(name, tensor)
    return module


def only_group(module: nn.Module) -> tw.TieGroup:
    groups = tw.ties(module)
    assert len(groups) == 1, groups
    return groups[0]


def test_shared_parameter_across_modules() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    group = only_group(model)
    assert group.names == ["0.weight", "2.weight"]
    assert group.kind == "shared"
    assert group.nbytes == 64
    assert group.overcount_nbytes == 64


def test_shared_module_ties_every_tensor_in_it() -> None:
    linear = nn.Linear(3, 2)
    model = nn.Sequential(linear, nn.ReLU(), linear)
    groups = tw.ties(model)
    assert [(g.names, g.kind) for g in groups] == [
        (["0.weight", "2.weight"], "shared"),
        (["0.bias", "2.bias"], "shared"),
    ]


def test_alias_is_a_second_identical_view() -> None:
    base = torch.zeros(4, 4)
    group = only_group(holder(a=base, b=base.view(4, 4)))
    assert group.kind == "alias"
    assert group.nbytes == 64 and group.overcount_nbytes == 64


def test_transposed_view_overlaps() -> None:
    weight = nn.Parameter(torch.zeros(3, 5))
    group = only_group(holder(weight=weight, weight_t=weight.detach().t()))
    assert group.kind == "overlap"
    assert group.nbytes == 60


def test_slices_of_one_flat_buffer_are_packed() -> None:
    flat = torch.zeros(10)
    group = only_group(holder(a=flat[:4], b=flat[4:]))
    assert group.kind == "packed"
    assert group.nbytes == 40 and group.overcount_nbytes == 0


def test_nested_alias_inside_a_larger_view() -> None:
    flat = torch.zeros(100)
    inner = flat[10:20]
    group = only_group(holder(outer=flat[:50], inner=inner, again=flat[10:20]))
    assert group.kind == "alias"
    assert group.names == ["outer", "inner", "again"]
    assert group.nbytes == 200
    assert group.overcount_nbytes == 80


def test_strided_views_with_gaps_span_their_extremes() -> None:
    flat = torch.zeros(20)
    even, odd = flat[0::2], flat[1::2]
    group = only_group(holder(even=even, odd=odd))
    assert group.kind == "overlap"  # their spans interleave
    assert group.nbytes == span(odd)[1] - span(even)[0]


def test_meta_tensors_never_tie_by_pointer() -> None:
    model = nn.Sequential(*(nn.Linear(8, 8, device="meta") for _ in range(5)))
    assert all(p.data_ptr() == 0 for p in model.parameters())
    assert tw.ties(model) == []
    model[3].weight = model[1].weight
    assert only_group(model).names == ["1.weight", "3.weight"]


def test_meta_views_still_tie() -> None:
    base = torch.empty(6, 6, device="meta")
    group = only_group(holder(a=base, b=base[2:]))
    assert group.kind == "overlap"


def test_empty_tensors() -> None:
    flat = torch.zeros(8)
    assert tw.ties(holder(a=torch.zeros(0), b=torch.zeros(0))) == []
    group = only_group(holder(a=flat[2:2], b=flat[2:6]))
    assert group.kind == "packed"
    assert group.nbytes == 16


def test_buffers_can_be_left_out() -> None:
    flat = torch.zeros(8)
    model = holder(a=nn.Parameter(torch.zeros(2)), b=flat, c=flat)
    assert len(tw.ties(model)) == 1
    assert tw.walk(model, buffers=False).ties() == []


def test_groups_come_in_walk_order_of_their_first_name() -> None:
    model = nn.Sequential(*(nn.Linear(2, 2) for _ in range(4)))
    model[3].weight = model[0].weight
    model[2].bias = model[1].bias
    assert [g.names[0] for g in tw.ties(model)] == ["0.weight", "1.bias"]


def test_strongest_kind_wins_in_a_mixed_group() -> None:
    flat = torch.zeros(16)
    piece = flat[:8]
    group = only_group(holder(a=piece, b=flat[8:], c=piece.view(8), d=flat[4:12]))
    assert group.kind == "alias"


def test_eight_thousand_tied_pairs() -> None:
    layers = nn.ModuleList(nn.Linear(2, 2, bias=False, device="meta") for _ in range(16_000))
    for pair in range(8_000):
        layers[2 * pair + 1].weight = layers[2 * pair].weight
    groups = tw.ties(layers)
    assert len(groups) == 8_000
    assert all(g.kind == "shared" and len(g.names) == 2 for g in groups)


# --- the property: groups are exactly the storage-sharing classes ----------------------


@st.composite
def views_of_few_storages(draw: st.DrawFn) -> nn.Module:
    """A module holding random views (slices, transposes, strides, empties) of 1-3 storages."""
    storages = [torch.zeros(draw(st.integers(1, 12)), 4) for _ in range(draw(st.integers(1, 3)))]
    module = nn.Module()
    for index in range(draw(st.integers(1, 8))):
        base = draw(st.sampled_from(storages))
        start = draw(st.integers(0, base.shape[0]))
        stop = draw(st.integers(start, base.shape[0]))
        step = draw(st.integers(1, 3))
        view = base[start:stop:step]
        if draw(st.booleans()):
            view = view.t()
        if draw(st.booleans()) and index > 0:
            view = getattr(module, f"t{draw(st.integers(0, index - 1))}")
        module.register_buffer(f"t{index}", view)
    return module


@given(views_of_few_storages())
def test_groups_are_the_storage_sharing_classes(module: nn.Module) -> None:
    positions = list(module.named_buffers(remove_duplicate=False))
    groups = tw.ties(module)
    group_of = {name: index for index, g in enumerate(groups) for name in g.names}
    for (name_a, a), (name_b, b) in itertools.combinations(positions, 2):
        shares = a.untyped_storage()._cdata == b.untyped_storage()._cdata
        same_group = name_a in group_of and group_of.get(name_a) == group_of.get(name_b)
        assert shares == same_group, (name_a, name_b)
    for group in groups:
        tensors = [module.get_buffer(name) for name in group.names]
        spans = sorted(span(t) for t in tensors if t.numel())
        covered, reached = 0, None
        for begin, end in spans:
            if reached is None or begin >= reached:
                covered, reached = covered + end - begin, end
            elif end > reached:
                covered, reached = covered + end - reached, end
        assert group.nbytes == covered
        separately = sum(t.numel() * t.element_size() for t in tensors)
        assert group.overcount_nbytes == max(0, separately - covered)
        assert group.kind == strongest_kind(tensors)


def strongest_kind(tensors: list[torch.Tensor]) -> str:
    kinds = {"packed"}
    for a, b in itertools.combinations(tensors, 2):
        if a is b:
            kinds.add("shared")
        elif (a.storage_offset(), a.shape, a.stride(), a.dtype) == (
            b.storage_offset(),
            b.shape,
            b.stride(),
            b.dtype,
        ):
            kinds.add("alias")
        elif a.numel() and b.numel():
            (a_begin, a_end), (b_begin, b_end) = span(a), span(b)
            if a_begin < b_end and b_begin < a_end:
                kinds.add("overlap")
    return max(kinds, key=KIND_ORDER.index)


def test_a_group_names_the_parameter_first_even_when_a_buffer_comes_first() -> None:
    """The first name is the one ``named_parameters()`` keeps, not the first walked."""
    root = nn.Module()
    root.child = nn.Linear(2, 2)
    root.register_buffer("alias", root.child.weight.detach())  # the root's leaves come first
    [group] = tw.ties(root)
    assert group.names == ["child.weight", "alias"]
    assert group.names[0] == next(name for name, _ in root.named_parameters())
    drawing = tw.render(root)
    assert "alias (2, 2)" in drawing and "weight (2, 2) → tied to alias" in drawing
