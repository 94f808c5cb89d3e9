"""Which bf16 computation costs vit_study_b accuracy? The same training, step for step, in float32, in
bf16 autocast as the library does it, and in bf16 with one suspect at a time computed in float32.

    VITLAB_DATA_ROOT=/work/shared/data python benchmarks/amp_diagnose.py [--steps 250] [--seed 0]
    VITLAB_DATA_ROOT=/work/shared/data python benchmarks/amp_diagnose.py --gradients RUN/checkpoints/last.pt \
        --variants bf16-patch16,bf16,bf16+sm32,bf16+s32,bf16+a32,bf16+head32,bf16+attn32,bf16+mlp32

Every variant starts from the same weights and sees the same batches and the same drop-path masks
(the RNG is reseeded per step); the variants run interleaved, one step each in turn, so load from
other processes hits all alike. Printed: the mean training loss over windows of steps, the test
top-1 on a fixed test subset after the last step, and the median per-step CPU time (1 thread)
relative to float32. The recipe is studies/base/fashion_mnist.yaml without augmentation: batch 64,
AdamW 2e-3, weight decay 0.05, cosine with 5% warmup, label smoothing 0.1, gradient clipping 1.0.

With --gradients, nothing is trained: the checkpoint's weights (a vit_study_b run) get one backward
pass on 128 training images per variant, and each parameter's gradient is compared with a float64
reference, ‖g − g₆₄‖/‖g₆₄‖ (median and max over the parameters).

Variants (the library's bf16 behaviour is whatever src/vitlab does when the script runs):
  none         float32, no autocast
  bf16         bf16 autocast as the library does it (since the fix, the same arithmetic as bf16+patch32)
  bf16+s32     softmax attention's scores Q Kᵀ·s and softmax in float32, the weights cast back to bf16
  bf16+sm32    scores from the bf16 GEMM, softmax in float32, weights cast back to bf16
  bf16+a32     scores, softmax and weights @ V in float32 (only the projections in bf16)
  bf16+head32  the classifier head (logits) in float32
  bf16+patch32 the patch embedding (a convolution) in float32
  bf16+attn32  every attention module (qkv, scores, softmax, projection) in float32
  bf16+mlp32   every MLP (fc1, GELU, fc2) in float32
  bf16-patch16 the patch embedding in bf16 (the library before the fix)

Results: benchmarks/RESULTS.md, "bf16 against float32 at equal steps, paired by seed".
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vitlab.data import fashion_mnist  # noqa: E402
from vitlab.models import attention, create_model  # noqa: E402
from vitlab.training.loop import param_groups, soft_cross_entropy  # noqa: E402
from vitlab.training.precision import autocast  # noqa: E402

BATCH, LR, WEIGHT_DECAY, WARMUP_FRACTION, MIN_LR = 64, 2e-3, 0.05, 0.05, 1e-5
LABEL_SMOOTHING, GRAD_CLIP, IMAGE = 0.1, 1.0, 32
"""studies/base/fashion_mnist.yaml's recipe."""
MEAN, STD = 0.2860, 0.3530
"""Fashion-MNIST pixel mean and standard deviation."""
TEST_IMAGES = 2000
"""Size of the fixed test subset scored after the last step."""
WINDOW = 50
"""Steps per mean-loss window."""
VARIANTS = ("none", "bf16", "bf16+s32", "bf16+sm32", "bf16+a32", "bf16+head32")
"""The default variants; bf16+patch32, bf16+attn32 and bf16+mlp32 are asked for with --variants."""
FP32_MODULES = {"bf16+head32": ("head",), "bf16+patch32": ("patch_embed",),
                "bf16+attn32": ("blocks.*.attn",), "bf16+mlp32": ("blocks.*.mlp",)}
BF16_MODULES = {"bf16-patch16": ("patch_embed",)}
"""Variant -> the submodules it computes in bf16 even where the library computes them in float32."""
GRADIENT_IMAGES = 128
"""Training images of the --gradients check."""
"""Variant -> the submodules (`*`: every block) it computes in float32."""

_mode = "bf16"
"""The variant whose step runs now (read by the patched attention)."""
_library_softmax_attention = attention.softmax_attention


def diagnostic_softmax_attention(q, k, v, *, scale, drop, training, need_weights, mask=None):
    """softmax attention with the variant's float32 upcast (the library's own code otherwise)."""
    if _mode not in ("bf16+s32", "bf16+sm32", "bf16+a32") or q.dtype != torch.bfloat16:
        return _library_softmax_attention(q, k, v, scale=scale, drop=drop, training=training,
                                          need_weights=need_weights, mask=mask)
    if _mode == "bf16+a32":
        with torch.autocast("cpu", enabled=False):
            scores = (q.float() @ k.float().transpose(-2, -1)) * scale
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            return (F.dropout(weights, drop, training) @ v.float()).to(v.dtype), weights
    if _mode == "bf16+s32":
        with torch.autocast("cpu", enabled=False):
            scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    else:
        scores = ((q @ k.transpose(-2, -1)) * scale).float()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1).to(v.dtype)
    return F.dropout(weights, drop, training) @ v, weights


class Float32(torch.nn.Module):
    """The wrapped module in float32 even under autocast."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return self.inner(x.float())


class Bf16(torch.nn.Module):
    """The wrapped module under bf16 autocast, even where the caller turned autocast off."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inner(x)


def wrap_float32(model: torch.nn.Module, pattern: str, wrapper=Float32) -> None:
    """Replace the submodules that `pattern` names (dotted, `*` = every child) by `wrapper`s."""
    *parents, leaf = pattern.split(".")
    owners = [model]
    for part in parents:
        owners = [c for o in owners for c in (o.children() if part == "*" else [getattr(o, part)])]
    for owner in owners:
        setattr(owner, leaf, wrapper(getattr(owner, leaf)))


