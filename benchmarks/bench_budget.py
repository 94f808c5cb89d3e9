"""Does a time-budgeted run end within its budget? Real `vitlab.train` runs with `train.budget_minutes`.

    VITLAB_DATA_ROOT=../shared/data python benchmarks/bench_budget.py --budgets 2,5 \
        --models mobilevit_xxs,vit_study_b [key=value ...]

Each run uses the Fashion-MNIST recipe (studies/base/fashion_mnist.yaml) plus the overrides, and is
timed from the `vitlab.train` call to its return (data loading, calibration, training, per-epoch
evaluations and checkpoints, final test evaluation: everything the budget covers; not the Python
start-up), in wall-clock and in CPU time of the process. Prints one Markdown row per run: the budget
and its clock (`train.budget_clock=cpu` to budget CPU time), the time used on that clock ÷ the
budget, the step count the calibration fixed, the step time it measured against the (wall) step time
training then had, and the load average of the machine before and after (the machine may be shared).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

import vitlab
from vitlab.config import load_config

RECIPE = Path(__file__).resolve().parents[1] / "studies" / "base" / "fashion_mnist.yaml"


def run(model: str, budget: float, overrides: list[str]) -> dict:
    cfg = load_config(RECIPE, [f"model.name={model}", f"train.budget_minutes={budget}", "train.progress=false",
                               *overrides])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        s = vitlab.train(cfg, out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps, epochs = s["steps"], s["epochs_run"]
    # Mean training step time of the run (epoch_time_s covers the steps only) against the calibration's.
    step_s = s["train_time_s"] / steps
    used = cpu if cfg.train.budget_clock == "cpu" else wall
    return {"model": model, "budget_s": budget * 60, "clock": cfg.train.budget_clock, "wall_s": wall,
            "cpu_s": cpu, "used_s": used, "steps": steps, "epochs": epochs,
            "cal_step_s": s["budget_step_s"], "step_s": step_s, "cal_s": s["budget_calibration_s"],
            "test_top1": s["test_top1"], "load": (load_before, os.getloadavg()[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", default="2,5", help="budgets in minutes, comma-separated")
    ap.add_argument("--models", default="mobilevit_xxs,vit_study_b", help="comma-separated")
    ap.add_argument("overrides", nargs="*", help="config key=value, e.g. train.threads=1")
    a = ap.parse_args()
    print(f"# {date.today()}  {platform.machine()} {os.cpu_count()} CPUs  torch {torch.__version__}  "
          f"overrides {a.overrides} (train.threads: the run's threads; default torch's choice)")
    print("| model | budget (clock) | wall clock | CPU time | used ÷ budget | steps (epochs) | calibrated step | "
          "wall step in training | calibration | test top-1 | load avg before → after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for budget in (float(b) for b in a.budgets.split(",")):
        for model in a.models.split(","):
            r = run(model, budget, a.overrides)
            print(f"| {r['model']} | {r['budget_s'] / 60:g} min ({r['clock']}) | {r['wall_s']:.1f} s | "
                  f"{r['cpu_s']:.1f} s | {r['used_s'] / r['budget_s']:.3f} | {r['steps']} ({r['epochs']}) | "
                  f"{r['cal_step_s'] * 1000:.0f} ms | {r['step_s'] * 1000:.0f} ms | {r['cal_s']:.1f} s | "
                  f"{r['test_top1']:.2%} | {r['load'][0]:.1f} → {r['load'][1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
