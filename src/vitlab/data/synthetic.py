"""A built-in, offline, procedurally generated 32×32 RGB dataset of shapes and textures.

Each class is one pattern (disc, ring, square, stripes, checkerboard, ...) drawn with a random
position, size, tilt, colours, textured background, clutter line and pixel noise, so the class is
learnable from the image but not readable off a few pixels. Generation is vectorized over all
images of a class (a loop over at most 16 classes) and takes well under a second for 8000 images.

The images depend only on the dataset seed (`data.synthetic_seed`), never on the run seed, so all
runs of a study see the same data; the run seed only picks the validation split.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..datasets import DATASETS
from .bundle import RawSplits
from .ops import LUMA

IMAGE_SIZE = DATASETS["synthetic"].image_size
CLASSES = [
    "disc", "ring", "square", "triangle", "plus", "h_stripes", "v_stripes", "diag_stripes",
    "checkerboard", "dots", "frame", "x_cross", "crescent", "concentric", "gradient", "hexagon",
]
# The test set is drawn from the dataset seed plus this offset: an independent draw from the training set.
TEST_SEED_OFFSET = 1_000_003

# Nuisance ranges (pixels, degrees or [0, 1] intensities). They set the difficulty: a small ViT
# reaches well above chance within minutes on a CPU but does not saturate.
HALF_SIZE_PX = (7.0, 14.0)        # half the pattern's extent
CENTER_MARGIN = 0.6               # centre kept at least this many half-sizes from the border
TILT_DEG = 20.0                   # rotation jitter; small enough that plus vs x_cross stays defined
PERIOD_PX = (3.5, 7.0)            # period of stripes / checks / dots / concentric rings
LUMA_CONTRAST = (0.3, 0.8)        # gray-level difference between pattern and background
CHROMA = 0.5                      # spread of the random hue offsets around each gray level
BG_GRADIENT = 0.15                # amplitude of the background's linear gradient
BG_BLOTCH = 0.1                   # amplitude of the background's low-frequency noise
BG_BLOTCH_GRID = 4                # the low-frequency noise is bilinearly upsampled from this grid
CLUTTER_PROB = 0.3                # chance of a random line across the image
NOISE_STD = (0.01, 0.06)          # per-pixel Gaussian noise


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _edge(t: Tensor, px: Tensor) -> Tensor:
    """Antialiased inside-mask from a signed distance `t` (> 0 inside) in pattern units."""
    return (0.5 + t * px).clamp(0.0, 1.0)


def _polygon(u: Tensor, v: Tensor, sides: int, offset_deg: float) -> Tensor:
    """Max over the edge normals of a regular polygon: < apothem inside."""
    angles = torch.tensor([math.radians(offset_deg + 360.0 * k / sides) for k in range(sides)])
    return torch.stack([u * math.cos(a) + v * math.sin(a) for a in angles.tolist()]).amax(0)


def _pattern(name: str, u: Tensor, v: Tensor, px: Tensor, freq: Tensor, phase: Tensor, sign: Tensor) -> Tensor:
    """Coverage in [0, 1] of pattern `name` at pattern coordinates (u, v) (unit ≈ half-size).

    px: pixels per pattern unit (for antialiasing); freq: texture cycles per unit; phase in [0, 1);
    sign: ±1 per image (diagonal direction, gradient direction).
    """
    r = torch.sqrt(u * u + v * v)
    box = torch.maximum(u.abs(), v.abs())
    window = _edge(0.95 - box, px)

    def stripes(w):  # soft square wave, antialiased by the stripe's own slope
        return (0.5 + 2.0 * torch.sin(2 * math.pi * (freq * w + phase))).clamp(0.0, 1.0)

    if name == "disc":
        return _edge(1.0 - r, px)
    if name == "ring":
        return _edge(0.2 - (r - 0.72).abs(), px)
    if name == "square":
        return _edge(0.8 - box, px)
    if name == "triangle":
        return _edge(0.5 - _polygon(u, v, 3, 90.0), px)  # apex up (v points down)
    if name == "hexagon":
        return _edge(0.85 - _polygon(u, v, 6, 0.0), px)
    if name in ("plus", "x_cross"):
        if name == "x_cross":
            u, v = (u + v) / math.sqrt(2), (v - u) / math.sqrt(2)
        arm_h = torch.minimum(0.25 - v.abs(), 0.95 - u.abs())
        arm_v = torch.minimum(0.25 - u.abs(), 0.95 - v.abs())
        return _edge(torch.maximum(arm_h, arm_v), px)
    if name == "frame":
        return _edge(torch.minimum(0.85 - box, box - 0.55), px)
    if name == "crescent":
        bite = torch.sqrt((u - 0.45) ** 2 + (v + 0.2) ** 2)
        return _edge(torch.minimum(1.0 - r, bite - 0.8), px)
    if name == "h_stripes":
        return window * stripes(v)
    if name == "v_stripes":
        return window * stripes(u)
    if name == "diag_stripes":
        return window * stripes((u + sign * v) / math.sqrt(2))
    if name == "checkerboard":
        s = torch.sin(math.pi * (freq * u + phase)) * torch.sin(math.pi * (freq * v + phase))
        return window * (0.5 + 2.0 * s).clamp(0.0, 1.0)
    if name == "dots":
        fu, fv = freq * u + phase, freq * v + phase
        d = torch.sqrt((fu - fu.round()) ** 2 + (fv - fv.round()) ** 2) / freq  # to nearest lattice point
        return window * _edge(0.3 / freq - d, px)
    if name == "concentric":
        return _edge(1.0 - r, px) * stripes(r)
    if name == "gradient":
        return window * (0.5 + 0.5 * sign * (u + v) / (2 * 0.95)).clamp(0.0, 1.0)
    raise ValueError(f"unknown pattern {name!r}")


def _random_colours(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Foreground and background RGB (n, 3): random hues around gray levels LUMA_CONTRAST apart.

    The pattern always differs from its background in brightness (a colour-blind cue a patch
    embedding can pick up), while hue and polarity (dark on light or light on dark) vary freely.
    """
    bg_level = torch.rand(n, generator=g)
    contrast = _uniform(n, *LUMA_CONTRAST, g)
    up = torch.rand(n, generator=g) < 0.5
    fg_level = torch.where(up, bg_level + contrast, bg_level - contrast)
    # a side without room for the contrast flips to the other side; clamp what is still out
    fg_level = torch.where((fg_level > 1) | (fg_level < 0), torch.where(up, bg_level - contrast, bg_level + contrast),
                           fg_level).clamp(0, 1)
    luma = torch.tensor(LUMA)

    def coloured(level):
        offset = CHROMA * (torch.rand(n, 3, generator=g) - 0.5)
        offset -= (offset @ luma).unsqueeze(1)  # hue without changing the gray level
        return (level.unsqueeze(1) + offset).clamp(0, 1)

    return coloured(fg_level), coloured(bg_level)


