"""Training throughput (img/s) and the share of step time spent in data gathering + augmentation.

Runs a short real training (vitlab.train) per configuration, side by side in one process, and prints a
Markdown table for benchmarks/RESULTS.md. The data share is measured by the loop itself on CPU (on CUDA
the loop does not synchronize, so use `--device cuda --sync` which adds a synchronize around the split).

    python benchmarks/bench_train.py                      # CPU, synthetic data
    python benchmarks/bench_train.py --device cuda --amp bf16 --compile
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

CASES = {
    "vit_nano": ["model.name=vit_nano"],
    "vit_study_b": ["model.name=vit_study_b"],
    "mobilevit_xxs (cifar strides)": ["model.name=mobilevit_xxs"],
}
RECIPES = {
    "crop+flip": [],
    "randaugment+mixup/cutmix+erase": ["aug.policy=randaugment", "aug.mixup_alpha=0.8", "aug.cutmix_alpha=1.0",
                                       "aug.erase_prob=0.25"],
}


def measure(overrides: list[str], epochs: int) -> dict:
    cfg = load_config(None, overrides + [f"train.epochs={epochs}", "train.progress=false"])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = vitlab.train(cfg, d)
        wall = time.perf_counter() - t0
        rows = vitlab.training.read_metrics(d)
    last = rows[-1]  # the first epoch includes warm-up effects (allocator, compile)
    return {"img_s": last["throughput_img_s"], "data_frac": last.get("data_time_frac"), "wall_s": wall,
            "params": s["params"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=4000, help="synthetic training images")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    base = [f"device={args.device}", f"train.amp={args.amp}", f"train.compile={str(args.compile).lower()}",
            "data.name=synthetic", f"data.synthetic_train={args.images}", "data.synthetic_test=500",
            f"train.batch_size={args.batch}"]
    if args.threads:
        base.append(f"train.threads={args.threads}")
    print(f"# bench_train  {date.today()}  {platform.processor() or platform.machine()}  "
          f"torch {torch.__version__}  threads {args.threads or torch.get_num_threads()}  device {args.device}  "
          f"amp {args.amp}  compile {args.compile}  batch {args.batch}\n")
    print("| model | augmentation | params | train img/s | data+augment share of step |")
    print("|---|---|---:|---:|---:|")
    for name, model in CASES.items():
        for recipe, aug in RECIPES.items():
            r = measure(base + model + aug, args.epochs)
            share = f"{r['data_frac']:.1%}" if r["data_frac"] is not None else "n/a (no device sync)"
            print(f"| {name} | {recipe} | {r['params'] / 1e6:.2f}M | {r['img_s']:.0f} | {share} |", flush=True)


if __name__ == "__main__":
    main()
