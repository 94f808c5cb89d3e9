"""Levels of a study's factors: when two level values are the same level, and how a level is shown.

A leaf of the study package: the spec schema uses it to refuse a level listed twice, the planning of
runs to find a level again, the index and the reports to label rows.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..identity import canonical_json

BRIEF_LABEL_CHARS = 80
"""Longest level label quoted in an error message (longer ones are cut, with "...")."""


def value_key(v: Any) -> str:
    """Identity of a level value: 2 and 2.0 are the same level (config fields coerce them alike)."""
    def norm(x):
        if isinstance(x, float) and x.is_integer():
            return int(x)
        if isinstance(x, (list, tuple)):
            return [norm(e) for e in x]
        if isinstance(x, dict):
            return {k: norm(e) for k, e in x.items()}
        return x
    return canonical_json(norm(v))


def level_label(value: Any) -> str:
    """How a level is shown in tables: `4`, `0.5`, `softmax`, `none`, `[1, 2]`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(level_label(v) for v in value) + "]"
    return str(value)


def brief_label(value: Any) -> str:
    """`level_label` capped for an error message."""
    text = level_label(value)
    return text if len(text) <= BRIEF_LABEL_CHARS else text[:BRIEF_LABEL_CHARS - 3] + "..."


def combo_label(combo: Mapping) -> str:
    """Label of a grid cell or search trial: `num_heads=4, dim=64` (full keys when short ones clash)."""
    short = [k.split(".")[-1] for k in combo]
    names = short if len(set(short)) == len(short) else list(combo)
    return ", ".join(f"{n}={level_label(v)}" for n, v in zip(names, combo.values()))
