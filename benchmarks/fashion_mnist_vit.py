"""Real-data result: a small ViT on Fashion-MNIST (from the data root), test top-1 and wall-clock.

    VITLAB_DATA_ROOT=../shared/data python benchmarks/fashion_mnist_vit.py [--epochs 10] [key=value ...]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date

import torch

import vitlab
from vitlab.config import load_config

RECIPE = [
    "data.name=fashion_mnist", "model.name=vit_nano", "model.patch_size=4",
    "train.batch_size=128", "optim.lr=2e-3", "optim.weight_decay=0.05", "sched.warmup_epochs=1",
    "aug.crop_padding=2", "aug.hflip=true", "train.label_smoothing=0.1", "train.progress=false",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    cfg = load_config(None, RECIPE + [f"train.epochs={a.epochs}"] + a.overrides)
    out = a.out or tempfile.mkdtemp(prefix="fmnist-")
    t0 = time.perf_counter()
    s = vitlab.train(cfg, out)
    wall = time.perf_counter() - t0
    print(f"# fashion_mnist  {date.today()}  {platform.machine()}  threads {torch.get_num_threads()}  "
          f"torch {torch.__version__}")
    print(f"model {cfg.model.name} params {s['params']:,}  epochs {s['epochs_run']} (best {s['best_epoch']})  "
          f"val_top1 {s['val_top1']:.4f}  test_top1 {s['test_top1']:.4f}  test_top5 {s['test_top5']:.4f}  "
          f"test_f1_macro {s['test_f1_macro']:.4f}  train {s['throughput_img_s']:.0f} img/s  "
          f"wall {wall / 60:.1f} min  -> {out}")


if __name__ == "__main__":
    main()
