"""The 15 CIFAR-10-C / CIFAR-100-C corruptions (Hendrycks & Dietterich 2019) × 5 severities, generated
on the fly as batched tensor ops on the images' device.

Severity parameters are those of the reference `make_cifar_c.py` (github.com/hendrycks/robustness,
ImageNet-C/create_c/make_cifar_c.py); each corruption below is a small function that follows the
reference's formula, with its library calls (skimage, scipy, OpenCV, PIL, ImageMagick) replaced by the
equivalent tensor ops of `imageops` / `jpeg`. Every random number comes from a `Draws` object backed by
one `torch.Generator`, so a corruption is deterministic under a seed.

| corruption | faithful | how it differs from the reference (besides torch's random numbers instead of numpy's) |
|---|---|---|
| gaussian_noise, contrast, brightness, fog, zoom_blur, defocus_blur, glass_blur | yes | — (brightness: the HSV round trip in closed form) |
| shot_noise | yes | Poisson samples by inverse-CDF lookup over the 256 rates of 8-bit images |
| impulse_noise | yes | skimage's current s&p definition (each value flipped with prob. `amount`, salt or pepper ½ each); the 2019 skimage drew a fixed count of coordinates |
| motion_blur | yes | ImageMagick's MotionBlurImage re-implemented from its definition: a one-sided Gaussian kernel of width 2⌈r⌉+1 along the angle, tap offsets rounded as ImageMagick rounds them, edge pixels replicated, 8-bit output |
| snow | yes | its snow layer is motion-blurred by the same re-implementation |
| elastic_transform | yes | OpenCV's warpAffine interpolates with 1/32-pixel fixed-point weights; here exact bilinear |
| pixelate, jpeg_compression | yes | none: bit-exact with PIL (BOX resampling; libjpeg's integer pipeline, `jpeg.py`) |
| frost | **no** | the reference blends crops of six frost photographs (frost1.png … frost6.jpg) that vitlab does not ship; a procedural ice texture stands in. Reported, but left out of the mean and of mCE |

Each is checked against a per-image reimplementation of the reference in tests/test_analysis_corruptions.py.

Images in: uint8 (N, C, H, W), C = 1 or 3. Images out: uint8, quantized as the reference's
`np.uint8(...)` does (truncation). Spatial parameters are the reference's (for 32×32 images); other
sizes use the same pixel values, except where the reference derives them from the image size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .imageops import (KRON_MAX_PIXELS, clipped_zoom, correlate2d, crop_support, cv2_gaussian_kernel,
                       gaussian_filter, pil_box_resize_uint8, zoom_blur_operator)
from .jpeg import jpeg_roundtrip

SEVERITIES = (1, 2, 3, 4, 5)
QUANT_EPS = 1e-4
"""Added before truncating to uint8 so that values computed as k/255 in float32 stay k."""
GLASS_SIGMA_TRUNCATE = 4.0
"""skimage.filters.gaussian's default truncate (glass blur)."""
ELASTIC_TRUNCATE = 3.0
"""The reference smooths elastic displacement fields with truncate=3."""
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
"""OpenCV's RGB -> gray weights (cv2.COLOR_RGB2GRAY), used by snow."""

# ------------------------------------------------------------------------------------------- severities
# (from make_cifar_c.py; tuples as there)
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE = (500, 250, 100, 75, 50)
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, alias blur
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max delta, iterations
MOTION_BLUR = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))  # radius, sigma
ZOOM_BLUR = (0.06, 0.11, 0.16, 0.21, 0.26)  # zoom factors np.arange(1, 1 + z, 0.01)
SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # image weight, frost weight
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # amount, wibble decay
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
ELASTIC = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))  # × image size
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
JPEG_QUALITY = (80, 65, 58, 50, 40)
DISK_HALF_WIDTH = 8
"""The reference's defocus disk is sampled on [-8, 8]² for radii up to 8."""
DISK_ALIAS_KSIZE = 3
"""... and anti-aliased with a 3×3 OpenCV Gaussian blur."""
PLASMA_WIBBLE = 100.0
"""Initial random amplitude of the reference's diamond-square plasma fractal."""
FROST_TINT = (0.78, 0.86, 1.0)
"""RGB tint of the procedural frost texture (pale blue-white, as the reference's frost photos)."""


