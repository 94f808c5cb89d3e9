"""Baseline JPEG compression and decompression of image batches as integer tensor ops (ITU-T T.81),
reproducing what PIL's `save(..., 'JPEG', quality=q)` + `open` do through libjpeg(-turbo) defaults:

    encode: RGB -> YCbCr (jccolor.c fixed point), 4:2:0 chroma subsampling (jcsample.c h2v2, alternating
            rounding bias), level shift, "islow" integer DCT (jfdctint.c), quantization by the Annex K
            tables scaled as jpeg_set_quality(q, force_baseline) does, rounding |c|/q half up
    decode: dequantize, "islow" integer IDCT (jidctint.c) with range limiting, "fancy" triangular chroma
            upsampling (jdsample.c h2v2_fancy_upsample), YCbCr -> RGB (jdcolor.c fixed point)

Entropy coding is lossless and left out. Checked bit for bit against PIL in
tests/test_analysis_corruptions.py.
"""
from __future__ import annotations

import torch
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


CONST_BITS = 13
PASS1_BITS = 2
"""Fixed-point precision of libjpeg's "islow" DCT (jfdctint.c / jidctint.c)."""


def _fix(x: float, bits: int = CONST_BITS) -> int:
    return int(x * (1 << bits) + 0.5)


F_0_298, F_0_390, F_0_541, F_0_765 = _fix(0.298631336), _fix(0.390180644), _fix(0.541196100), _fix(0.765366865)
F_0_899, F_1_175, F_1_501, F_1_847 = _fix(0.899976223), _fix(1.175875602), _fix(1.501321110), _fix(1.847759065)
F_1_961, F_2_053, F_2_562, F_3_072 = _fix(1.961570560), _fix(2.053119869), _fix(2.562915447), _fix(3.072711026)


def _odd_part(t4, t5, t6, t7):
    """The shared rotation of the odd coefficients (Loeffler–Ligtenberg–Moschytz), libjpeg's constants."""
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * F_1_175
    t4, t5, t6, t7 = t4 * F_0_298, t5 * F_2_053, t6 * F_3_072, t7 * F_1_501
    z1, z2, z3, z4 = z1 * -F_0_899, z2 * -F_2_562, z3 * -F_1_961 + z5, z4 * -F_0_390 + z5
    return t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4


def _fdct_1d(d: list, first: bool) -> tuple[list, list[int]]:
    """One pass of jpeg_fdct_islow over 8 inputs: the 8 outputs before their final DESCALE, and the
    shift of each (0: none). Linear in the inputs until the DESCALE."""
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    n = CONST_BITS - PASS1_BITS if first else CONST_BITS + PASS1_BITS
    z1 = (t12 + t13) * F_0_541
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    raw = [(t10 + t11) * (1 << PASS1_BITS) if first else t10 + t11, o1, z1 + t13 * F_0_765, o3,
           (t10 - t11) * (1 << PASS1_BITS) if first else t10 - t11, o5, z1 - t12 * F_1_847, o7]
    dc = 0 if first else PASS1_BITS
    return raw, [dc, n, n, n, dc, n, n, n]


def _idct_1d(c: list, first: bool) -> tuple[list, list[int]]:
    """One pass of jpeg_idct_islow over 8 coefficients: outputs before their DESCALE, and the shifts."""
    z1 = (c[2] + c[6]) * F_0_541
    t2, t3 = z1 - c[6] * F_1_847, z1 + c[2] * F_0_765
    t0, t1 = (c[0] + c[4]) * (1 << CONST_BITS), (c[0] - c[4]) * (1 << CONST_BITS)
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(c[7], c[5], c[3], c[1])
    n = CONST_BITS - PASS1_BITS if first else CONST_BITS + PASS1_BITS + 3
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3], [n] * 8


def _pass_matrix(fn, first: bool) -> tuple[Tensor, Tensor]:
    """The integer matrix of one pass before its DESCALE (evaluated on the unit vectors) and the shifts."""
    cols = [fn([int(i == j) for i in range(BLOCK)], first)[0] for j in range(BLOCK)]
    shifts = fn([0] * BLOCK, first)[1]
    return torch.tensor(cols, dtype=torch.float64).T, torch.tensor(shifts, dtype=torch.float64)


