"""Training-step speed of vitlab's MobileViT-XXS against timm's, side by side in one process.

    bash benchmarks/bench_models_setup.sh          # once: benchmarks/.venv-timm with torch + timm
    benchmarks/.venv-timm/bin/python benchmarks/bench_models.py

Measures forward + backward images/s (train mode, cross-entropy, gradients zeroed each step, no
optimizer step) at 256×256 with the official ImageNet strides, same batch, same threads. The models
run interleaved — every round times each of them once, in rotating order — so that load from other
processes on a shared machine hits all of them alike; the median over rounds is reported, and the
ratio both as a ratio of medians and as the median of the per-round ratios (robust to load drift).

Before timing, timm's weights (randomly perturbed, since timm zero-initializes the classifier) are
copied into the vitlab model — the two have the same parameters in the same order — and the
eval-mode logits are compared: the benchmark exits non-zero unless they are identical (max |Δ| = 0)
and the parameter counts of XXS, XS and S equal timm's — both compute the same function, not just
models of the same size.

timm is used here only, from a benchmark-only virtual environment; `benchmarks/torchvision_stub.py`
satisfies timm's import-time torchvision imports (torchvision cannot be installed beside CPU torch
here; timm's MobileViT does not call it). Without timm the vitlab model is timmed alone.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))
sys.path.insert(0, str(ROOT))

from vitlab.models import count_params, create_model  # noqa: E402


def load_timm(name: str):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        import torchvision_stub

        torchvision_stub.install()
    try:
        import timm
    except ImportError:
        return None
    return timm.create_model(name, num_classes=1000)


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Copy src's state into dst position by position (same shapes in the same order)."""
    s = [v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")]
    d = [(k, v) for k, v in dst.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(s) != len(d) or any(a.shape != b.shape for a, (_, b) in zip(s, d, strict=False)):
        raise SystemExit("state dicts differ in layout; cannot compare outputs")
    dst.load_state_dict({k: a.clone() for a, (k, _) in zip(s, d, strict=True)}, strict=False)


def step(model, x, y) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=12, help="timed rounds (the median is reported)")
    ap.add_argument("--iters", type=int, default=1, help="training steps per model per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time with --threads threads; cpu: CPU time of one thread (robust to "
                    "other processes' load on a shared machine; forces --threads 1)")
    args = ap.parse_args(argv)
    if args.clock == "cpu":
        args.threads = 1
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = create_model("mobilevit_xxs", num_classes=1000, image_size=args.size, strides="imagenet", dropout=0.0)
    theirs = load_timm("mobilevit_xxs")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock, batch {args.batch}, "
          f"{args.size}×{args.size}")
    print(f"params  vitlab mobilevit_xxs: {count_params(ours):,}")
    models = {}
    if theirs is None:
        print("params  timm: not installed (run in benchmarks/.venv-timm); timing vitlab alone")
    else:
        print(f"params  timm   mobilevit_xxs: {count_params(theirs):,}")
        with torch.no_grad():  # timm zero-initializes its classifier: move every weight so the check sees them
            for p in theirs.parameters():
                p.add_(0.02 * torch.randn_like(p))
        copy_weights(theirs, ours)
        with torch.no_grad():
            x = torch.randn(2, 3, args.size, args.size)
            diff = (ours.eval()(x) - theirs.eval()(x)).abs().max().item()
        print(f"same weights, max |logit difference| vitlab vs timm: {diff:.2e}")
        if diff != 0 or count_params(ours) != count_params(theirs):
            raise SystemExit("vitlab's mobilevit_xxs is not timm's: the logits must be identical (max |Δ| = 0)")
        for name in ("mobilevit_xs", "mobilevit_s"):  # the larger presets: the same parameter count
            n_ours, n_timm = count_params(create_model(name, num_classes=1000)), count_params(load_timm(name))
            print(f"params  {name}: vitlab {n_ours:,}, timm {n_timm:,}")
            if n_ours != n_timm:
                raise SystemExit(f"{name}: vitlab has {n_ours:,} parameters, timm {n_timm:,}")
        models["timm (NCHW, its default)"] = theirs.train()
        import copy

        models["timm channels_last"] = copy.deepcopy(theirs).to(memory_format=torch.channels_last).train()
    models["vitlab channels_last"] = ours.to(memory_format=torch.channels_last).train()

    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch,))
    cl = x.contiguous(memory_format=torch.channels_last)
    inputs = {name: cl if "channels_last" in name else x for name in models}
    for name, model in models.items():
        for _ in range(args.warmup):
            step(model, inputs[name], y)
    rates: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = clock()
            for _ in range(args.iters):
                step(models[name], inputs[name], y)
            rates[name].append(args.iters * args.batch / (clock() - t0))
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\nforward+backward img/s ({args.clock} clock), "
          f"median of {args.rounds} rounds × {args.iters} steps (min-max):")
    for name in names:
        print(f"  {name:28s} {med[name]:7.1f}   ({min(rates[name]):.1f}-{max(rates[name]):.1f})")
    if theirs is not None:
        ours = "vitlab channels_last"
        for name in names[:-1]:
            paired = statistics.median(a / b for a, b in zip(rates[ours], rates[name], strict=True))
            print(f"speed ratio vitlab / {name}: {med[ours] / med[name]:.2f}× of medians, "
                  f"{paired:.2f}× median of per-round ratios")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
