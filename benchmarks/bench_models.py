"""Training-step speed of vitlab's models against timm's, side by side in one process.

    bash benchmarks/bench_models_setup.sh          # once: benchmarks/.venv-timm with torch + timm
    benchmarks/.venv-timm/bin/python benchmarks/bench_models.py --clock cpu --rounds 40
    benchmarks/.venv-timm/bin/python benchmarks/bench_models.py --model vit_study_b --clock cpu

Measures forward + backward images/s (train mode, cross-entropy, gradients zeroed each step, no
optimizer step), same batch, same threads: MobileViT-XXS at 256×256 with the official ImageNet
strides (timm's `mobilevit_xxs`), or the study ViT at 32×32 (timm's `VisionTransformer` with the
same sizes), each model
in both memory layouts (contiguous NCHW, the PyTorch default, and channels_last), and compares them
layout for layout. The models run interleaved — every round times each of them once, in rotating order — so that load from other
processes on a shared machine hits all of them alike; the median over rounds is reported, and the
ratio both as a ratio of medians and as the median of the per-round ratios (robust to load drift).

Before timing, timm's weights (randomly perturbed, since timm zero-initializes the classifier) are
copied into the vitlab model — the two have the same parameters (in the same order for MobileViT,
matched by name for the ViT) — and the eval-mode logits are compared: the benchmark exits non-zero
unless they are identical (max |Δ| = 0; for MobileViT against timm in channels_last, the layout
vitlab's MobileViT always computes in — against timm's contiguous layout they differ by the float
rounding of another convolution algorithm, printed too) and, for MobileViT, the parameter counts of
XXS, XS and S equal timm's — both compute the same function, not just models of the same size.

timm is used here only, from a benchmark-only virtual environment; `benchmarks/torchvision_stub.py`
satisfies timm's import-time torchvision imports (torchvision cannot be installed beside CPU torch
here; timm's MobileViT does not call it). Without timm the vitlab model is timmed alone.
"""
from __future__ import annotations

import argparse
import copy
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


# The networks compared: vitlab's preset and the same network built by timm, at the input they are
# benchmarked on (MobileViT-XXS at ImageNet size with the official strides; the study ViT at 32 px).
MODELS = {
    "mobilevit_xxs": dict(size=256, batch=16, classes=1000,
                          ours=dict(image_size=256, strides="imagenet", dropout=0.0)),
    "vit_study_b": dict(size=32, batch=128, classes=100, ours=dict()),
}


def load_timm(name: str, classes: int):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        import torchvision_stub

        torchvision_stub.install()
    try:
        import timm
    except ImportError:
        return None
    if name == "vit_study_b":  # 32 px, patch 4, dim 128, depth 6, 4 heads, MLP 2×, drop path 0.1
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(img_size=32, patch_size=4, num_classes=classes, embed_dim=128, depth=6,
                                 num_heads=4, mlp_ratio=2.0, drop_path_rate=0.1)
    return timm.create_model(name, num_classes=classes)


def timm_to_vitlab_key(key: str) -> str:
    """timm's ViT parameter names -> vitlab's (MobileViT names are matched by position instead)."""
    return key.replace("patch_embed.proj.", "patch_embed.").replace("head.", "head.0.")


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module, by_name: bool) -> None:
    """Copy src's state into dst by name (ViT) or position by position (same shapes in the same order)."""
    s = [(k, v) for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")]
    d = [(k, v) for k, v in dst.state_dict().items() if not k.endswith("num_batches_tracked")]
    if by_name:
        s = sorted(((timm_to_vitlab_key(k), v) for k, v in s), key=lambda kv: [k for k, _ in d].index(kv[0]))
    if len(s) != len(d) or any(a.shape != b.shape for (_, a), (_, b) in zip(s, d, strict=False)):
        raise SystemExit("state dicts differ in layout; cannot compare outputs")
    dst.load_state_dict({k: a.clone() for (_, a), (k, _) in zip(s, d, strict=True)}, strict=False)


def step(model, x, y) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=tuple(MODELS), default="mobilevit_xxs")
    ap.add_argument("--batch", type=int, default=None, help="default: 16 for mobilevit_xxs, 128 for vit_study_b")
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
    spec = MODELS[args.model]
    size, classes = spec["size"], spec["classes"]
    args.batch = args.batch or spec["batch"]

    ours = create_model(args.model, num_classes=classes, **spec["ours"])
    theirs = load_timm(args.model, classes)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock, batch {args.batch}, "
          f"{size}×{size}")
    print(f"params  vitlab {args.model}: {count_params(ours):,}")
    models = {}
    if theirs is None:
        print("params  timm: not installed (run in benchmarks/.venv-timm); timing vitlab alone")
    else:
        print(f"params  timm   {args.model}: {count_params(theirs):,}")
        with torch.no_grad():  # timm zero-initializes its classifier: move every weight so the check sees them
            for p in theirs.parameters():
                p.add_(0.02 * torch.randn_like(p))
        copy_weights(theirs, ours, by_name=args.model.startswith("vit"))
        with torch.no_grad():
            x = torch.randn(2, 3, size, size)
            contiguous_diff = (ours.eval()(x) - theirs.eval()(x)).abs().max().item()
            if args.model.startswith("mobilevit"):
                ref = copy.deepcopy(theirs).to(memory_format=torch.channels_last).eval()
                diff = (ours(x) - ref(x.contiguous(memory_format=torch.channels_last))).abs().max().item()
                print(f"same weights, max |logit difference| vitlab vs timm in channels_last: {diff:.2e} "
                      f"(vs timm contiguous: {contiguous_diff:.2e})")
            else:
                diff = contiguous_diff
                print(f"same weights, max |logit difference| vitlab vs timm: {diff:.2e}")
        if diff != 0 or count_params(ours) != count_params(theirs):
            raise SystemExit(f"vitlab's {args.model} is not timm's: the logits must be identical (max |Δ| = 0)")
        if args.model.startswith("mobilevit"):
            for name in ("mobilevit_xs", "mobilevit_s"):  # the larger presets: the same parameter count
                n_ours = count_params(create_model(name, num_classes=1000))
                n_timm = count_params(load_timm(name, 1000))
                print(f"params  {name}: vitlab {n_ours:,}, timm {n_timm:,}")
                if n_ours != n_timm:
                    raise SystemExit(f"{name}: vitlab has {n_ours:,} parameters, timm {n_timm:,}")
        models["timm contiguous"] = theirs.train()
        models["timm channels_last"] = copy.deepcopy(theirs).to(memory_format=torch.channels_last).train()
    models["vitlab contiguous"] = ours.train()
    models["vitlab channels_last"] = copy.deepcopy(ours).to(memory_format=torch.channels_last).train()

    x = torch.randn(args.batch, 3, size, size)
    y = torch.randint(0, classes, (args.batch,))
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
        for layout in ("contiguous", "channels_last"):
            ours, other = f"vitlab {layout}", f"timm {layout}"
            paired = statistics.median(a / b for a, b in zip(rates[ours], rates[other], strict=True))
            print(f"speed ratio vitlab / timm, both {layout}: {med[ours] / med[other]:.2f}× of medians, "
                  f"{paired:.2f}× median of per-round ratios")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
