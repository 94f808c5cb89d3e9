"""Training augmentation as batched tensor ops on the batch's device.

`Augmenter.train_batch` draws every random choice per sample from the `torch.Generator` it is given
(so a run is reproducible, and the trainer can checkpoint the generator's state) and applies, in order:

    uint8:  random crop of the zero-padded image, horizontal flip
    float:  rotation, RandAugment / TrivialAugment policy, colour jitter,
            resize to the network's input size, normalization, random erasing,
            mixup / cutmix (one λ per batch; the targets become soft (N, K) probabilities)

`eval_batch` does only the deterministic part (float, resize, normalize), so with every
augmentation disabled `train_batch(x) == eval_batch(x)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import AugmentConfig
from . import ops

# Policy magnitudes live on RandAugment's 0..30 scale (31 bins, as in torchvision).
MAGNITUDE_BINS = 31
# RandAugment translates by up to this share of the image side (150 px of 331 in the paper's setup).
RA_TRANSLATE_SHARE = 150.0 / 331.0
# Random erasing (Zhong et al., 2017 defaults): erased area share and log-uniform aspect ratio.
ERASE_AREA = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
# When both mixup and cutmix are on, a mixed batch uses cutmix with this probability.
CUTMIX_SWITCH_PROB = 0.5


@dataclass(frozen=True)
class PolicyOp:
    """One operation of the automatic policies.

    ra_max / ta_max: value at magnitude bin 30 under RandAugment / TrivialAugment-wide (linear in
    the bin from 0), None for ops without magnitude. signed: the value gets a random sign.
    """

    name: str
    ra_max: float | None = None
    ta_max: float | None = None
    signed: bool = False


# Same operations and ranges as torchvision's RandAugment and TrivialAugmentWide. Translate ranges
# are in pixels (RandAugment's scales with the image side: RA_TRANSLATE_SHARE); posterize and
# solarize are special-cased in `_values`.
POLICY_OPS = (
    PolicyOp("identity"),
    PolicyOp("shear_x", 0.3, 0.99, True),
    PolicyOp("shear_y", 0.3, 0.99, True),
    PolicyOp("translate_x", None, 32.0, True),
    PolicyOp("translate_y", None, 32.0, True),
    PolicyOp("rotate", 30.0, 135.0, True),
    PolicyOp("brightness", 0.9, 0.99, True),
    PolicyOp("color", 0.9, 0.99, True),
    PolicyOp("contrast", 0.9, 0.99, True),
    PolicyOp("sharpness", 0.9, 0.99, True),
    PolicyOp("posterize"),
    PolicyOp("solarize"),
    PolicyOp("autocontrast"),
    PolicyOp("equalize"),
)
OP_INDEX = {op.name: i for i, op in enumerate(POLICY_OPS)}
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
# Entry of the (2, 3) output->input pixel map that each shear / translation sets (rotate: a full matrix).
# Shears act about the top-left corner as in AutoAugment; translating by t samples the input at -t.
AFFINE_ENTRY = {"shear_x": (0, 1), "shear_y": (1, 0), "translate_x": (0, 2), "translate_y": (1, 2)}
# Posterize keeps 8 - round(bin / divisor) bits: 8..4 (RandAugment) or 8..2 (TrivialAugment).
POSTERIZE_DIVISOR = {"randaugment": (MAGNITUDE_BINS - 1) / 4, "trivialaugment": (MAGNITUDE_BINS - 1) / 6}

_COLOR_FNS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "brightness": lambda x, v: ops.brightness(x, 1.0 + v),
    "color": lambda x, v: ops.saturation(x, 1.0 + v),
    "contrast": lambda x, v: ops.contrast(x, 1.0 + v),
    "sharpness": lambda x, v: ops.sharpness(x, 1.0 + v),
    "posterize": lambda x, v: ops.posterize(x, v.round().to(torch.int32)),
    "solarize": ops.solarize,
    "autocontrast": lambda x, v: ops.autocontrast(x),
    "equalize": lambda x, v: ops.equalize(x),
}


class _Draw:
    """Random draws from one generator (on its own device), delivered on the data's device."""

    def __init__(self, gen: torch.Generator, device: torch.device):
        self.gen, self.device = gen, device

    def uniform(self, n: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        u = torch.rand(n, generator=self.gen, device=self.gen.device)
        return (lo + (hi - lo) * u).to(self.device)

    def integers(self, n: int, high: int) -> Tensor:
        """int64 (n,) uniform in [0, high)."""
        return torch.randint(high, (n,), generator=self.gen, device=self.gen.device).to(self.device)

    def coin(self, n: int, p: float) -> Tensor:
        return self.uniform(n) < p

    def sign(self, n: int) -> Tensor:
        return torch.where(self.coin(n, 0.5), -1.0, 1.0)

    def scalar(self) -> float:
        return float(torch.rand((), generator=self.gen, device=self.gen.device))

    def beta(self, alpha: float) -> float:
        """One Beta(α, α) draw. torch's Beta takes no generator, so numpy's is seeded from ours."""
        seed = int(torch.randint(2**62, (), generator=self.gen, device=self.gen.device))
        return float(np.random.default_rng(seed).beta(alpha, alpha))

    def permutation(self, n: int) -> Tensor:
        return torch.randperm(n, generator=self.gen, device=self.gen.device).to(self.device)


class Augmenter:
    """Batched train / eval transforms of uint8 image batches (see the module docstring)."""

    def __init__(self, cfg: AugmentConfig, mean: Sequence[float], std: Sequence[float], num_classes: int,
                 out_size: int):
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise ValueError(f"mean/std need 1 or 3 channels, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be > 0, got {tuple(std)}")
        self.cfg = cfg
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.num_classes = num_classes
        self.out_size = out_size

    # ------------------------------------------------------------------------------------ public

    def eval_batch(self, x_uint8: Tensor) -> Tensor:
        """Normalized float32 (N, C, out, out); no randomness."""
        self._check(x_uint8)
        return self._finish(ops.to_float(x_uint8))

    def train_batch(self, x_uint8: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented normalized float32 (N, C, out, out) and targets.

        Targets are the int64 labels, or float (N, K) soft targets in a batch that mixup/cutmix hit.
        """
        self._check(x_uint8)
        cfg, n = self.cfg, x_uint8.shape[0]
        draw = _Draw(gen, x_uint8.device)
        x = x_uint8
        if cfg.crop_padding > 0:
            span = 2 * cfg.crop_padding + 1
            x = ops.crop_padded(x, cfg.crop_padding, draw.integers(n, span), draw.integers(n, span))
        if cfg.hflip:
            x = ops.hflip(x, draw.coin(n, 0.5))
        x = ops.to_float(x)
        if cfg.rotation_deg > 0:
            angles = draw.uniform(n, -cfg.rotation_deg, cfg.rotation_deg)
            x = ops.affine(x, ops.rotation_matrices(angles, x.shape[2], x.shape[3]))
        if cfg.policy != "none":
            x = self._policy(x, draw)
        if cfg.color_jitter > 0:
            s = cfg.color_jitter
            x = ops.brightness(x, draw.uniform(n, 1 - s, 1 + s))
            x = ops.contrast(x, draw.uniform(n, 1 - s, 1 + s))
            x = ops.saturation(x, draw.uniform(n, 1 - s, 1 + s))
        x = self._finish(x)
        if cfg.erase_prob > 0:
            x = self._erase(x, draw)
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            return self._mix(x, y, draw)
        return x, y

    # ----------------------------------------------------------------------------------- pieces

    def _check(self, x: Tensor) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"expected a uint8 batch (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if x.shape[1] != len(self.mean):
            raise ValueError(f"batch has {x.shape[1]} channels but mean/std have {len(self.mean)}")

    def _finish(self, x: Tensor) -> Tensor:
        x = ops.resize(x, self.out_size)
        return ops.normalize(x, self.mean.to(x.device), self.std.to(x.device))

    def _values(self, op: PolicyOp, bins: Tensor, signs: Tensor, side: int) -> Tensor:
        """Per-sample op values for magnitude bins (float (N,)) under the configured policy."""
        policy = self.cfg.policy
        frac = bins / (MAGNITUDE_BINS - 1)
        if op.name == "posterize":
            return 8 - (bins / POSTERIZE_DIVISOR[policy]).round()
        if op.name == "solarize":
            return 1.0 - frac  # threshold from 1 (nothing inverted) down to 0
        if op.name in ("translate_x", "translate_y"):
            top = RA_TRANSLATE_SHARE * side if policy == "randaugment" else op.ta_max
            return (top * frac).trunc() * signs  # whole pixels, as torchvision
        top = op.ra_max if policy == "randaugment" else op.ta_max
        if top is None:
            return torch.zeros_like(bins)
        return top * frac * (signs if op.signed else 1.0)

    def _policy(self, x: Tensor, draw: _Draw) -> Tensor:
        """RandAugment (randaug_ops rounds at a fixed magnitude) or TrivialAugment (1 round, random
        magnitude); each image picks its own op every round."""
        n, _, h, w = x.shape
        trivial = self.cfg.policy == "trivialaugment"
        rounds = 1 if trivial else self.cfg.randaug_ops
        for _ in range(rounds):
            choice = draw.integers(n, len(POLICY_OPS))
            signs = draw.sign(n)
            if trivial:
                bins = draw.integers(n, MAGNITUDE_BINS).to(torch.float32)
            else:
                bins = torch.full((n,), float(self.cfg.randaug_magnitude), device=x.device)
            x = self._apply_policy_round(x, choice, bins, signs, h, w)
        return x

    def _apply_policy_round(self, x: Tensor, choice: Tensor, bins: Tensor, signs: Tensor, h: int, w: int) -> Tensor:
        x = x.clone()
        # all geometric picks share one resampling call
        matrices = torch.eye(2, 3, device=x.device).repeat(x.shape[0], 1, 1)
        geometric = torch.zeros_like(choice, dtype=torch.bool)
        for name in GEOMETRIC:
            k = OP_INDEX[name]
            pick = choice == k
            v = self._values(POLICY_OPS[k], bins, signs, w if name.endswith("_x") else h)
            geometric |= pick
            if name == "rotate":
                matrices[pick] = ops.rotation_matrices(v[pick], h, w)
            else:
                row, col = AFFINE_ENTRY[name]
                matrices[pick, row, col] = -v[pick] if name.startswith("translate") else v[pick]
        idx = geometric.nonzero().squeeze(1)
        if idx.numel():
            x[idx] = ops.affine(x[idx], matrices[idx])
        for name, fn in _COLOR_FNS.items():
            k = OP_INDEX[name]
            idx = (choice == k).nonzero().squeeze(1)
            if idx.numel():
                x[idx] = fn(x[idx], self._values(POLICY_OPS[k], bins[idx], signs[idx], w))
        return x

    def _erase(self, x: Tensor, draw: _Draw) -> Tensor:
        """Random erasing: per image with prob erase_prob, a random box set to 0 (= the mean colour)."""
        n, _, h, w = x.shape
        hit = draw.coin(n, self.cfg.erase_prob)
        area = draw.uniform(n, *ERASE_AREA) * (h * w)
        ratio = torch.exp(draw.uniform(n, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])))
        # boxes that would not fit are clipped to the image (torchvision retries instead)
        bh = torch.sqrt(area * ratio).round().clamp(1, h).to(torch.int64)
        bw = torch.sqrt(area / ratio).round().clamp(1, w).to(torch.int64)
        top = (draw.uniform(n) * (h - bh + 1)).floor().to(torch.int64)
        left = (draw.uniform(n) * (w - bw + 1)).floor().to(torch.int64)
        mask = ops.box_mask(h, w, top, left, bh, bw) & hit.view(n, 1, 1, 1)
        return ops.erase(x, mask)

    def _mix(self, x: Tensor, y: Tensor, draw: _Draw) -> tuple[Tensor, Tensor]:
        """Mixup or cutmix on the whole batch with probability mix_prob (one λ, random partner per image)."""
        cfg, n = self.cfg, x.shape[0]
        use = draw.scalar() < cfg.mix_prob
        cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha == 0 or draw.scalar() < CUTMIX_SWITCH_PROB)
        if not use:
            return x, y
        perm = draw.permutation(n)
        if not cutmix:
            lam = draw.beta(cfg.mixup_alpha)
            return lam * x + (1.0 - lam) * x[perm], ops.mix_targets(y, perm, lam, self.num_classes)
        lam = draw.beta(cfg.cutmix_alpha)
        (top, left, bh, bw), lam = cutmix_box(x.shape[2], x.shape[3], lam, draw.scalar(), draw.scalar())
        out = x.clone()
        out[:, :, top:top + bh, left:left + bw] = x[perm, :, top:top + bh, left:left + bw]
        return out, ops.mix_targets(y, perm, lam, self.num_classes)


def cutmix_box(h: int, w: int, lam: float, u_y: float, u_x: float) -> tuple[tuple[int, int, int, int], float]:
    """CutMix box of area ≈ (1-λ)·H·W centred at (u_y·H, u_x·W), clipped to the image.

    Returns (top, left, height, width) and λ corrected to the share of the image NOT covered by the
    (clipped) box, so the targets match the pixels.
    """
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(u_y * h), int(u_x * w)
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return (y1, x1, y2 - y1, x2 - x1), lam