class Draws:
    """Random numbers for a batch of n images; every call returns a tensor of shape (n, *shape) on
    the device. A per-image reference replays the i-th slice of each call in the same order."""

    def __init__(self, gen: torch.Generator, n: int, device):
        self.gen, self.n, self.device = gen, n, device

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
        u = torch.rand((self.n, *shape), generator=self.gen, device=self.device)
        return low + (high - low) * u

    def normal(self, *shape: int, mean: float = 0.0, std: float = 1.0) -> Tensor:
        return mean + std * torch.randn((self.n, *shape), generator=self.gen, device=self.device)

    def integers(self, *shape: int, low: int, high: int) -> Tensor:
        """Uniform integers in [low, high) (numpy's randint convention)."""
        return torch.randint(low, high, (self.n, *shape), generator=self.gen, device=self.device)

    def poisson_levels(self, levels: Tensor, which: Tensor) -> Tensor:
        """Poisson samples of rates levels[which] (few distinct levels), by inverse-CDF lookup of one
        uniform per value; same distribution as `poisson(levels[which])`."""
        u = torch.rand(which.shape, generator=self.gen, device=self.device, dtype=torch.float64)
        return poisson_inverse_cdf(levels.double(), which, u).float()

    def poisson(self, rates: Tensor) -> Tensor:
        return torch.poisson(rates, generator=self.gen)


POISSON_TAIL_SIGMAS = 12
"""The lookup tables reach λ + 12√λ + 12: the probability beyond is below 1e-30."""


def poisson_inverse_cdf(levels: Tensor, which: Tensor, u: Tensor) -> Tensor:
    """Poisson(levels[which]) samples from uniforms u: the smallest k with CDF_λ(k) ≥ u, found with one
    searchsorted in the concatenation of every level's CDF (each shifted by its row number)."""
    top = int(levels.max().item() + POISSON_TAIL_SIGMAS * math.sqrt(levels.max().item()) + POISSON_TAIL_SIGMAS) + 1
    k = torch.arange(top, dtype=torch.float64, device=levels.device)
    lam = levels.view(-1, 1)
    logpmf = torch.special.xlogy(k, lam) - lam - torch.lgamma(k + 1)
    cdf = logpmf.exp().cumsum(dim=1).clamp(max=1.0)
    cdf[:, -1] = 1.0
    rows = torch.arange(len(levels), dtype=torch.float64, device=levels.device).view(-1, 1)
    flat = (cdf + 2 * rows).reshape(-1)  # rows 2 apart: strictly increasing across rows
    pos = torch.searchsorted(flat, u.reshape(-1) + 2 * which.reshape(-1).double())
    return (pos - which.reshape(-1) * top).reshape(u.shape).double()


# ------------------------------------------------------------------------------------------- noise


