"""Batched image filters that reproduce the library calls of the CIFAR-C reference code
(scipy.ndimage / skimage Gaussian filters with their border modes, OpenCV's kernels, scipy's
linear zoom, PIL's BOX resampling) as tensor ops on (N, C, H, W) float images on any device.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BORDER_MODES = ("nearest", "reflect", "mirror")
"""scipy.ndimage names: nearest = replicate the edge (aaa|abcd), reflect = half-sample symmetric
(ba|abcd, OpenCV's BORDER_REFLECT), mirror = whole-sample symmetric (cb|abcd, OpenCV's BORDER_REFLECT_101)."""

SHIFTED_SUM_MAX_TAPS = 49
"""Kernels up to 7×7 are correlated as a sum of shifted copies, larger ones with conv2d."""
PIL_PRECISION_BITS = 32 - 8 - 2
"""Fixed-point bits of PIL's 8-bit resampling coefficients (Resample.c, PRECISION_BITS)."""


def border_index(n: int, pad: int, mode: str, device=None) -> Tensor:
    """Source indices of a length-n axis padded by `pad` on both sides under a scipy border mode."""
    i = torch.arange(-pad, n + pad, device=device)
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"border mode must be one of {BORDER_MODES}, got {mode!r}")


TORCH_PAD = {"nearest": "replicate", "mirror": "reflect"}
"""torch's names of the scipy border modes it implements natively (for pads smaller than the image)."""


