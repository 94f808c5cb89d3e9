"""float32 against bf16 (what `train.amp=auto` picks on a CPU with bf16 units): training-step and
inference images/s of vit_study_b and mobilevit_xxs (`strides=cifar`), in one process.

    python benchmarks/bench_amp.py                          # 2 threads, wall clock, 8 rounds
    python benchmarks/bench_amp.py --clock cpu --rounds 6   # 1 thread, CPU time: robust to other load
    python benchmarks/bench_amp.py --profile vit_study_b    # top ops of one bf16 training step

Input: batch 128 (inference 256) of 32×32 one-channel images, 10 classes. A training step is what the
trainer does: autocast forward, float32 cross-entropy with label smoothing, backward, gradient
clipping, AdamW. The precisions run interleaved — every round times each (model, precision) once, in
rotating order — so load from other processes hits all alike; the ratio reported is the median of the
per-round bf16 ÷ float32 ratios. The load average (uptime) and date are printed with the table.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vitlab.models import create_model  # noqa: E402
from vitlab.training.loop import param_groups, soft_cross_entropy  # noqa: E402
from vitlab.training.precision import autocast, cpu_has_bf16_units  # noqa: E402

MODELS = {"vit_study_b": {}, "mobilevit_xxs": {"strides": "cifar"}}
PRECISIONS = ("none", "bf16")
IMAGE, CHANNELS, CLASSES = 32, 1, 10
LABEL_SMOOTHING, GRAD_CLIP, LR, WEIGHT_DECAY = 0.1, 1.0, 1e-3, 0.05
"""The trainer's defaults (train.label_smoothing, train.grad_clip) and a typical AdamW setting."""


class Case:
    """One model in one precision, with its own weights and optimizer."""

    def __init__(self, base: torch.nn.Module, amp: str, device: torch.device):
        self.model, self.amp, self.device = copy.deepcopy(base), amp, device
        self.opt = torch.optim.AdamW(param_groups(self.model, WEIGHT_DECAY, False), lr=LR)

    def train_step(self, x, y) -> None:
        self.model.train()
        with autocast(self.device, self.amp):
            logits = self.model(x)
        loss = soft_cross_entropy(logits.float(), y, LABEL_SMOOTHING)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.opt.step()

    def infer(self, x) -> None:
        self.model.eval()
        with torch.inference_mode(), autocast(self.device, self.amp):
            self.model(x)


def profile(case: Case, x, y, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(2):
        case.train_step(x, y)
    with torch_profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(4):
            case.train_step(x, y)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--infer-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU time of one thread (forces --threads 1), robust to other processes' load")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--profile", choices=tuple(MODELS), help="print the top ops of 4 bf16 training steps and exit")
    ap.add_argument("--profile-amp", choices=PRECISIONS, default="bf16")
    args = ap.parse_args(argv)
    if args.clock == "cpu":
        args.threads = 1
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    x = torch.randn(args.batch, CHANNELS, IMAGE, IMAGE)
    y = torch.randint(0, CLASSES, (args.batch,))
    xi = torch.randn(args.infer_batch, CHANNELS, IMAGE, IMAGE)
    if args.profile:
        base = create_model(args.profile, num_classes=CLASSES, in_chans=CHANNELS, image_size=IMAGE,
                            **MODELS[args.profile])
        profile(Case(base, args.profile_amp, device), x, y, 25)
        return 0
    names = args.models.split(",")
    cases = {}
    for name in names:
        base = create_model(name, num_classes=CLASSES, in_chans=CHANNELS, image_size=IMAGE, **MODELS[name])
        for amp in PRECISIONS:
            cases[(name, amp)] = Case(base, amp, device)
    print(f"# bench_amp  {date.today()}  torch {torch.__version__}  {args.threads} thread(s), {args.clock} clock  "
          f"bf16 units: {cpu_has_bf16_units()}  load average at start {os.getloadavg()[0]:.2f}")
    for case in cases.values():  # warm-up: allocator, oneDNN primitive caches
        case.train_step(x, y)
        case.infer(xi)
    keys = list(cases)
    train = {k: [] for k in keys}
    infer = {k: [] for k in keys}
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t = clock()
            cases[k].train_step(x, y)
            train[k].append(args.batch / (clock() - t))
            t = clock()
            cases[k].infer(xi)
            infer[k].append(args.infer_batch / (clock() - t))
    load_end = os.getloadavg()[0]
    print(f"\n| model | what | float32 img/s | bf16 img/s | bf16 ÷ float32 (median of per-round ratios) |")
    print("|---|---|---:|---:|---:|")
    for name in names:
        for what, rates in (("train step", train), ("inference", infer)):
            f32, b16 = rates[(name, "none")], rates[(name, "bf16")]
            paired = statistics.median(b / a for a, b in zip(f32, b16, strict=True))
            print(f"| {name} | {what} | {statistics.median(f32):.0f} | {statistics.median(b16):.0f} | "
                  f"{paired:.2f}× |")
    print(f"\n{args.rounds} rounds; load average at end {load_end:.2f} ({args.threads} thread(s), {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