def _backgrounds(bg: Tensor, g: torch.Generator) -> Tensor:
    """(n, 3, S, S): flat colour + random linear gradient + low-frequency blotches."""
    n, s = bg.shape[0], IMAGE_SIZE
    coords = (torch.arange(s) + 0.5) / s - 0.5
    theta = _uniform(n, 0, 2 * math.pi, g)
    ramp = coords.view(1, 1, s) * torch.cos(theta).view(n, 1, 1) + coords.view(1, s, 1) * torch.sin(theta).view(n, 1, 1)
    amp = _uniform(n, 0, BG_GRADIENT, g).view(n, 1, 1, 1)
    blotch = torch.rand(n, 3, BG_BLOTCH_GRID, BG_BLOTCH_GRID, generator=g) - 0.5
    # separable bilinear upsampling as two small matrix products (much faster than interpolate here)
    up = torch.nn.functional.interpolate(torch.eye(BG_BLOTCH_GRID).unsqueeze(1), size=s, mode="linear",
                                         align_corners=False).squeeze(1).T  # (S, grid)
    blotch = up @ blotch @ up.T
    return blotch.mul_(BG_BLOTCH).add_(bg.view(n, 3, 1, 1)).add_(amp * ramp.unsqueeze(1))


def _clutter(n: int, g: torch.Generator) -> Tensor:
    """(n, S, S) coverage of one random thin line per image (zero for images without clutter)."""
    s = IMAGE_SIZE
    yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    px, py = _uniform(n, 0, s, g).view(n, 1, 1), _uniform(n, 0, s, g).view(n, 1, 1)
    theta = _uniform(n, 0, math.pi, g).view(n, 1, 1)
    dist = ((xx - px) * torch.sin(theta) - (yy - py) * torch.cos(theta)).abs()
    on = (torch.rand(n, generator=g) < CLUTTER_PROB).view(n, 1, 1)
    return (1.0 - dist).clamp(0.0, 1.0) * on