def pad2d(x: Tensor, pad_h: int, pad_w: int, mode: str) -> Tensor:
    """Pad the last two dims of x by pad_h rows and pad_w columns on each side under a scipy border
    mode (any pad size)."""
    if mode in TORCH_PAD and pad_h < x.shape[-2] and pad_w < x.shape[-1] and x.ndim == 4:
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=TORCH_PAD[mode])
    if pad_h:
        x = x.index_select(-2, border_index(x.shape[-2], pad_h, mode, x.device))
    if pad_w:
        x = x.index_select(-1, border_index(x.shape[-1], pad_w, mode, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float) -> Tensor:
    """scipy.ndimage's 1-D Gaussian: exp(−x²/2σ²) for |x| ≤ int(truncate·σ + 0.5), normalized (float64)."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return torch.ones(1, dtype=torch.float64)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def correlate2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Correlate every channel of x (N, C, H, W) with a (kh, kw) kernel centred on each pixel
    (scipy.ndimage.correlate / cv2.filter2D), borders by `mode`."""
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    xp = pad2d(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
    if kh * kw > SHIFTED_SUM_MAX_TAPS:
        return F.conv2d(xp, kernel.to(x).view(1, 1, kh, kw)).reshape(n, c, h, w)
    out = torch.zeros(n * c, 1, h, w, dtype=x.dtype, device=x.device)
    for i in range(kh):  # small kernels: one fused multiply-add per nonzero tap beats a 1-channel conv
        for j in range(kw):
            if float(kernel[i, j]) != 0.0:
                out.add_(xp[..., i:i + h, j:j + w], alpha=float(kernel[i, j]))
    return out.reshape(n, c, h, w)


def crop_support(kernel: Tensor) -> Tensor:
    """The smallest centred odd-sized window of a 2-D kernel holding all its nonzero entries (correlating
    with it is identical, and much cheaper for the mostly-zero defocus disks)."""
    nz = kernel.nonzero()
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    r = int(max((nz[:, 0] - cy).abs().max(), (nz[:, 1] - cx).abs().max())) if len(nz) else 0
    return kernel[cy - r: cy + r + 1, cx - r: cx + r + 1]


def axis_filter_matrix(n: int, k1d: Tensor, mode: str) -> Tensor:
    """(n, n) matrix of correlating a length-n axis with the centred 1-D kernel k1d, the border mode
    folded in: out = M @ in. float64."""
    r = len(k1d) // 2
    src = border_index(n, r, mode).numpy()
    k = k1d.double().numpy()
    m = np.zeros((n, n))
    for o in range(n):
        np.add.at(m[o], src[o:o + len(k)], k)
    return torch.from_numpy(m)


def apply_separable(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """rows @ x @ colsᵀ over the last two dims of x: a separable linear filter as two batched GEMMs."""
    rows, cols = rows.to(x), cols.to(x)
    return rows @ x @ cols.T


@functools.lru_cache(maxsize=64)
def gaussian_filter_matrix(n: int, sigma: float, mode: str, truncate: float) -> Tensor:
    """(n, n) matrix of scipy's 1-D Gaussian filter along an axis of length n, border mode folded in."""
    return axis_filter_matrix(n, gaussian_kernel1d(sigma, truncate), mode)


def gaussian_filter(x: Tensor, sigma: float, mode: str, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage.gaussian_filter over the last two dims (the spatial ones)."""
    if gaussian_kernel1d(sigma, truncate).numel() == 1:
        return x
    h, w = x.shape[-2:]
    return apply_separable(x, gaussian_filter_matrix(h, sigma, mode, truncate),
                           gaussian_filter_matrix(w, sigma, mode, truncate))


def cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0: exp(−(i − (k−1)/2)²/2σ²), normalized."""
    i = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(i ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def linear_zoom_matrix(n: int, size: int) -> Tensor:
    """(size, n) matrix of scipy.ndimage.zoom(order=1) along one axis: output o samples the input at
    o·(n − 1)/(size − 1) (scipy's default grid_mode=False), linearly between its two neighbours."""
    m = np.zeros((size, n))
    for o in range(size):
        pos = o * (n - 1) / (size - 1) if size > 1 else 0.0
        lo = min(int(math.floor(pos)), n - 1)
        frac = pos - lo
        m[o, lo] += 1 - frac
        if frac > 0:
            m[o, lo + 1] += frac
    return torch.from_numpy(m)


@functools.lru_cache(maxsize=64)
def clipped_zoom_matrix(h: int, factor: float) -> Tensor:
    """(h, h) matrix of the reference's `clipped_zoom` along one axis: crop the central ⌈h/z⌉ pixels,
    zoom them linearly to round(⌈h/z⌉·z) (scipy's output size), keep the central h."""
    ch = int(math.ceil(h / factor))
    top = (h - ch) // 2
    out = int(round(ch * factor))
    trim = (out - h) // 2
    z = linear_zoom_matrix(ch, out)[trim:trim + h]
    m = torch.zeros(h, h, dtype=torch.float64)
    m[:, top:top + ch] = z
    return m


KRON_MAX_PIXELS = 64 * 64
"""Up to this many pixels per image, a sum of separable operators is applied as one (HW × HW) matrix."""


@functools.lru_cache(maxsize=16)
def zoom_blur_operator(h: int, factors: tuple[float, ...]) -> Tensor:
    """(h², h²) matrix of x ↦ (x + Σ_z clipped_zoom(x, z)) / (1 + #z) on row-major flattened h×h images:
    Σ_z Z_z ⊗ Z_z (the Kronecker form of Z_z X Z_zᵀ), so the whole zoom blur is one GEMM."""
    k = torch.eye(h * h, dtype=torch.float64)
    for z in factors:
        m = clipped_zoom_matrix(h, z)
        k += torch.kron(m, m)
    return k / (len(factors) + 1)


def clipped_zoom(x: Tensor, factor: float) -> Tensor:
    """`clipped_zoom` of the last two (square) dims of x."""
    z = clipped_zoom_matrix(x.shape[-2], factor)
    return apply_separable(x, z, z)


@functools.lru_cache(maxsize=64)
def pil_box_coefficients(in_size: int, out_size: int) -> Tensor:
    """(out, in) integer weights of PIL's BOX resampling along one axis, scaled by 2^PRECISION_BITS
    (Pillow Resample.c: precompute_coeffs + normalize_coeffs_8bpc), as float64."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        ks = [1.0 if -0.5 < (x - center + 0.5) / filterscale <= 0.5 else 0.0 for x in range(xmin, xmax)]
        total = sum(ks)
        for j, k in enumerate(ks):
            k = k / total if total else 0.0
            weights[xx, xmin + j] = math.floor(0.5 + k * (1 << PIL_PRECISION_BITS))
    return weights


def pil_box_resize_uint8(x: Tensor, size: int) -> Tensor:
    """PIL `Image.resize((size, size), Image.BOX)` of uint8-valued images (N, C, H, W) given as
    float 0..255: horizontal pass, 8-bit rounding, vertical pass, 8-bit rounding — exact integers."""
    one = float(1 << PIL_PRECISION_BITS)
    half = float(1 << (PIL_PRECISION_BITS - 1))
    n, c, h, w = x.shape
    y = x.double()
    if w != size:  # one GEMM over all rows of all images
        kw = pil_box_coefficients(w, size).to(y.device)
        y = torch.floor((y.reshape(-1, w) @ kw.T + half) / one).clamp(0, 255).reshape(n, c, h, size)
    if h != size:
        kh = pil_box_coefficients(h, size).to(y.device)
        y = y.transpose(-1, -2).reshape(-1, h)
        y = torch.floor((y @ kh.T + half) / one).clamp(0, 255).reshape(n, c, size, size).transpose(-1, -2)
    return y.to(x.dtype).contiguous()
