"""Type stub for torchwalk's C++ extension (csrc/bindings/module.cpp).

The walkers return an iterator over what the nn.Module method of the same
name yields, or None when PyTorch itself must answer (see dropin.py).
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

TORCH_VERSION: str

def configure(
    module_class: type[nn.Module],
    parameter_class: type[nn.Parameter],
    tensor_hash: Any,
    identity_torch_functions: tuple[Any, ...],
    lazy_tensor_class: type,
    /,
) -> None: ...
def named_parameters(
    module: nn.Module, prefix: str, recurse: bool, remove_duplicate: bool, /
) -> Iterator[tuple[str, nn.Parameter]] | None: ...
def parameters(module: nn.Module, recurse: bool, /) -> Iterator[nn.Parameter] | None: ...
def named_buffers(
    module: nn.Module, prefix: str, recurse: bool, remove_duplicate: bool, /
) -> Iterator[tuple[str, torch.Tensor]] | None: ...
def buffers(module: nn.Module, recurse: bool, /) -> Iterator[torch.Tensor] | None: ...
def named_modules(
    module: nn.Module, memo: set[nn.Module] | None, prefix: str, remove_duplicate: bool, /
) -> Iterator[tuple[str, nn.Module]] | None: ...
def modules(module: nn.Module, remove_duplicate: bool, /) -> Iterator[nn.Module] | None: ...
def named_children(module: nn.Module, /) -> Iterator[tuple[str, nn.Module]] | None: ...
def children(module: nn.Module, /) -> Iterator[nn.Module] | None: ...
def get_submodule(module: nn.Module, target: str, /) -> nn.Module | None: ...
def get_parameter(module: nn.Module, target: str, /) -> nn.Parameter | None: ...
def get_buffer(module: nn.Module, target: str, /) -> torch.Tensor | None: ...

# A Python function with one of the walkers above in front of it: called like
# `function`, it answers with `walker(every parameter, in order)` and runs
# `function` when the walker answers None or the arguments are not plainly
# bound (see csrc/bindings/drop_in.h). Binds as a method on a class.
class DropIn:
    __wrapped__: Callable[..., Any]
    def __init__(self, walker: Callable[..., Any], function: Callable[..., Any]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, instance: object, owner: type | None = None) -> Any: ...

# The destination filled as `module.state_dict(destination=, prefix=,
# keep_vars=)` fills it (a new OrderedDict with `_metadata` for None), or None
# when PyTorch must answer for the root (nothing has been written then).
def state_dict(module: nn.Module, destination: Any, prefix: str, keep_vars: bool, /) -> Any: ...

# Functions torchwalk.install() put on nn.Module, by attribute name: the
# walkers accept them as nn.Module's own ({} accepts only the originals).
def set_replacements(replacements: dict[str, Any], /) -> None: ...

# --- The walk-once snapshot (csrc/tree/): flat records of one walk. ---------
#
# Module positions are numbered in the order of
# `named_modules(remove_duplicate=False)` (root = 0; a module held at several
# places has a position at each, its subtree repeated). Leaves are numbered per
# position: the position's parameters (non-None, dict order), then, when
# buffers are walked, its buffers; so filtering leaves gives exactly
# `named_parameters(remove_duplicate=False)` / `named_buffers(...)` order.

class TreeRecords:
    # Module positions.
    def module_count(self) -> int: ...
    def module_path(self, position: int, /) -> str: ...  # "" for the root
    def module_name(self, position: int, /) -> str: ...  # last path component, "" for the root
    def module_type(self, position: int, /) -> str: ...  # type(module).__name__ ("" from a mapping)
    def module_object(self, position: int, /) -> nn.Module | None: ...  # None from a mapping
    def module_parent(self, position: int, /) -> int: ...  # -1 for the root
    def module_depth(self, position: int, /) -> int: ...  # root 0
    def module_children(self, position: int, /) -> list[int]: ...  # child positions, in order
    def module_leaves(self, position: int, /) -> list[int]: ...  # its own leaves, in order
    def module_first(self, position: int, /) -> int: ...  # first position of the same module object
    # A hash of the subtree's structure (types, member and child names, leaf
    # shapes and dtypes, all the way down): equal for identical siblings.
    def module_shape_hash(self, position: int, /) -> int: ...
    # Figures over the subtree, each tensor object once, lazy parameters left
    # out: (params, trainable, frozen, bytes, buffers, buffer_bytes,
    # uninitialized).
    def module_totals(self, position: int, /) -> tuple[int, int, int, int, int, int, int]: ...
    # Leaves.
    def leaf_count(self) -> int: ...
    def unique_leaf_count(self) -> int: ...  # distinct parameters plus distinct buffers
    def leaf_path(self, leaf: int, /) -> str: ...  # full dotted name
    def leaf_name(self, leaf: int, /) -> str: ...  # name in its module
    def leaf_module(self, leaf: int, /) -> int: ...  # module position
    def leaf_is_buffer(self, leaf: int, /) -> bool: ...
    def leaf_tensor(self, leaf: int, /) -> torch.Tensor: ...
    # The first leaf holding the same tensor object as a parameter (for a
    # parameter) or as a buffer (for a buffer), as the views de-duplicate.
    def leaf_first(self, leaf: int, /) -> int: ...
    def leaf_is_lazy(self, leaf: int, /) -> bool: ...  # an uninitialized (lazy) parameter or buffer
    # For a leaf in a tie group of kind shared, alias or overlap that is not
    # the group's first name: that first leaf ("tied to ..."). Otherwise -1.
    def leaf_tied_to(self, leaf: int, /) -> int: ...
    # Views equal to the drop-ins' results at walk time.
    def named_parameters(self) -> list[tuple[str, nn.Parameter]]: ...
    def named_buffers(self) -> list[tuple[str, torch.Tensor]]: ...
    def named_modules(self) -> list[tuple[str, nn.Module]]: ...
    # Tie groups: (names, kind, nbytes, overcount_nbytes), in the
    # order of their first name.
    def tie_groups(self) -> list[tuple[list[str], str, int, int]]: ...
    # Whole-tree totals except the ties: params, params_unique,
    # bytes_unique, trainable, frozen, uninitialized, bytes, buffers,
    # buffer_bytes, bytes_by_dtype ({"torch.float32": n}), bytes_by_device
    # ({"cpu": n}), and local_params / local_bytes: the parameters this rank
    # holds (a DTensor's local shard; all of any other tensor).
    def totals(self) -> dict[str, Any]: ...

# `sharded_class` is DTensor when torch.distributed.tensor is loaded: its
# instances count as global tensors, their local shard holds their memory.
def walk_module(
    module: nn.Module, buffers: bool, sharded_class: type | None = None
) -> TreeRecords | None: ...  # None: the module's own methods must answer (see tree.py)
def walk_named(
    modules: list[tuple[str, nn.Module]],
    parameters: list[
        tuple[str, torch.Tensor | tuple[Any, ...]]
    ],  # tensors or (dtype, shape, nbytes, ...) entries
    buffers: list[tuple[str, torch.Tensor]],
    sharded_class: type | None = None,
) -> TreeRecords: ...

# --- Bulk value statistics (csrc/stats/). ------------------------------------
#
# A partial: (count, sum, m2, sum_squares, min, max, absmax, zeros, nans,
# infs, then the count of each edge), what ranks merge. count is the
# elements read (0 for empty and meta tensors), m2 the sum of squared
# deviations from the mean; min, max and absmax leave NaNs out (they are
# counted in nans).
#
# Figures: (numel, mean, std, min, max, absmax, l2, zeros, nans, infs,
# exponents), the fields of torchwalk.TensorStats after its name, None where
# the tensor has no such figure (exponents: unless the table counted them).

Figures = tuple[
    int,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    int | None,
    int | None,
    int | None,
    list[tuple[int, int]] | None,
]

class RowGroups:
    """Groups of row indices, converted once (StatsTable.grouped merges each)."""

    def __init__(self, groups: Iterable[Iterable[int]]) -> None: ...
    def __len__(self) -> int: ...

class StatsTable:
    """The statistics of many tensors, a row each, kept in C++."""

    def __len__(self) -> int: ...
    @staticmethod
    def concatenated(tables: Iterable[StatsTable], /) -> StatsTable: ...
    def figures(self, row: int, /) -> Figures: ...
    # For each edge the table was asked for, the finite values with |x| >= edge.
    def reached(self, row: int, /) -> list[int]: ...
    def merged_figures(self, rows: Iterable[int], /) -> Figures: ...  # as if concatenated
    def total_figures(self) -> Figures: ...
    # A row per group of row indices, merged as if concatenated.
    def grouped(self, groups: RowGroups | Iterable[Iterable[int]], /) -> StatsTable: ...
    # What tw.Monitor logs of each row into `into`, under keys[row]: l2,
    # absmax, mean, std, zeros, nonfinite, and underflow:/overflow: of each
    # format (the table counted two edges per format).
    def add_logged_fields(
        self, into: dict[str, float], keys: list[str], formats: list[str]
    ) -> None: ...
    def anomalous(self) -> list[int]: ...  # rows with a NaN, an Inf, or only zeros
    # What ranks exchange to merge sharded rows: (count, sum, m2, sum_squares,
    # min, max, absmax, zeros, nans, infs, then the count of each edge).
    def partials(self, rows: Iterable[int], /) -> list[tuple[float, ...]]: ...
    def exponent_lists(self, rows: Iterable[int], /) -> list[list[tuple[int, int]]]: ...
    @property
    def counts_exponents(self) -> bool: ...
    # A copy whose `rows` are merged, in rank order, from per_rank[rank][i],
    # the partials of rows[i] on that rank (and exponents_per_rank[rank][i],
    # its exponent_lists), with the global tensors' numels.
    def merged_across_ranks(
        self,
        rows: list[int],
        per_rank: list[list[list[float]]],
        numels: list[int],
        exponents_per_rank: list[list[Any]] | None = None,
    ) -> StatsTable: ...

# path: "kernels" (the CPU and CUDA kernels, ATen on other devices), one
# build of the CPU kernel for CPU tensors ("avx512_cpu", "avx2_cpu",
# "portable_cpu": the last runs on any x86-64), or "aten" (ATen reductions
# for every tensor). All but "kernels" are for tests and benchmarks.
# exponents: count each real tensor's binary exponents; edges (at most 32,
# positive): count the finite values with |x| >= edge, x rounded to float32.
def tensor_stats(
    tensors: list[torch.Tensor],
    path: str = "kernels",
    exponents: bool = False,
    edges: list[float] = ...,
) -> StatsTable: ...
def stats_paths() -> list[str]: ...  # the paths this machine can take

# The tensors with values among `items` (tensors and Nones), or among their
# .grad with grads=True, and a mask with 1 for each item that gave one
# (None, no .grad and meta tensors give none).
def readable_tensors(items: list[Any], grads: bool = False) -> tuple[list[torch.Tensor], bytes]: ...

# --- Checkpoint headers (csrc/checkpoint/). ----------------------------------

# The (name, entry_type(dtype key, shape, nbytes, path, offset)) pairs of a
# parsed .safetensors header (without "__metadata__"), sorted by name;
# dtypes maps the format's dtype names to (bits per element, dtype key).
# Raises ValueError saying what is wrong with the header.
def safetensors_entries(
    header: dict[str, Any],
    path: str,
    data_start: int,
    data_size: int,
    dtypes: dict[str, tuple[int, str]],
    entry_type: Any,
) -> list[tuple[str, Any]]: ...

# --- Comparing pairs of tensors (csrc/compare/). ------------------------------
#
# PairFields: (numel, equal, max_abs, mean_abs, rel_l2, cosine, mismatches),
# the fields of torchwalk.TensorDiff after its name, shapes and dtypes: equal
# is bitwise (same dtype, same bytes); both sides widened to float64; a NaN
# difference makes max_abs, mean_abs and rel_l2 NaN; rel_l2 is 0.0 when
# ||a - b|| and ||b|| are both 0; cosine None when a norm is 0; mismatches
# counts torch.isclose(a, b, rtol, atol, equal_nan=True) == False. An empty
# pair: (0, equal, None, None, None, None, 0).

PairFields = tuple[int, bool, float | None, float | None, float | None, float | None, int]

class PairTable:
    """The comparisons of many pairs of tensors, a row each, kept in C++."""

    def __len__(self) -> int: ...
    @staticmethod
    def concatenated(tables: Iterable[PairTable], /) -> PairTable: ...
    def fields(self, row: int, /) -> PairFields: ...
    def merged_fields(self, rows: Iterable[int], /) -> PairFields: ...  # as if concatenated

# Each pair (a[i], b[i]) compared in one pass reading both: same shape and
# device, real or bool, any dtypes; path as for tensor_stats. ValueError for
# pairs that cannot be compared.
def pair_stats(
    a: list[torch.Tensor],
    b: list[torch.Tensor],
    rtol: float = 0.0,
    atol: float = 0.0,
    path: str = "kernels",
) -> PairTable: ...
