"""Tied weights: the names that share one storage, as ``ParamTree.ties()`` gives them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TieGroup:
    """Names that share one storage.

    Attributes:
        names (list[str]): the parameters' names, then the buffers', each
            in walk order; the first is the one ``named_parameters()`` keeps.
        kind (str): ``"shared"``, ``"alias"``, ``"overlap"`` or ``"packed"``.
        nbytes (int): the bytes the group occupies once.
        overcount_nbytes (int): what counting every name separately would add.
    """

    names: list[str]
    kind: str
    nbytes: int
    overcount_nbytes: int


__all__ = ["TieGroup"]