_PASSES = {name: (_pass_matrix(fn, True), _pass_matrix(fn, False)) for name, fn in (("fdct", _fdct_1d),
                                                                                     ("idct", _idct_1d))}


def _descale_f(x: Tensor, shifts: Tensor) -> Tensor:
    """DESCALE of float64 integers by per-output shifts, in place: floor((x + 2^(n−1)) / 2^n), and x
    itself where n = 0 (exact: every value is far below 2^53)."""
    scale = torch.exp2(shifts)
    half = torch.where(shifts > 0, scale / 2, torch.zeros_like(scale))
    return x.add_(half).div_(scale).floor_()


def _two_passes(blocks: Tensor, name: str, rows_first: bool) -> Tensor:
    """Apply a 2-D islow transform as two exact float64 GEMMs, each followed by its DESCALE."""
    (m1, s1), (m2, s2) = (tuple(t.to(blocks.device) for t in p) for p in _PASSES[name])
    if rows_first:
        y = _descale_f(blocks @ m1.T, s1)  # along the last dim (rows of the block)
        return _descale_f((m2 @ y).transpose(-1, -2), s2).transpose(-1, -2)
    y = _descale_f((m1 @ blocks).transpose(-1, -2), s1).transpose(-1, -2)  # along columns first
    return _descale_f(y @ m2.T, s2)


def fdct_islow(blocks: Tensor) -> Tensor:
    """libjpeg's integer forward DCT (jfdctint.c) of level-shifted blocks (..., 8, 8) holding integers,
    rows then columns; the result is 8× the orthonormal DCT, as libjpeg keeps it (float64 integers)."""
    return _two_passes(blocks.double(), "fdct", rows_first=True)


def idct_islow(coef: Tensor) -> Tensor:
    """libjpeg's integer inverse DCT (jidctint.c) of dequantized coefficients (..., 8, 8), columns then
    rows; returns level-shifted samples (before + 128 and the range limit), float64 integers."""
    return _two_passes(coef.double(), "idct", rows_first=False)


def _blocks(x: Tensor) -> Tensor:
    """(N, H, W) with H, W multiples of 8 -> (N, H/8, W/8, 8, 8)."""
    n, h, w = x.shape
    return x.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 3, 2, 4)


def _unblocks(b: Tensor) -> Tensor:
    n, bh, bw = b.shape[:3]
    return b.permute(0, 1, 3, 2, 4).reshape(n, bh * BLOCK, bw * BLOCK)


def code_component(x: Tensor, table: Tensor) -> Tensor:
    """One component (N, H, W) of int64 samples (H, W multiples of 8) through libjpeg: level shift,
    integer DCT, quantization (|c| + q/2) // q with q = 8·table, dequantization, integer IDCT,
    level shift back and range limit."""
    t = table.double().to(x.device)
    q = t * 8
    coef = fdct_islow(_blocks(x - 128))
    quant = torch.sign(coef) * torch.floor((coef.abs() + torch.floor(q / 2)) / q)
    out = idct_islow(quant * t) + 128
    return _unblocks(out.clamp(0, 255)).long()


def _fix16(x: float) -> int:
    return int(x * 65536 + 0.5)


