"""Cost of recording the attention entropy per layer each epoch (`attn_entropy_norm` in metrics.jsonl),
relative to the epoch it is recorded in.

    python benchmarks/bench_entropy.py [--model vit_study_b] [--images 4000] [--threads 2] [key=value ...]

Builds the trainer of a real run (synthetic 32×32 data), times one training epoch over `--images`
images and the entropy recording (median of 5 calls, on the fixed `ENTROPY_IMAGES` validation
images), and reports the share for that epoch and for a CIFAR-sized epoch (45,000 training images,
the epoch time scaled linearly).
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

from vitlab.config import load_config
from vitlab.training.loop import ENTROPY_IMAGES, Trainer
from vitlab.training.progress import EpochProgress

CIFAR_TRAIN = 45_000
"""Training images per epoch of the CIFAR studies (50,000 minus 10% validation)."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_study_b")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    cfg = load_config(None, ["data.name=synthetic", f"data.synthetic_train={a.images}", "data.synthetic_test=200",
                             f"model.name={a.model}", "train.progress=false", f"train.threads={a.threads}",
                             "train.epochs=1"] + a.overrides)
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="bench-entropy-")), False)
    trainer.plan_steps()
    bar = EpochProgress(1, trainer.steps_per_epoch, enabled=False)
    load0 = os.getloadavg()[0]
    trainer.attention_entropy()  # warm-up
    t = time.perf_counter()
    row = trainer.train_epoch(bar)
    epoch_s = time.perf_counter() - t
    calls = []
    for _ in range(5):
        t = time.perf_counter()
        h = [v for k, v in trainer.attention_entropy().items() if not k.endswith("_mean")]
        calls.append(time.perf_counter() - t)
    ent_s = statistics.median(calls)
    seen = trainer.steps_per_epoch * cfg.train.batch_size
    cifar_epoch = epoch_s * CIFAR_TRAIN / seen
    print(f"# entropy recording  {date.today()}  {platform.machine()}  threads {a.threads}  torch {torch.__version__}  "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{a.model}: {len(h)} layers, entropy on {ENTROPY_IMAGES} val images {1000 * ent_s:.0f} ms (median of 5); "
          f"train epoch of {seen:,} images {epoch_s:.1f} s ({row['throughput_img_s']:.0f} img/s) -> "
          f"{100 * ent_s / epoch_s:.2f}% of this epoch, {100 * ent_s / cifar_epoch:.3f}% of a {CIFAR_TRAIN:,}-image epoch")


if __name__ == "__main__":
    main()
