"""Study-shaped data for the report tests: RunRecords with per-epoch curves, built without training.

The report only reads finished runs, so its tests build the records directly: learning curves
y(e) = acc * (1 - exp(-e / tau)) plus seeded noise, and summaries consistent with those curves
(val_top1 = the best epoch's value, as the trainer writes it).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from vitlab.study.index import RunRecord


FACTOR = "model.attn_norm"
LEVELS = [("softmax", 0.70), ("zscore", 0.73), ("cosine", 0.68), ("sigmoid", 0.66)]
SEEDS = [0, 1, 2]
EPOCHS = 8


def make_run(factor: str, label: str, order: int, seed: int, acc: float, status: str = "completed",
             epochs: int = EPOCHS, test_curves: bool = True, dataset: str = "synthetic") -> RunRecord:
    rng = np.random.default_rng(1000 * seed + order)
    rows = []
    for e in range(1, epochs + 1):
        p = acc * (1 - math.exp(-e / 2.5))
        row = {"epoch": e, "lr": 1e-3, "train_loss": 2.3 * math.exp(-e / 3) + 0.2 + 0.02 * rng.standard_normal(),
               "train_top1": min(1.0, p + 0.05 + 0.01 * rng.standard_normal()),
               "val_top1": p + 0.01 * rng.standard_normal(), "val_loss": 2.0 * math.exp(-e / 3) + 0.5}
        if test_curves:
            row["test_top1"] = p - 0.01 + 0.01 * rng.standard_normal()
        rows.append(row)
    best = max(rows, key=lambda r: r["val_top1"])
    test = best["val_top1"] - 0.01 + 0.005 * rng.standard_normal()
    summary = {"status": status, "dataset": dataset, "synthetic": dataset == "synthetic",
               "epochs_run": epochs, "best_epoch": best["epoch"], "params": 1_234_567 * (order + 1),
               "train_time_s": 240.0 + 7.0 * seed + 3.0 * order, "train_loss": best["train_loss"],
               "train_top1": best["train_top1"], "val_top1": best["val_top1"], "val_loss": best["val_loss"],
               "test_loss": 1.0 - acc + 0.01 * rng.standard_normal(), "test_top1": test,
               "test_top5": min(1.0, test + 0.2), "test_precision_macro": test + 0.004,
               "test_recall_macro": test, "test_f1_macro": test - 0.003,
               "test_ece": 0.03 + 0.005 * order + 0.002 * rng.standard_normal()}
    if status == "diverged":
        summary.update(train_loss=math.nan, test_top1=math.nan, test_loss=math.nan)
        for r in rows[3:]:
            r.update(train_loss=math.nan, val_top1=math.nan)
    if status in ("failed", "running"):
        rows = rows[:3]
        summary = {"status": status, "error": "boom"} if status == "failed" else {"status": status}
    cfg = {"seed": seed, "data": {"name": dataset, "val_fraction": 0.1}, "train": {"monitor": "val_top1"}}
    return RunRecord(run_id=f"{label}-s{seed}", factor=factor, level=label, level_label=label, level_order=order,
                     seed=seed, status=status, attempts=1, varied={factor: label}, config=cfg, summary=summary,
                     epochs=rows)


def study_records(statuses: dict | None = None, drop: set | None = None) -> list[RunRecord]:
    """3 levels x 3 seeds of FACTOR (the 4th level, 'sigmoid', has no runs: a partial study).
    `statuses[(label, seed)]` overrides a run's status; `drop` leaves (label, seed) out."""
    statuses, drop = statuses or {}, drop or set()
    return [make_run(FACTOR, lab, i, s, acc, statuses.get((lab, s), "completed"))
            for i, (lab, acc) in enumerate(LEVELS[:3]) for s in SEEDS if (lab, s) not in drop]


def study_meta(**extra) -> dict:
    return {"name": "attention normalization", "kind": "study", "factors": {FACTOR: [lab for lab, _ in LEVELS]},
            "reference": {FACTOR: "softmax"}, "metrics": ["test_top1", "val_top1"], "seeds": SEEDS, **extra}


def test_records_are_runrecord_shaped():
    """The builder fills every field of the index's record type, consistently with the trainer."""
    rec = make_run(FACTOR, "softmax", 0, 1, 0.7)
    names = {f.name for f in dataclasses.fields(RunRecord)}
    assert {"run_id", "factor", "level_label", "level_order", "seed", "status", "summary", "epochs"} <= names
    assert rec.summary["val_top1"] == max(r["val_top1"] for r in rec.epochs)
    assert [r["epoch"] for r in rec.epochs] == list(range(1, EPOCHS + 1))
