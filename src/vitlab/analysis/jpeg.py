"""Baseline JPEG compression and decompression of image batches as tensor ops (ITU-T T.81).

Follows what PIL's `save(..., 'JPEG', quality=q)` + `open` do through libjpeg(-turbo) with its
defaults: JFIF YCbCr, 4:2:0 chroma subsampling (2×2 averages with libjpeg's alternating rounding
bias), the Annex K quantization tables scaled by `jpeg_quality_scaling`, 8×8 DCT, quantization
rounded half away from zero, and on decoding the IDCT, libjpeg's "fancy" (triangular) chroma
upsampling and the inverse colour transform, each rounded to 8 bits where libjpeg rounds.

Difference from libjpeg: the DCT and IDCT are computed in floating point, not with libjpeg's
fixed-point "islow" integer approximation, so a few pixels differ by a level or two (measured
against PIL in tests/test_analysis_corruptions.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 8
LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
"""Annex K.1 luminance quantization table (row-major)."""
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32
"""Annex K.2 chrominance quantization table (row-major)."""


def quality_scaled_table(base: tuple[int, ...], quality: int) -> Tensor:
    """libjpeg's jpeg_set_quality with force_baseline: scale = 5000/q below 50, else 200 − 2q;
    entries (b·scale + 50) // 100 clamped to 1..255. Returns (8, 8) float64."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    t = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(t, dtype=torch.float64).view(BLOCK, BLOCK)


def dct_matrix(n: int = BLOCK) -> Tensor:
    """Orthonormal DCT-II matrix D (rows = frequencies): coefficients of a block B are D B Dᵀ; this
    equals T.81's (1/4) C(u) C(v) Σ Σ f cos cos normalization."""
    k = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * k.view(1, -1) + 1) * k.view(-1, 1) / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5)


def _round_half_away(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _blocks(x: Tensor) -> Tensor:
    """(N, H, W) with H, W multiples of 8 -> (N, H/8, W/8, 8, 8)."""
    n, h, w = x.shape
    return x.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 3, 2, 4)


def _unblocks(b: Tensor) -> Tensor:
    n, bh, bw = b.shape[:3]
    return b.permute(0, 1, 3, 2, 4).reshape(n, bh * BLOCK, bw * BLOCK)


def _pad_replicate(x: Tensor, multiple: int) -> Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x.unsqueeze(1), (0, pw, 0, ph), mode="replicate").squeeze(1)


def code_component(x: Tensor, table: Tensor) -> Tensor:
    """Level shift, DCT, quantize, dequantize, IDCT, level shift back, round and clamp to 0..255:
    one component (N, H, W) of 8-bit samples, H, W multiples of 8."""
    d2 = torch.kron(dct_matrix(), dct_matrix()).to(x.device)  # 2-D DCT of flattened 8×8 blocks
    t = table.reshape(-1).to(x.device)
    b = _blocks(x - 128.0)
    shape = b.shape
    coef = b.reshape(-1, BLOCK * BLOCK) @ d2.T  # one GEMM for all blocks of all images
    coef = _round_half_away(coef / t) * t
    return _round_half_up(_unblocks((coef @ d2).reshape(shape)) + 128.0).clamp(0, 255)


def downsample_h2v2(c: Tensor) -> Tensor:
    """libjpeg's h2v2_downsample: (sum of each 2×2 block + bias) >> 2, bias alternating 1, 2 along columns."""
    n, h, w = c.shape
    s = c.reshape(n, h // 2, 2, w // 2, 2).sum(dim=(2, 4))
    bias = torch.tensor([1.0, 2.0], dtype=c.dtype, device=c.device).repeat(w // 4 + 1)[: w // 2]
    return torch.floor((s + bias) / 4)


def upsample_h2v2_fancy(c: Tensor) -> Tensor:
    """libjpeg's h2v2_fancy_upsample (triangular filter, 3/4 nearer + 1/4 farther sample in each
    direction, edges replicated) with its integer rounding: (N, h, w) -> (N, 2h, 2w)."""
    n, h, w = c.shape
    up = torch.cat([c[:, :1], c[:, :-1]], dim=1)
    down = torch.cat([c[:, 1:], c[:, -1:]], dim=1)
    colsum = torch.stack([3 * c + up, 3 * c + down], dim=2).reshape(n, 2 * h, w)
    left = torch.cat([colsum[..., :1], colsum[..., :-1]], dim=-1)
    right = torch.cat([colsum[..., 1:], colsum[..., -1:]], dim=-1)
    even = torch.floor((3 * colsum + left + 8) / 16)
    odd = torch.floor((3 * colsum + right + 7) / 16)
    return torch.stack([even, odd], dim=-1).reshape(n, 2 * h, 2 * w)


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """Compress and decompress images (N, C, H, W), C = 1 or 3, float 0..255 integer-valued; returns
    the decoded images in the same form."""
    n, c, h, w = x.shape
    x = x.double()
    luma_t = quality_scaled_table(LUMA_TABLE, quality)
    if c == 1:
        y = code_component(_pad_replicate(x[:, 0], BLOCK), luma_t)
        return y[:, :h, :w].unsqueeze(1).to(torch.float32)
    chroma_t = quality_scaled_table(CHROMA_TABLE, quality)
    r, g, b = _pad_replicate(x.reshape(n * c, h, w), 2 * BLOCK).reshape(n, c, *_padded(h, w)).unbind(1)
    y = _round_half_up(0.299 * r + 0.587 * g + 0.114 * b)
    cb = _round_half_up(-0.168735892 * r - 0.331264108 * g + 0.5 * b + 128.0 - 1e-9)
    cr = _round_half_up(0.5 * r - 0.418687589 * g - 0.081312411 * b + 128.0 - 1e-9)
    y = code_component(y, luma_t)
    cb = upsample_h2v2_fancy(code_component(downsample_h2v2(cb), chroma_t))
    cr = upsample_h2v2_fancy(code_component(downsample_h2v2(cr), chroma_t))
    cb, cr = cb - 128.0, cr - 128.0
    r = y + _round_half_up(1.402 * cr)
    g = y + _round_half_up(-0.344136286 * cb - 0.714136286 * cr)
    b = y + _round_half_up(1.772 * cb)
    out = torch.stack([r, g, b], dim=1).clamp(0, 255)
    return out[..., :h, :w].to(torch.float32)


def _padded(h: int, w: int) -> tuple[int, int]:
    m = 2 * BLOCK
    return h + (-h % m), w + (-w % m)