def gaussian_noise(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """x + N(0, c²) per value, clipped."""
    c = GAUSSIAN_NOISE[severity - 1]
    return (x + rng.normal(*x.shape[1:], std=c)).clamp(0, 1)


def shot_noise(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """Poisson(x·c)/c per value, clipped."""
    c = SHOT_NOISE[severity - 1]
    level = torch.round(x * 255)
    if torch.equal(level / 255, x):  # 8-bit input: 256 possible rates k·c/255, sampled by table lookup
        rates = torch.arange(256, dtype=torch.float64, device=x.device) * c / 255
        return (rng.poisson_levels(rates, level.long()) / c).clamp(0, 1)
    return (rng.poisson(x * c) / c).clamp(0, 1)


def impulse_noise(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """Salt-and-pepper: each value becomes 1 or 0 (½ each) with probability c (skimage random_noise 's&p')."""
    c = IMPULSE_NOISE[severity - 1]
    flipped = rng.uniform(*x.shape[1:]) <= c
    salted = rng.uniform(*x.shape[1:]) <= 0.5
    return torch.where(flipped, salted.to(x.dtype), x)


# ------------------------------------------------------------------------------------------- blur


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's `disk`: the indicator of x² + y² ≤ r² on [-8, 8]², normalized, then blurred by a
    3×3 OpenCV Gaussian of σ = alias_blur (BORDER_REFLECT_101). (17, 17) float64."""
    ax = np.arange(-DISK_HALF_WIDTH, DISK_HALF_WIDTH + 1)
    xx, yy = np.meshgrid(ax, ax)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = torch.from_numpy(cv2_gaussian_kernel(DISK_ALIAS_KSIZE, alias_blur))
    k = torch.from_numpy(disk).view(1, 1, *disk.shape)
    k = correlate2d(k, g.view(-1, 1), "mirror")
    return correlate2d(k, g.view(1, -1), "mirror")[0, 0]


def defocus_blur(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """Correlation with an anti-aliased disk (cv2.filter2D, BORDER_REFLECT_101)."""
    r, alias = DEFOCUS_BLUR[severity - 1]
    return correlate2d(x, crop_support(disk_kernel(r, alias)), "mirror").clamp(0, 1)


def glass_blur(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """Gaussian blur, truncate to uint8, then `iterations` sweeps that swap each pixel (from the
    bottom-right towards the top-left, rows and columns from H − δ down to δ + 1) with a neighbour
    offset by (dy, dx) ∈ [−δ, δ)², then blur again. The swaps are sequential within an image (as in
    the reference); they only move pixels, so they are applied to a per-image permutation of pixel
    indices (for all images of the batch at once) and the pixels are gathered once at the end."""
    sigma, delta, iters = GLASS_BLUR[severity - 1]
    n, c, h, w = x.shape
    y = torch.floor(gaussian_filter(x, sigma, "nearest", GLASS_SIGMA_TRUNCATE) * 255) / 255
    positions = [i * w + j for i in range(h - delta, delta, -1) for j in range(w - delta, delta, -1)]
    offsets = rng.integers(iters, len(positions), 2, low=-delta, high=delta)  # (n, iters, P, [dx, dy])
    partner = torch.tensor(positions, device=x.device) + offsets[..., 1] * w + offsets[..., 0]  # (n, iters, P)
    perm = torch.arange(h * w, device=x.device).repeat(n, 1)  # y_new[p] = y[perm[p]]
    for it in range(iters):
        for p, a in enumerate(positions):
            b = partner[:, it, p:p + 1]
            here = perm[:, a:a + 1].clone()
            perm[:, a:a + 1] = perm.gather(1, b)
            perm.scatter_(1, b, here)
    y = y.reshape(n, c, h * w).gather(2, perm.unsqueeze(1).expand(n, c, h * w)).reshape(n, c, h, w)
    return gaussian_filter(y, sigma, "nearest", GLASS_SIGMA_TRUNCATE).clamp(0, 1)


def motion_kernel(radius: float, sigma: float) -> Tensor:
    """ImageMagick's MotionBlurImage kernel: width 2⌈r⌉ + 1, weights exp(−i²/2σ²), i = 0..width−1,
    normalized (a one-sided Gaussian trailing behind each pixel)."""
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def motion_offsets(width: int, angle_deg: Tensor) -> tuple[Tensor, Tensor]:
    """ImageMagick's tap offsets along the angle: x_i = ⌈i·cos a − ½⌉, y_i = ⌈i·sin a − ½⌉, for (n,)
    angles -> two (n, width) integer tensors (columns, rows)."""
    a = angle_deg.double() * math.pi / 180
    i = torch.arange(width, dtype=torch.float64, device=angle_deg.device)
    ox = torch.ceil(i.view(1, -1) * torch.cos(a).view(-1, 1) - 0.5).long()
    oy = torch.ceil(i.view(1, -1) * torch.sin(a).view(-1, 1) - 0.5).long()
    return ox, oy


def imagemagick_motion_blur(x: Tensor, radius: float, sigma: float, angle_deg: Tensor) -> Tensor:
    """Motion-blur each image (N, C, H, W) along its own angle: out(y, x) = Σ_i k_i · in(y + y_i, x + x_i),
    coordinates clamped to the image (ImageMagick's edge virtual pixels), rounded to 8 bits as the
    8-bit PNG the reference writes."""
    n, c, h, w = x.shape
    k = motion_kernel(radius, sigma).to(x)
    ox, oy = motion_offsets(len(k), angle_deg)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    row_start = (rows + oy.view(n, 1, -1)).clamp(0, h - 1) * w  # (n, h, taps), small
    col = (cols.view(1, w, 1) + ox.view(n, 1, -1)).clamp(0, w - 1)  # (n, w, taps)
    for t in range(len(k)):
        idx = (row_start[:, :, t:t + 1] + col[:, None, :, t]).reshape(n, 1, h * w).expand(n, c, h * w)
        out.add_(flat.gather(2, idx), alpha=float(k[t]))
    return torch.round(out.reshape(n, c, h, w) * 255) / 255


def motion_blur(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """ImageMagick motion blur (radius, sigma) at an angle uniform in [−45°, 45°]."""
    radius, sigma = MOTION_BLUR[severity - 1]
    return imagemagick_motion_blur(x, radius, sigma, rng.uniform(low=-45, high=45)).clamp(0, 1)


def zoom_factors(severity: int) -> np.ndarray:
    """np.arange(1, 1 + z, 0.01) exactly as the reference computes it (floating-point end included)."""
    return np.arange(1, 1 + ZOOM_BLUR[severity - 1], 0.01)


def zoom_blur(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """Mean of the image and its central zooms by each factor (`clipped_zoom`, linear interpolation)."""
    factors = tuple(float(z) for z in zoom_factors(severity))
    n, c, h, w = x.shape
    if h == w and h * w <= KRON_MAX_PIXELS:  # one GEMM with the summed operator
        k = zoom_blur_operator(h, factors).to(x)
        return (x.reshape(n * c, h * w) @ k.T).reshape(x.shape).clamp(0, 1)
    out = x.clone()
    for z in factors:
        out += clipped_zoom(x, z)
    return (out / (len(factors) + 1)).clamp(0, 1)


# ------------------------------------------------------------------------------------------- weather


def plasma_fractal(rng: Draws, mapsize: int, decay: float) -> Tensor:
    """The reference's diamond-square height map (n, mapsize, mapsize) in [0, 1]; mapsize a power of 2.
    Each step sets the new points to the mean of their 4 neighbours (wrapping around) plus
    wibble·U(−wibble, wibble); wibble starts at 100 and is divided by `decay` per step."""
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of two"
    m = torch.zeros(rng.n, mapsize, mapsize, device=rng.device)
    step, wibble = mapsize, PLASMA_WIBBLE
    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + corner.roll(-1, dims=1)
        sq = sq + sq.roll(-1, dims=2)
        m[:, half::step, half::step] = sq / 4 + wibble * rng.uniform(*sq.shape[1:], low=-wibble, high=wibble)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + dr.roll(1, dims=1) + ul + ul.roll(-1, dims=2)
        m[:, 0::step, half::step] = lt / 4 + wibble * rng.uniform(*lt.shape[1:], low=-wibble, high=wibble)
        tt = dr + dr.roll(1, dims=2) + ul + ul.roll(-1, dims=1)
        m[:, half::step, 0::step] = tt / 4 + wibble * rng.uniform(*tt.shape[1:], low=-wibble, high=wibble)
        step, wibble = half, wibble / decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def _mapsize(h: int, w: int) -> int:
    return 1 << max(1, math.ceil(math.log2(max(h, w))))


def fog(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """x + a·plasma, rescaled by max(x) / (max(x) + a), clipped."""
    amount, decay = FOG[severity - 1]
    h, w = x.shape[-2:]
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    plasma = plasma_fractal(rng, _mapsize(h, w), decay)[:, :h, :w].unsqueeze(1)
    return ((x + amount * plasma) * top / (top + amount)).clamp(0, 1)


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    wr, wg, wb = GRAY_WEIGHTS
    return wr * x[:, 0:1] + wg * x[:, 1:2] + wb * x[:, 2:3]


def snow(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """A thresholded, zoomed Gaussian snow layer, motion-blurred at an angle in [−135°, −45°], added
    twice (as is and rotated by 180°) to the image brightened towards 1.5·gray + 0.5."""
    loc, scale, zoom, thresh, radius, sigma, keep = SNOW[severity - 1]
    h, w = x.shape[-2:]
    layer = rng.normal(h, w, mean=loc, std=scale).unsqueeze(1)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # the uint8 PNG handed to ImageMagick
    layer = imagemagick_motion_blur(layer, radius, sigma, rng.uniform(low=-135, high=-45))
    x = keep * x + (1 - keep) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return (x + layer + layer.flip(-1, -2)).clamp(0, 1)


def frost_texture(rng: Draws, h: int, w: int, channels: int) -> Tensor:
    """Procedural stand-in for the reference's frost photographs (NOT the reference): a rough
    plasma fractal (fine detail, decay 1.5) sharpened towards crystal-like highlights, tinted pale blue."""
    t = plasma_fractal(rng, _mapsize(h, w), 1.5)[:, :h, :w].unsqueeze(1) ** 1.5
    tint = torch.tensor(FROST_TINT[:channels] if channels == 3 else (sum(FROST_TINT) / 3,), device=t.device)
    return t * tint.view(1, -1, 1, 1)


def frost(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """c₀·x + c₁·frost texture, clipped (the reference blends a random crop of a frost photograph)."""
    a, b = FROST[severity - 1]
    return (a * x + b * frost_texture(rng, x.shape[-2], x.shape[-1], x.shape[1])).clamp(0, 1)


# ------------------------------------------------------------------------------------------- digital


def brightness(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """HSV value + c (clipped at 1), hue and saturation kept: since every RGB channel is proportional to
    V at fixed H, S, this is x·V′/V (and V′ gray where V = 0) — skimage's rgb2hsv/hsv2rgb round trip."""
    c = BRIGHTNESS[severity - 1]
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(max=1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x)).clamp(0, 1)


def contrast(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """(x − μ)·c + μ with μ each channel's spatial mean, clipped."""
    c = CONTRAST[severity - 1]
    mu = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mu) * c + mu).clamp(0, 1)


def affine_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """(n, 2, 3) affine maps M with M·[p, 1] = q for three point pairs (n, 3, 2) (cv2.getAffineTransform)."""
    ones = torch.ones(*src.shape[:-1], 1, dtype=src.dtype, device=src.device)
    a = torch.cat([src, ones], dim=-1)  # (n, 3, 3)
    return torch.linalg.solve(a, dst).transpose(1, 2)


def _sample(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """Bilinear samples of x (N, C, H, W) at pixel coordinates (N, H, W); mode 'mirror' reflects about the
    edge pixel centres (BORDER_REFLECT_101), 'reflect' about the image border (scipy's reflect)."""
    h, w = x.shape[-2:]
    if mode == "mirror":
        gx, gy = 2 * cols / max(w - 1, 1) - 1, 2 * rows / max(h - 1, 1) - 1
    else:
        gx, gy = (2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=mode == "mirror")


def elastic_transform(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """A random affine warp (three points moved by U(−c₂, c₂), BORDER_REFLECT_101), then a smooth random
    displacement (U(−1, 1) fields smoothed by a Gaussian of σ = c₁, scaled by c₀; scipy 'reflect' border)."""
    n, _, h, w = x.shape
    alpha, sigma, shift = (v * h for v in ELASTIC[severity - 1])
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64, device=x.device)
    side = min(h, w) // 3
    src = torch.stack([centre + side, torch.stack([centre[0] + side, centre[1] - side]), centre - side])
    src = src.unsqueeze(0).expand(n, 3, 2)
    dst = src + rng.uniform(3, 2, low=-shift, high=shift).double()
    m = affine_from_points(src, dst)  # maps source (x, y) to destination
    a_inv = torch.linalg.inv(m[:, :, :2])
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=x.device),
                            torch.arange(w, dtype=torch.float64, device=x.device), indexing="ij")
    d = torch.stack([xs, ys], dim=-1).view(1, h * w, 2) - m[:, :, 2].view(n, 1, 2)
    s = d @ a_inv.transpose(1, 2)  # (n, HW, 2): source (x, y) of every destination pixel
    x = _sample(x, s[..., 1].view(n, h, w), s[..., 0].view(n, h, w), "mirror")
    dx = gaussian_filter(rng.uniform(h, w, low=-1, high=1), sigma, "reflect", ELASTIC_TRUNCATE) * alpha
    dy = gaussian_filter(rng.uniform(h, w, low=-1, high=1), sigma, "reflect", ELASTIC_TRUNCATE) * alpha
    return _sample(x, ys + dy, xs + dx, "reflect").clamp(0, 1)


def pixelate(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """PIL BOX resize down to ⌊H·c⌋ and back up (8-bit, PIL's fixed-point rounding)."""
    h = x.shape[-2]
    small = int(h * PIXELATE[severity - 1])
    y = torch.round(x * 255)
    return pil_box_resize_uint8(pil_box_resize_uint8(y, small), h) / 255


def jpeg_compression(x: Tensor, severity: int, rng: Draws) -> Tensor:
    """JPEG at quality c (`jpeg.jpeg_roundtrip`, PIL/libjpeg defaults)."""
    return jpeg_roundtrip(torch.round(x * 255), JPEG_QUALITY[severity - 1]) / 255


# ------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Corruption:
    name: str
    category: str
    fn: Callable[[Tensor, int, Draws], Tensor]
    faithful: bool = True


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in [
    Corruption("gaussian_noise", "noise", gaussian_noise),
    Corruption("shot_noise", "noise", shot_noise),
    Corruption("impulse_noise", "noise", impulse_noise),
    Corruption("defocus_blur", "blur", defocus_blur),
    Corruption("glass_blur", "blur", glass_blur),
    Corruption("motion_blur", "blur", motion_blur),
    Corruption("zoom_blur", "blur", zoom_blur),
    Corruption("snow", "weather", snow),
    Corruption("frost", "weather", frost, faithful=False),
    Corruption("fog", "weather", fog),
    Corruption("brightness", "weather", brightness),
    Corruption("contrast", "digital", contrast),
    Corruption("elastic_transform", "digital", elastic_transform),
    Corruption("pixelate", "digital", pixelate),
    Corruption("jpeg_compression", "digital", jpeg_compression),
]}
"""The 15 corruptions in the paper's order (noise ×3, blur ×4, weather ×4, digital ×4)."""
UNFAITHFUL_NOTE = ("frost: the reference blends crops of six frost photographs that vitlab does not ship; "
                   "a procedural ice texture stands in, so its numbers are reported but left out of the "
                   "mean corruption accuracy and of mCE")


def ordered(names) -> list[str]:
    """Corruption names in the paper's order (JSON files keep them sorted alphabetically)."""
    names = list(names)
    return [n for n in CORRUPTIONS if n in names] + sorted(n for n in names if n not in CORRUPTIONS)


def to_unit(x_uint8: Tensor) -> Tensor:
    return x_uint8.to(torch.float32) / 255.0


def to_uint8(x: Tensor) -> Tensor:
    """The reference's np.uint8(clip(x, 0, 1)·255): truncation (plus QUANT_EPS, see there)."""
    return torch.floor(x.clamp(0, 1) * 255 + QUANT_EPS).clamp(0, 255).to(torch.uint8)


def corrupt(x_uint8: Tensor, name: str, severity: int, gen: torch.Generator) -> Tensor:
    """Corrupt a uint8 batch (N, C, H, W) with corruption `name` at severity 1..5, drawing every random
    number from `gen` (on the images' device). Returns uint8 images of the same shape."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    rng = Draws(gen, x_uint8.shape[0], x_uint8.device)
    return to_uint8(CORRUPTIONS[name].fn(to_unit(x_uint8), severity, rng))
