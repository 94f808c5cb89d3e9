"""Augmentation throughput (images/s) of `vitlab.data.Augmenter.train_batch` on one device.

Times batches of 128×3×32×32 uint8 images (synthetic dataset) through several recipes and prints a
Markdown table for benchmarks/RESULTS.md, with the machine and the date.

    python benchmarks/bench_augment.py                   # CPU, 1 thread
    python benchmarks/bench_augment.py --threads 0       # CPU, torch's default thread count
    python benchmarks/bench_augment.py --device cuda
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date

import torch

from vitlab.config import AugmentConfig, DataConfig
from vitlab.data import Augmenter, load_dataset

RECIPES = {
    "eval (normalize only)": None,
    "default: crop 4 + flip": {},
    "randaugment(2, 9) + mixup 0.8": dict(policy="randaugment", mixup_alpha=0.8),
    "randaugment + mixup/cutmix + erase 0.25": dict(policy="randaugment", mixup_alpha=0.8, cutmix_alpha=1.0,
                                                    erase_prob=0.25),
    "trivialaugment + jitter 0.4 + rot 15": dict(policy="trivialaugment", color_jitter=0.4, rotation_deg=15.0),
    "default, resized 32 -> 72": {"_out": 72},
}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(aug: Augmenter | None, eval_aug: Augmenter, x, y, gen, device, batches: int, rounds: int) -> float:
    """Median images/s over `rounds` timings of `batches` batches each (after one warm-up batch)."""
    def one():
        if aug is None:
            eval_aug.eval_batch(x)
        else:
            aug.train_batch(x, y, gen)

    one()
    rates = []
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(batches):
            one()
        sync(device)
        rates.append(batches * x.shape[0] / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20, help="batches per timing round")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds (the median is reported)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: stable numbers on a shared machine; 0 = torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_dataset(DataConfig(synthetic_train=args.batch * 2, synthetic_test=args.batch), seed=0, device=device)
    x, y = data.train_x[: args.batch], data.train_y[: args.batch]
    gen = torch.Generator(device=device).manual_seed(0)

    cpu = f"{cpu_name()} ({os.cpu_count()} cores)"
    print(f"# Augmentation throughput, batch {args.batch}x{data.in_chans}x{data.image_size}x{data.image_size} uint8")
    print(f"{date.today().isoformat()}, {platform.node()}, {cpu}, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| recipe | images/s | ms / batch |")
    print("|---|---:|---:|")
    for name, recipe in RECIPES.items():
        kw = dict(recipe or {})
        out = kw.pop("_out", data.image_size)
        cfg = AugmentConfig(**kw)
        aug = None if recipe is None else Augmenter(cfg, data.mean, data.std, data.num_classes, out)
        eval_aug = Augmenter(cfg, data.mean, data.std, data.num_classes, out)
        rate = throughput(aug, eval_aug, x, y, gen, device, args.batches, args.rounds)
        print(f"| {name} | {rate:,.0f} | {1000 * args.batch / rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