def generate(n: int, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """`n` images (uint8 (n, 3, 32, 32)) with balanced int64 labels in [0, num_classes), deterministic in `seed`."""
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be 1..{len(CLASSES)}, got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]

    half = _uniform(n, *HALF_SIZE_PX, g)
    lo, hi = CENTER_MARGIN * half, IMAGE_SIZE - CENTER_MARGIN * half
    cx = lo + (hi - lo) * torch.rand(n, generator=g)
    cy = lo + (hi - lo) * torch.rand(n, generator=g)
    tilt = torch.deg2rad(_uniform(n, -TILT_DEG, TILT_DEG, g))
    freq = half / _uniform(n, *PERIOD_PX, g)  # cycles per pattern unit
    phase = torch.rand(n, generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    fg, bg = _random_colours(n, g)
    background = _backgrounds(bg, g)
    clutter = _clutter(n, g)
    clutter_colour = torch.rand(n, 3, generator=g)
    noise_std = _uniform(n, *NOISE_STD, g)
    noise = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * noise_std.view(n, 1, 1, 1)

    # pattern coordinates: centred, tilted, in units of the half-size
    grid = torch.arange(IMAGE_SIZE) + 0.5
    dx = grid.view(1, 1, -1) - cx.view(n, 1, 1)
    dy = grid.view(1, -1, 1) - cy.view(n, 1, 1)
    cos, sin = torch.cos(tilt).view(n, 1, 1), torch.sin(tilt).view(n, 1, 1)
    scale = half.view(n, 1, 1)
    u = (dx * cos + dy * sin) / scale
    v = (-dx * sin + dy * cos) / scale

    coverage = torch.zeros(n, IMAGE_SIZE, IMAGE_SIZE)
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel():
            coverage[idx] = _pattern(CLASSES[c], u[idx], v[idx], scale[idx], freq[idx].view(-1, 1, 1),
                                     phase[idx].view(-1, 1, 1), sign[idx].view(-1, 1, 1))

    img = background.lerp_(fg.view(n, 3, 1, 1).expand_as(background), coverage.unsqueeze(1))
    img.lerp_(clutter_colour.view(n, 3, 1, 1).expand_as(img), clutter.unsqueeze(1)).add_(noise)
    return img.clamp_(0, 1).mul_(255).round_().to(torch.uint8), labels


def load(num_classes: int, n_train: int, n_test: int, seed: int) -> RawSplits:
    train_x, train_y = generate(n_train, num_classes, seed)
    test_x, test_y = generate(n_test, num_classes, seed + TEST_SEED_OFFSET)
    return RawSplits(CLASSES[:num_classes], train_x, train_y, test_x, test_y).check("synthetic")
