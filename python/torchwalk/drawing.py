"""The tree drawing of a walked module tree, read from its flat records.

With ``name="net"`` the seed's network draws as::

    net (Sequential)
    ├─ 0: Linear
    │  ├─ weight (8, 4)
    │  └─ bias (8,)
    ├─ 1: ReLU (no params)
    └─ 2: Linear
       ├─ weight (1, 8)
       └─ bias (1,)

A module's own parameters and buffers (``[buffer]``) come first, then its
children, in walk order. A module held a second time is one line,
``4: Linear → same module as 2``; a tensor that shares memory with an earlier
name says so, ``weight (8, 8) → tied to 2.weight``; a lazy parameter is
``weight (uninitialized)``. Identical sibling runs collapse as in the summary
(``0-31: 32 × LlamaDecoderLayer``, the first instance drawn below it); a
module holding nothing but one such run is drawn on the run's line
(``layers.0-31: 32 × LlamaDecoderLayer``). Below ``depth`` one line counts
what is hidden (``└─ … 12 modules, 7.10 M params hidden``).

``ascii=True`` draws with ``|-`` (branch), ```-`` (last branch), ``|`` (the
line going on), ``->`` and ``x`` (``32 x LlamaDecoderLayer``) and ``...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from torchwalk.summary_table import Records, human_count, sibling_runs


@dataclass(frozen=True)
class _Glyphs:
    branch: str
    last_branch: str
    pipe: str
    gap: str
    arrow: str
    times: str
    ellipsis: str


_BOX = _Glyphs("├─ ", "└─ ", "│  ", "   ", "→", "×", "…")
_ASCII = _Glyphs("|- ", "`- ", "|  ", "   ", "->", "x", "...")


@dataclass(frozen=True)
class _Module:
    """A module line to draw: the module at ``position``, standing for ``repeat`` siblings."""

    position: int
    label: str  # the name part of the line: "2", "0-31" or "layers.0-31"
    repeat: int
    end: int  # the position after its subtree (positions are numbered depth-first)


_Item = _Module | str  # a module to draw, or a finished line of text


def render_records(
    records: Records, name: str | None = None, depth: int | None = None, ascii: bool = False
) -> str:
    """Draw the tree of one walk's records.

    Args:
        records (Records): the records of a walk, e.g. ``_C.walk_module(model, True)``.
        name (str, optional): the root's name; the first line is then
            ``NAME (Type)`` instead of ``Type``. Default: ``None``.
        depth (int, optional): the deepest module depth drawn (the root is 0);
            what lies below is counted on one line. Default: ``None``, all.
        ascii (bool): draw with plain ASCII characters. Default: ``False``.

    Returns:
        str: the drawing, lines joined by ``"\\n"``, without a final newline.

    Raises:
        ValueError: if ``depth`` is negative.
    """
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be None or at least 0, got {depth}")
    return _Drawing(records, depth, _ASCII if ascii else _BOX).draw(name)


class _Drawing:
    def __init__(self, records: Records, depth: int | None, glyphs: _Glyphs) -> None:
        self.records = records
        self.depth = depth
        self.glyphs = glyphs

    def draw(self, name: str | None) -> str:
        root_type = self.records.module_type(0)
        if name and root_type:
            first_line = f"{name} ({root_type})"
        else:
            first_line = name or root_type or "(root)"
        lines = [first_line]
        root = _Module(0, "", 1, self.records.module_count())
        # Explicit stack of (item, prefix of its line, is the last of its siblings).
        stack = [(item, "", last) for item, last in reversed(self._items_below(root))]
        while stack:
            item, prefix, last = stack.pop()
            connector = self.glyphs.last_branch if last else self.glyphs.branch
            if isinstance(item, str):
                lines.append(prefix + connector + item)
                continue
            lines.append(prefix + connector + self._module_line(item))
            if self.records.module_first(item.position) == item.position:
                inner_prefix = prefix + (self.glyphs.gap if last else self.glyphs.pipe)
                stack.extend(
                    (inner, inner_prefix, inner_last)
                    for inner, inner_last in reversed(self._items_below(item))
                )
        return "\n".join(lines)

    def _module_line(self, module: _Module) -> str:
        position = module.position
        module_type = self.records.module_type(position)
        if module.repeat > 1:
            module_type = f"{module.repeat} {self.glyphs.times} {module_type}"
        line = f"{module.label}: {module_type}" if module_type else module.label
        first = self.records.module_first(position)
        if first != position:
            return f"{line} {self.glyphs.arrow} same module as {self.records.module_path(first)}"
        if not self.records.module_leaves(position) and not self.records.module_children(position):
            return f"{line} (no params)"
        return line

    def _items_below(self, module: _Module) -> list[tuple[_Item, bool]]:
        """What is drawn below ``module``, each with whether it is the last."""
        position = module.position
        if self.depth is not None and self.records.module_depth(position) >= self.depth:
            hidden = self._hidden_line(module)
            return [] if hidden is None else [(hidden, True)]
        items: list[_Item] = [
            self._leaf_line(leaf) for leaf in self.records.module_leaves(position)
        ]
        children = self.records.module_children(position)
        # Positions are numbered depth-first: a child's subtree ends where the next one begins.
        ends = dict(pairwise([*children, module.end]))
        for run in sibling_runs(self.records, children, keep_repeats=True):
            first = run.positions[0]
            items.append(self._folded(_Module(first, run.label, len(run.positions), ends[first])))
        return [(item, index == len(items) - 1) for index, item in enumerate(items)]

    def _folded(self, module: _Module) -> _Module:
        """``module``, or the one run it holds and nothing else, drawn on its line."""
        if module.repeat > 1 or self.records.module_first(module.position) != module.position:
            return module
        if self.depth is not None and self.records.module_depth(module.position) >= self.depth:
            return module
        if self.records.module_leaves(module.position):
            return module
        children = self.records.module_children(module.position)
        runs = sibling_runs(self.records, children, keep_repeats=True)
        if len(runs) != 1 or len(runs[0].positions) < 2:
            return module
        first = runs[0].positions[0]
        end = runs[0].positions[1]
        return _Module(first, f"{module.label}.{runs[0].label}", len(runs[0].positions), end)

    def _leaf_line(self, leaf: int) -> str:
        line = self.records.leaf_name(leaf)
        if self.records.leaf_is_lazy(leaf):
            line += " (uninitialized)"
        else:
            line += f" {tuple(self.records.leaf_tensor(leaf).shape)}"
        if self.records.leaf_is_buffer(leaf):
            line += " [buffer]"
        tied_to = self.records.leaf_tied_to(leaf)
        if tied_to >= 0:
            line += f" {self.glyphs.arrow} tied to {self.records.leaf_path(tied_to)}"
        return line

    def _hidden_line(self, module: _Module) -> str | None:
        """The count of what lies below a module at the depth cut, None when nothing does."""
        hidden_modules = module.end - module.position - 1
        params, _, _, _, buffers, _, lazy = self.records.module_totals(module.position)
        parts = []
        if hidden_modules:
            parts.append(f"{hidden_modules} module" + ("s" if hidden_modules != 1 else ""))
        if params:
            parts.append(f"{human_count(params)} params")
        if buffers:
            parts.append(f"{human_count(buffers)} buffer elements")
        if lazy:
            parts.append(f"{lazy} uninitialized")
        if not parts and self.records.module_leaves(module.position):
            parts.append("empty tensors")
        if not parts:
            return None
        return f"{self.glyphs.ellipsis} {', '.join(parts)} hidden"
