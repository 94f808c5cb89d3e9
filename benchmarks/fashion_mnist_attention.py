"""Real-data analysis example: the same small ViT on Fashion-MNIST with softmax and with z-score attention,
each trained briefly and then analyzed (attention, robustness, calibration, efficiency).

    VITLAB_DATA_ROOT=../shared/data python benchmarks/fashion_mnist_attention.py --out runs/fm-attn \
        [--epochs 4] [--norms softmax zscore] [--corruption-images 2000] [key=value ...]

Prints, per normalization: test top-1, normalized attention entropy per layer, the mean of each query's
largest weight, mean corruption top-1, ECE and batch-1 latency, plus the wall-clock of training and of
each analysis section. Rerunning resumes (finished runs and analyses are kept).
"""
from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import torch

import vitlab
from vitlab.analysis import analyze_run
from vitlab.config import load_config

RECIPE = [
    "data.name=fashion_mnist", "model.name=vit_nano", "model.patch_size=4",
    "train.batch_size=128", "optim.lr=2e-3", "optim.weight_decay=0.05", "sched.warmup_epochs=1",
    "aug.crop_padding=2", "aug.hflip=true", "train.label_smoothing=0.1", "train.progress=false",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--norms", nargs="+", default=["softmax", "zscore"])
    ap.add_argument("--corruption-images", type=int, default=2000)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    print(f"# fashion_mnist attention  {date.today()}  {platform.machine()}  threads {torch.get_num_threads()}  "
          f"torch {torch.__version__}", flush=True)
    for norm in a.norms:
        out = Path(a.out) / norm
        cfg = load_config(None, RECIPE + [f"train.epochs={a.epochs}", f"model.attn_norm={norm}"] + a.overrides)
        t0 = time.perf_counter()
        s = vitlab.train(cfg, out)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        an = analyze_run(out, corruption_images=a.corruption_images, progress=lambda m: print("  " + m, flush=True))
        t_an = time.perf_counter() - t0
        att, rob, cal, eff = an["attention"], an["robustness"], an["calibration"], an["efficiency"]
        times = ", ".join(f"{k} {an[k]['time_s']:.0f}s" for k in ("attention", "robustness", "calibration", "efficiency"))
        ent = " ".join(f"{lay['entropy_norm']:.3f}" for lay in att["layers"])
        mw = " ".join(f"{lay['max_weight']:.3f}" for lay in att["layers"])
        print(f"{norm:8s} test_top1 {s['test_top1']:.4f}  entropy_norm/layer [{ent}]  max_weight/layer [{mw}]  "
              f"clean {rob['clean_top1']:.4f} corrupt {rob['mean_top1']:.4f}  ECE {cal['ece']:.4f}  "
              f"latency {eff['latency_ms_b1']:.2f} ms  train {t_train / 60:.1f} min  analyze {t_an / 60:.1f} min "
              f"({times})",
              flush=True)


if __name__ == "__main__":
    main()