def variant_model(base: torch.nn.Module, name: str) -> torch.nn.Module:
    """A copy of `base` with the variant's modules wrapped."""
    model = copy.deepcopy(base)
    for pattern in FP32_MODULES.get(name, ()):
        wrap_float32(model, pattern)
    for pattern in BF16_MODULES.get(name, ()):
        wrap_float32(model, pattern, Bf16)
    return model


def gradient_errors(checkpoint: str, names: list[str], model_name: str, raw) -> None:
    """Per-variant ‖g − g₆₄‖/‖g₆₄‖ of every parameter at the checkpoint's weights (median, max)."""
    global _mode
    base = create_model(model_name, num_classes=10, in_chans=1)
    base.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    base.train()
    x, y = prepare(raw.train_x[:GRADIENT_IMAGES]), raw.train_y[:GRADIENT_IMAGES]

    def grads(model, dtype, amp):
        model.zero_grad()
        torch.manual_seed(0)  # the same drop-path masks for every variant
        with autocast(torch.device("cpu"), amp):
            logits = model(x.to(dtype))
        soft_cross_entropy(logits.double(), y, LABEL_SMOOTHING).backward()
        return [p.grad.double() for p in model.parameters()]

    ref = grads(copy.deepcopy(base).double(), torch.float64, "none")
    print(f"# amp_diagnose --gradients {checkpoint}  {GRADIENT_IMAGES} images  load {os.getloadavg()[0]:.2f}")
    print("| variant | median ‖g − g₆₄‖/‖g₆₄‖ | max |\n|---|---:|---:|")
    for name in names:
        _mode = name
        got = grads(variant_model(base, name), torch.float32, "none" if name == "none" else "bf16")
        errs = sorted(((g - r).norm() / r.norm()).item() for g, r in zip(got, ref, strict=True))
        print(f"| {name} | {errs[len(errs) // 2]:.4f} | {errs[-1]:.4f} |")


def lr_at(step: int, steps: int) -> float:
    warm = max(1, round(WARMUP_FRACTION * steps))
    if step < warm:
        return LR * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * t))


def prepare(x: torch.Tensor) -> torch.Tensor:
    x = (x.float() / 255 - MEAN) / STD
    return F.interpolate(x, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="vit_study_b")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--gradients", metavar="CHECKPOINT", help="compare gradients at a checkpoint's weights instead")
    a = ap.parse_args(argv)
    global _mode
    torch.set_num_threads(1)
    root = Path(os.environ.get("VITLAB_DATA_ROOT", "data"))
    raw = fashion_mnist.load(root)
    g = torch.Generator().manual_seed(a.seed)
    order = torch.randperm(len(raw.train_x), generator=g)[: a.steps * BATCH]
    test_idx = torch.randperm(len(raw.test_x), generator=g)[:TEST_IMAGES]
    test_x, test_y = prepare(raw.test_x[test_idx]), raw.test_y[test_idx]

    attention.softmax_attention = diagnostic_softmax_attention
    if a.gradients:
        gradient_errors(a.gradients, a.variants.split(","), a.model, raw)
        return 0
    torch.manual_seed(a.seed)
    base = create_model(a.model, num_classes=10, in_chans=1)
    names = a.variants.split(",")
    cases = {}
    for name in names:
        model = variant_model(base, name)
        opt = torch.optim.AdamW(param_groups(model, WEIGHT_DECAY, False), lr=LR)
        cases[name] = (model, opt, "none" if name == "none" else "bf16")
    losses = {n: [] for n in names}
    times = {n: [] for n in names}
    device = torch.device("cpu")
    for step in range(a.steps):
        idx = order[step * BATCH:(step + 1) * BATCH]
        x, y = prepare(raw.train_x[idx]), raw.train_y[idx]
        rot = step % len(names)
        for name in names[rot:] + names[:rot]:
            model, opt, amp = cases[name]
            _mode = name
            for group in opt.param_groups:
                group["lr"] = lr_at(step, a.steps)
            torch.manual_seed(a.seed * 100_003 + step)
            t0 = time.thread_time()
            model.train()
            with autocast(device, amp):
                logits = model(x)
            loss = soft_cross_entropy(logits.float(), y, LABEL_SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            times[name].append(time.thread_time() - t0)
            losses[name].append(loss.item())

    print(f"# amp_diagnose  {date.today()}  {a.model}  seed {a.seed}  {a.steps} steps × batch {BATCH}  "
          f"1 thread  torch {torch.__version__}  load {os.getloadavg()[0]:.2f}")
    windows = [(s, min(s + WINDOW, a.steps)) for s in range(0, a.steps, WINDOW)]
    print("| variant | " + " | ".join(f"loss {s + 1}–{e}" for s, e in windows)
          + " | test top-1 | step CPU ms | ÷ none |")
    print("|---" * (len(windows) + 4) + "|")
    ref = statistics.median(times[names[0]][1:])
    for name in names:
        model, _, amp = cases[name]
        _mode = name
        model.eval()
        correct = 0
        with torch.inference_mode(), autocast(device, amp):
            for i in range(0, TEST_IMAGES, 500):
                correct += (model(test_x[i:i + 500]).argmax(-1) == test_y[i:i + 500]).sum().item()
        med = statistics.median(times[name][1:])
        cells = [f"{statistics.fmean(losses[name][s:e]):.4f}" for s, e in windows]
        print(f"| {name} | " + " | ".join(cells) + f" | {100 * correct / TEST_IMAGES:.2f} | {1000 * med:.0f} | "
              f"{med / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