def rgb_to_ycc(r: Tensor, g: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """libjpeg's rgb_ycc_convert (jccolor.c), 16-bit fixed point, on int64 samples."""
    half, offset = 1 << 15, 128 << 16
    y = (_fix16(0.299) * r + _fix16(0.587) * g + _fix16(0.114) * b + half) >> 16
    cb = (-_fix16(0.16874) * r - _fix16(0.33126) * g + _fix16(0.5) * b + offset + half - 1) >> 16
    cr = (_fix16(0.5) * r - _fix16(0.41869) * g - _fix16(0.08131) * b + offset + half - 1) >> 16
    return y, cb, cr


def ycc_to_rgb(y: Tensor, cb: Tensor, cr: Tensor) -> Tensor:
    """libjpeg's ycc_rgb_convert (jdcolor.c), 16-bit fixed point, range-limited: (N, 3, H, W)."""
    half = 1 << 15
    cb, cr = cb - 128, cr - 128
    r = y + ((_fix16(1.402) * cr + half) >> 16)
    g = y + ((-_fix16(0.34414) * cb + half - _fix16(0.71414) * cr) >> 16)
    b = y + ((_fix16(1.772) * cb + half) >> 16)
    return torch.stack([r, g, b], dim=1).clamp(0, 255)


def downsample_h2v2(c: Tensor) -> Tensor:
    """libjpeg's h2v2_downsample: (sum of each 2×2 block + bias) >> 2, bias alternating 1, 2 along columns."""
    n, h, w = c.shape
    s = c.reshape(n, h // 2, 2, w // 2, 2).sum(dim=(2, 4))
    bias = torch.tensor([1, 2], dtype=c.dtype, device=c.device).repeat(w // 4 + 1)[: w // 2]
    return (s + bias) >> 2


def upsample_h2v2_fancy(c: Tensor) -> Tensor:
    """libjpeg's h2v2_fancy_upsample (triangular filter, 3/4 nearer + 1/4 farther sample in each
    direction, edges replicated) with its integer rounding: (N, h, w) -> (N, 2h, 2w)."""
    n, h, w = c.shape
    up = torch.cat([c[:, :1], c[:, :-1]], dim=1)
    down = torch.cat([c[:, 1:], c[:, -1:]], dim=1)
    colsum = torch.stack([3 * c + up, 3 * c + down], dim=2).reshape(n, 2 * h, w)
    left = torch.cat([colsum[..., :1], colsum[..., :-1]], dim=-1)
    right = torch.cat([colsum[..., 1:], colsum[..., -1:]], dim=-1)
    even = (3 * colsum + left + 8) >> 4
    odd = (3 * colsum + right + 7) >> 4
    return torch.stack([even, odd], dim=-1).reshape(n, 2 * h, 2 * w)


def _pad_to(x: Tensor, rows: int, cols: int) -> Tensor:
    """Replicate the last row / column of (N, H, W) int64 samples up to rows × cols (libjpeg's
    expand_right_edge / expand_bottom_edge)."""
    h, w = x.shape[-2:]
    if rows > h:
        x = torch.cat([x, x[:, -1:].expand(-1, rows - h, -1)], dim=1)
    if cols > w:
        x = torch.cat([x, x[:, :, -1:].expand(-1, -1, cols - w)], dim=2)
    return x


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """Compress and decompress images (N, C, H, W), C = 1 or 3, float 0..255 integer-valued; returns
    the decoded images in the same form (float32). Edges are padded where and as libjpeg pads them."""
    n, c, h, w = x.shape
    x = x.round().long()
    luma_t = quality_scaled_table(LUMA_TABLE, quality)
    if c == 1:
        y = code_component(_pad_to(x[:, 0], _up(h, BLOCK), _up(w, BLOCK)), luma_t)
        return y[:, :h, :w].unsqueeze(1).to(torch.float32)
    chroma_t = quality_scaled_table(CHROMA_TABLE, quality)
    ch, cw = -(-h // 2), -(-w // 2)  # real chroma samples
    planes = x.reshape(n * c, h, w)
    full = _pad_to(planes, _up(h, BLOCK), _up(w, BLOCK)).reshape(n, c, _up(h, BLOCK), _up(w, BLOCK))
    y = code_component(rgb_to_ycc(*full.unbind(1))[0], luma_t)[:, :h, :w]
    half = _pad_to(planes, 2 * ch, 2 * _up(cw, BLOCK)).reshape(n, c, 2 * ch, 2 * _up(cw, BLOCK))
    _, cb, cr = rgb_to_ycc(*half.unbind(1))

    def chroma(v: Tensor) -> Tensor:
        v = _pad_to(downsample_h2v2(v), _up(ch, BLOCK), 0)
        v = code_component(v, chroma_t)[:, :ch, :cw]  # the decoder upsamples only the real samples
        return upsample_h2v2_fancy(v)[:, :h, :w]

    return ycc_to_rgb(y, chroma(cb), chroma(cr)).to(torch.float32)
