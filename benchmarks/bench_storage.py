"""Overhead of publishing a run to study storage after every epoch (target: <= 3% of epoch time).

Trains the same run twice through the study worker (`vitlab.study.worker.execute`): once in place (the
default storage: the study directory itself, nothing copied) and once with its run directory in a
storage distinct from the study directory (default: a file:// directory on this disk; pass any URL,
e.g. s3://bucket/bench, to measure a real object store). With a storage, the worker trains in a local
scratch directory and, after every epoch, checks its lease and uploads what changed: checkpoints
(last.pt, best.pt when it improved), metrics.jsonl, summary.json. The publish time is measured around
each publish; the epoch time is the wall time between two epochs as the worker sees them (training,
validation, checkpoint writing, publishing).

    python benchmarks/bench_storage.py                          # vit_study_b, CIFAR-100 recipe, synthetic 32 px
    python benchmarks/bench_storage.py --images 45000 --epochs 2 --storage s3://my-bucket/bench

Publishing costs the same whatever the data set size, so the fraction measured on a short synthetic
epoch bounds the fraction of a real (longer) CIFAR-100 epoch from above.
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

from vitlab.config import load_config
from vitlab.schema import to_dict
from vitlab.study import runsync
from vitlab.study.worker import Task, execute

RECIPE = Path(__file__).resolve().parents[1] / "studies" / "base" / "cifar100.yaml"


def run(config: dict, run_dir: Path, storage: str | None) -> dict:
    """Train one run; per-epoch wall times and publish times (publish times only with a storage)."""
    publishes: list[tuple[float, int]] = []
    real_publish = runsync.Publisher.publish

    def timed_publish(self):
        t0 = time.perf_counter()
        done = real_publish(self)
        publishes.append((time.perf_counter() - t0, sum((self.local / rel).stat().st_size for rel in done)))
        return done

    runsync.Publisher.publish = timed_publish
    marks = [time.perf_counter()]
    try:
        out = execute(Task(run_id="bench", config=config, run_dir=str(run_dir), storage=storage),
                      on_epoch=lambda epoch, row: marks.append(time.perf_counter()))
    finally:
        runsync.Publisher.publish = real_publish
    if out.error:
        raise SystemExit(f"training failed: {out.error}")
    epochs = [b - a for a, b in zip(marks, marks[1:])]
    return {"epochs": epochs, "publishes": publishes, "total": time.perf_counter() - marks[0], "summary": out.summary}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_study_b")
    ap.add_argument("--images", type=int, default=6000, help="synthetic training images (before the val split)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--storage", default=None, help="storage URL or path (default: a file:// temp directory)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(str(RECIPE), [f"model.name={args.model}", "data.name=synthetic",
                                    f"data.synthetic_train={args.images}", "data.synthetic_test=1000",
                                    f"train.epochs={args.epochs}", "sched.warmup_epochs=1", "device=cpu",
                                    f"train.threads={args.threads}", "train.progress=false"])
    config = to_dict(cfg)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ[runsync.SCRATCH_ENV] = str(tmp / "scratch")
        storage = args.storage or f"file://{tmp}/bucket"
        in_place = run(config, tmp / "inplace", None)
        stored = run(config, tmp / "study" / "runs" / "bench", storage)
    load1 = os.getloadavg()

    per_epoch = stored["publishes"][:len(stored["epochs"])]
    print(f"# bench_storage: {args.model}, {args.images} synthetic images, {args.epochs} epochs, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}, {date.today()}, "
          f"storage {args.storage or 'file:// (local disk)'}; load average {load0[0]:.1f} -> {load1[0]:.1f}\n")
    print("| epoch | epoch wall (s), in place | epoch wall (s), storage | publish (s) | published MB | publish / epoch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for i, (a, b) in enumerate(zip(in_place["epochs"], stored["epochs"])):
        p, n = per_epoch[i] if i < len(per_epoch) else (0.0, 0)
        print(f"| {i + 1} | {a:.1f} | {b:.1f} | {p:.3f} | {n / 1e6:.1f} | {100 * p / b:.2f}% |")
    final = stored["publishes"][len(stored["epochs"]):]
    total_pub = sum(p for p, _ in stored["publishes"])
    print(f"\nfinal publish (summary, confusion matrix): {sum(p for p, _ in final):.3f} s; "
          f"every publish of the run: {total_pub:.2f} s = {100 * total_pub / stored['total']:.2f}% of its "
          f"{stored['total']:.0f} s; whole run in place {in_place['total']:.0f} s, with storage {stored['total']:.0f} s "
          f"(includes pulling, the lease, scratch set-up)")


if __name__ == "__main__":
    main()
