"""pandas DataFrames of runs and of their per-epoch metrics (`pip install 'vitlab[pandas]'`).

Rows are plain dicts built by the caller (one per run, or per run and epoch); this module adds the
summary and flattened config columns and makes the frame."""
from __future__ import annotations

from typing import Iterable

from .base import flatten, require


def with_details(row: dict, summary: dict, config: dict) -> dict:
    """`row` extended with every scalar summary field and every config field (dotted names, e.g.
    `model.num_heads`) that it does not have yet; the row's own values win."""
    out = dict(row)
    for k, v in summary.items():
        if not isinstance(v, (dict, list)):
            out.setdefault(k, v)
    for k, v in flatten(config).items():
        out.setdefault(k, v)
    return out


def epoch_rows(keys: dict, epochs: Iterable[dict]) -> list[dict]:
    """One row per epoch: `keys` (run_id, factor, level, seed) then the epoch's metrics."""
    return [{**keys, "epoch": e.get("epoch"), **{k: v for k, v in e.items() if k != "epoch"}} for e in epochs]


def to_frame(rows: list[dict], what: str):
    """A DataFrame of `rows` with the union of their keys as columns, in first-seen order."""
    pd = require("pandas", "pandas", what)
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return pd.DataFrame(rows, columns=list(cols))
