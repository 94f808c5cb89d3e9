"""How well do K concurrent trials share a machine? Through the study runner itself.

Three small studies of the same run config (vit_nano on synthetic data), each in its own directory
(train.threads is not part of the run ID, so they would otherwise share run directories):

  alone-share : 1 run,  1 worker,  train.threads = cpus // K   (one trial with its share of the CPU)
  alone-all   : 1 run,  1 worker,  train.threads = cpus        (one trial with the whole CPU)
  concurrent  : K runs, K workers, train.threads = cpus // K   (K trials at once, seeds 0..K-1)

Training throughput is each run's summary `throughput_img_s` (mean over epochs of training
images/s, evaluation excluded); the concurrent runs start together and are equally long, so their
sum is the aggregate. Reported ratios:

  scaling    = aggregate / (K x alone-share)   1.0 = no interference between the K trials
  vs_all     = aggregate / alone-all           > 1: K trials at once beat one trial on every core

On a GPU (device auto with CUDA) the workers share the device and threads only affect the host side.

    python benchmarks/bench_concurrency.py               # K=2
    python benchmarks/bench_concurrency.py --k 4 --epochs 3 --images 4000
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from vitlab.study import open_index, run_study
from vitlab.study.backends import cpu_count


def study_spec(name: str, threads: int, seeds: int, epochs: int, images: int, device: str) -> dict:
    return {
        "name": name,
        "base": {
            "device": device,
            "data": {"name": "synthetic", "synthetic_train": images, "synthetic_test": 500, "val_fraction": 0.1},
            "model": {"name": "vit_nano"},
            "sched": {"warmup_epochs": 0},
            "train": {"epochs": epochs, "batch_size": 64, "eval_batch_size": 500, "threads": threads},
        },
        "vary": {"model.attn_norm": ["softmax"]},
        "seeds": seeds,
    }


def measure(root: Path, name: str, workers: int, threads: int, seeds: int, args) -> dict:
    spec = study_spec(name, threads, seeds, args.epochs, args.images, args.device)
    t0 = time.perf_counter()
    result = run_study(spec, root / name, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit(f"{name}: {result.counts} {result.errors}")
    tputs = [r.summary["throughput_img_s"] for r in open_index(root / name).runs()]
    return {"phase": name, "runs": seeds, "workers": workers, "threads_per_run": threads,
            "throughput_per_run": tputs, "aggregate_img_s": sum(tputs), "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=2, help="concurrent trials")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--images", type=int, default=3000, help="synthetic training images (before the val split)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="directory for the studies and results.json (default: a temporary one)")
    args = p.parse_args()
    cpus = cpu_count()
    share = max(1, cpus // args.k)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_concurrency_"))
    phases = [
        measure(root, "alone-share", 1, share, 1, args),
        measure(root, "alone-all", 1, cpus, 1, args),
        measure(root, "concurrent", args.k, share, args.k, args),
    ]
    alone_share, alone_all, conc = (ph["aggregate_img_s"] for ph in phases)
    res = {"date": str(date.today()), "machine": platform.platform(), "processor": platform.processor(),
           "cpus": cpus, "k": args.k, "epochs": args.epochs, "images": args.images, "phases": phases,
           "scaling": conc / (args.k * alone_share), "vs_all": conc / alone_all}
    (root / "results.json").write_text(json.dumps(res, indent=2))
    print(f"| phase | runs x threads | train img/s per run | aggregate img/s | wall s |")
    print("|---|---|---|---|---|")
    for ph in phases:
        per = ", ".join(f"{t:.0f}" for t in ph["throughput_per_run"])
        print(f"| {ph['phase']} | {ph['runs']} x {ph['threads_per_run']} | {per} | {ph['aggregate_img_s']:.0f} | "
              f"{ph['wall_s']:.0f} |")
    print(f"\nK={args.k} on {cpus} CPUs: aggregate = {res['scaling']:.2f} of K x one trial with its share "
          f"({args.k} x {alone_share:.0f} img/s), {res['vs_all']:.2f} x one trial on all {cpus} CPUs "
          f"({alone_all:.0f} img/s).  [{root / 'results.json'}]")


if __name__ == "__main__":
    main()
