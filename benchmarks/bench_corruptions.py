"""The corruption sweep of `vitlab analyze`: 15 corruptions × 5 severities over N test images, the time
spent generating the corruptions and the time spent classifying them.

    python benchmarks/bench_corruptions.py [--images 10000] [--model vit_study_b] [--threads 2]
                                           [--generation-only] [--batch 500] [--amp auto|bf16|none]

Runs `vitlab.analysis.robustness.compute_robustness` itself (the code `vitlab analyze` runs) on
CIFAR-shaped synthetic images (32×32 RGB; timing does not depend on the pixels) with an untrained
model (timing does not depend on the weights). `--generation-only` replaces the model by a constant
classifier, so only the corruptions are timed. `--amp` is the precision the run would have trained and
be evaluated in (`train.amp`; auto resolves as training does: bf16 on a CPU with bf16 units).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from types import SimpleNamespace

import torch

from vitlab.analysis.options import make_options
from vitlab.analysis.robustness import compute_robustness
from vitlab.data import Augmenter
from vitlab.config import AugmentConfig
from vitlab.data.synthetic import load as load_synthetic
from vitlab.models import create_model
from vitlab.training.precision import autocast, resolve_amp


class BenchRun:
    """The parts of a LoadedRun the sweep uses, timing the classifier separately."""

    def __init__(self, x, y, model, classes: int, amp: str):
        self.data = SimpleNamespace(test_x=x, test_y=y)
        self.model, self.classes, self.amp = model, classes, amp
        self.augment = Augmenter(AugmentConfig(), (0.5,) * 3, (0.25,) * 3, classes, 32)
        self.eval_s = 0.0

    @torch.inference_mode()
    def logits(self, x_uint8, batch: int = 500):
        t = time.perf_counter()
        if self.model is None:
            out = torch.zeros(len(x_uint8), self.classes)
        else:
            with autocast(torch.device("cpu"), self.amp):  # as LoadedRun.logits: the run's precision
                out = torch.cat([self.model(self.augment.eval_batch(x_uint8[i:i + batch])).float()
                                 for i in range(0, len(x_uint8), batch)])
        self.eval_s += time.perf_counter() - t
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--model", default="vit_study_b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--generation-only", action="store_true")
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"))
    a = ap.parse_args()
    amp = resolve_amp(a.amp, torch.device("cpu"))
    torch.set_num_threads(a.threads)
    raw = load_synthetic(10, 10, a.images, 1234)
    model = None if a.generation_only else create_model(a.model, num_classes=100).eval()
    run = BenchRun(raw.test_x, raw.test_y, model, 100, amp)
    opts = make_options(corruption_batch=a.batch)
    load0 = os.getloadavg()[0]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    lines = []

    def progress(m: str) -> None:
        lines.append((time.perf_counter() - t0, m))
        print(f"  {lines[-1][0]:7.1f} s  {m}", flush=True)

    sec = compute_robustness(run, opts, progress=progress)
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(f"# corruption sweep  {date.today()}  {platform.machine()}  threads {a.threads}  torch {torch.__version__}  "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    prev = 0.0
    for t, m in lines:
        print(f"{t - prev:7.1f} s  {m.split(':')[1].split()[0]}")
        prev = t
    n = sec["images"] * 75 + sec["images"]
    what = "generation only" if a.generation_only else f"{a.model}"
    print(f"{what}: {sec['images']:,} images x 15 x 5 (+ clean) = {n:,} images in {total:.1f} s "
          f"({total / 60:.2f} min; {cpu:.0f} CPU-s in this process); classifying {run.eval_s:.1f} s, "
          f"generating {total - run.eval_s:.1f} s")


if __name__ == "__main__":
    main()
