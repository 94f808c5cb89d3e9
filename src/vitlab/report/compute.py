"""The compute each level's runs got: optimizer steps (min–max over seeds), wall-clock and CPU seconds of
training, and a flag where the seeds of a level trained different step counts — which under a budget
means the seed-to-seed spread the statistics treat as training noise is partly timing noise."""
from __future__ import annotations

import math
from collections.abc import Sequence

from .formats import Grid, to_csv
from .tables import COMPLETED, MISSING

UNEQUAL = "seeds differ"
"""Flag of a level whose completed seeds trained different step counts."""


def _values(runs: Sequence, key: str) -> list[float]:
    out = []
    for r in runs:
        v = (r.summary or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def _span(values: list[float], fmt: str) -> str:
    if not values:
        return MISSING
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}–{format(hi, fmt)}"


def budget_text(records: Sequence) -> str:
    """What the runs' budget counted, in words (FLOPs, or which clock)."""
    trains = [(r.config or {}).get("train", {}) for r in records]
    if any(t.get("budget_flops") is not None for t in trains):
        return "training FLOPs (train.budget_flops: counted, not timed; no clock was budgeted)"
    clocks = sorted({t.get("budget_clock") or "wall" for t in trains if t.get("budget_minutes") is not None})
    if clocks:
        counted = " and ".join("the CPU time of the run's process" if c == "cpu" else "the wall clock" for c in clocks)
        return f"{counted} of the whole run, evaluations and checkpoints included (train.budget_minutes)"
    return "nothing (train.steps or train.epochs fixed the steps)"


def compute_rows(records: Sequence, factor: str, levels: Sequence[str]) -> list[list[str]]:
    """[level, steps, wall s, CPU s, flag] per level, over its completed runs."""
    rows = []
    for label in levels:
        runs = [r for r in records if r.factor == factor and r.level_label == label and r.status == COMPLETED]
        steps = _values(runs, "steps")
        flag = UNEQUAL if steps and min(steps) != max(steps) else ""
        rows.append([label, str(len(runs)), _span(steps, ",.0f"), _span(_values(runs, "train_time_s"), ".0f"),
                     _span(_values(runs, "train_cpu_s"), ".0f"), flag])
    return rows


HEADER = ["Level", "Runs", "Steps (min–max)", "Training wall s", "Training CPU s", "Equal steps?"]


def compute_grid(records: Sequence, factor: str, levels: Sequence[str]) -> Grid:
    rows = compute_rows(records, factor, levels)
    notes = [f"The budget counted {budget_text([r for r in records if r.factor == factor])}. Steps are each completed "
             "run's optimizer steps; wall and CPU seconds are those of its training steps (train_time_s, "
             f"train_cpu_s; {MISSING} where a summary predates CPU time)."]
    if any(row[-1] for row in rows):
        notes.append(f"'{UNEQUAL}': the seeds of that level trained different step counts, so part of their "
                     "spread is how much they trained, not seed noise.")
    return Grid(f"Factor {factor}: compute per run", HEADER, rows, notes)


def compute_csv(records: Sequence, factor: str, levels: Sequence[str]) -> str:
    return to_csv(["factor"] + HEADER, [[factor] + row for row in compute_rows(records, factor, levels)])


__all__ = ["compute_grid", "compute_csv", "compute_rows", "budget_text"]
