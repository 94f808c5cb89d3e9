"""Tracking overhead per epoch: what TensorBoard + MLflow cost a training run.

Two measurements, printed as Markdown for benchmarks/RESULTS.md:

1. The trackers' own work, timed synchronously call by call on real metrics.jsonl rows: per epoch
   (`log_epoch`), once at the start (imports, experiment and run creation, params) and once at the end
   (final metrics, confusion-matrix picture, artifacts). In training this work runs on a background
   thread; the training loop itself only enqueues (also timed).
2. End to end: the same run trained with tracking off and on (alternating, `--reps` times each); the
   wall-clock time per epoch (training, validation, checkpoint, tracking) is compared.

    python benchmarks/bench_tracking.py                  # vit_study_b, synthetic 32 px, CPU
    python benchmarks/bench_tracking.py --epochs 6 --reps 3 --images 4000
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

import vitlab
from vitlab.config import load_config
from vitlab.io import read_jsonl
from vitlab.rundir import METRICS_FILE
from vitlab.track import Trackers, run_info
from vitlab.track.mlflow import MlflowTracker
from vitlab.track.tensorboard import TensorBoardTracker


def train_once(base: list[str], track: bool, root: Path, tag: str) -> dict:
    extra = ["track.tensorboard=true", f"track.mlflow={root / 'mlruns'}"] if track else []
    cfg = load_config(None, base + extra)
    out = root / tag
    t0 = time.perf_counter()
    summary = vitlab.train(cfg, out)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "epochs": summary["epochs_run"], "rows": read_jsonl(out / METRICS_FILE),
            "out": out, "cfg": cfg, "summary": summary}


def time_calls(run: dict, root: Path, n_epochs: int) -> dict:
    """Synchronous seconds of each tracker call, replaying `n_epochs` rows built from the run's rows."""
    rows = run["rows"]
    info = run_info(run["cfg"], run["out"], {"study": "bench", "factor": "none", "level": "x", "seed": 0})
    info.run_id = "bench-sync"
    out = {}
    for name, make in (("tensorboard", lambda: TensorBoardTracker(info, root / "tb-sync")),
                       ("mlflow", lambda: MlflowTracker(info, str(root / "mlruns-sync")))):
        t = make()
        t0 = time.perf_counter()
        t.start([], resumed=False)
        start = time.perf_counter() - t0
        per = []
        for e in range(1, n_epochs + 1):
            row = dict(rows[(e - 1) % len(rows)], epoch=e)
            t0 = time.perf_counter()
            t.log_epoch(row)
            per.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        t.finish(run["summary"])
        t.close()
        finish = time.perf_counter() - t0
        out[name] = {"start_s": start, "epoch_s": statistics.median(per), "finish_s": finish}
    # What the training loop pays per epoch: handing the row to the background threads.
    trackers = Trackers([TensorBoardTracker(info, root / "tb-q"), MlflowTracker(info, str(root / "mlruns-q"))])
    trackers.start([], resumed=False)
    enq = []
    for e in range(1, n_epochs + 1):
        t0 = time.perf_counter()
        trackers.log_epoch(dict(rows[0], epoch=e))
        enq.append(time.perf_counter() - t0)
    trackers.finish(run["summary"])
    trackers.close()
    out["enqueue_s"] = statistics.median(enq)
    return out


def import_cost(reps: int = 3) -> float:
    """Seconds a fresh interpreter that has imported vitlab spends importing the two trackers' libraries
    (paid once per run, on the tracker thread); the best of `reps` fresh interpreters."""
    import subprocess
    import sys

    code = ("import time, vitlab; t = time.perf_counter(); import torch.utils.tensorboard, mlflow.tracking; "
            "print(time.perf_counter() - t)")
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    return min(float(subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True,
                                    text=True).stdout) for _ in range(reps))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_study_b")
    ap.add_argument("--images", type=int, default=2560, help="synthetic training images")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    base = ["device=cpu", "data.name=synthetic", f"data.synthetic_train={args.images}", "data.synthetic_test=1000",
            f"model.name={args.model}", f"train.epochs={args.epochs}", "train.progress=false",
            f"train.threads={args.threads}", "sched.warmup_epochs=1"]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        runs = {False: [], True: []}
        for rep in range(args.reps):
            for track in (False, True):
                runs[track].append(train_once(base, track, root, f"{'on' if track else 'off'}-{rep}"))
        calls = time_calls(runs[True][0], root, n_epochs=30)
    imports = import_cost()
    per_epoch = {k: statistics.median(r["wall_s"] / r["epochs"] for r in v) for k, v in runs.items()}
    train_epoch = statistics.median(row["epoch_time_s"] for r in runs[False] for row in r["rows"])
    tracker_epoch = calls["tensorboard"]["epoch_s"] + calls["mlflow"]["epoch_s"]
    once = imports + sum(calls[n]["start_s"] + calls[n]["finish_s"] for n in ("tensorboard", "mlflow"))
    print(f"## Tracking overhead (`bench_tracking.py`), {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}\n")
    print(f"{args.model}, synthetic {args.images} training images, {args.epochs} epochs, "
          f"{args.reps} runs each with tracking off / on (TensorBoard + MLflow file store).\n")
    print("| tracker | start (once) | per epoch | finish (once) |\n|---|---:|---:|---:|")
    for n in ("tensorboard", "mlflow"):
        c = calls[n]
        print(f"| {n} | {c['start_s'] * 1e3:.0f} ms | {c['epoch_s'] * 1e3:.2f} ms | {c['finish_s'] * 1e3:.0f} ms |")
    print(f"| importing tensorboard + mlflow | {imports * 1e3:.0f} ms | | |")
    print(f"| training loop (enqueue both) | | {calls['enqueue_s'] * 1e6:.0f} µs | |\n")
    print(f"- training part of an epoch (off): {train_epoch:.2f} s; whole epoch incl. validation (off): "
          f"{per_epoch[False]:.2f} s")
    print(f"- trackers' per-epoch work: {tracker_epoch * 1e3:.2f} ms = "
          f"{100 * tracker_epoch / per_epoch[False]:.3f}% of an epoch (on a background thread)")
    print(f"- one-off imports + start + finish: {once:.2f} s = {100 * once / (per_epoch[False] * args.epochs):.1f}% of this "
          f"{args.epochs}-epoch run ({100 * once / (per_epoch[False] * 30):.2f}% of a 30-epoch one)")
    print(f"- end to end, wall time per epoch: off {per_epoch[False]:.2f} s, on {per_epoch[True]:.2f} s "
          f"({100 * (per_epoch[True] / per_epoch[False] - 1):+.1f}%, one-off costs included; runs: "
          + ", ".join(f"{r['wall_s']:.1f}" for r in runs[False]) + " s off / "
          + ", ".join(f"{r['wall_s']:.1f}" for r in runs[True]) + " s on)")


if __name__ == "__main__":
    main()
