"""Batched image operations with per-sample parameters, on any device.

Images are (N, C, H, W) with C = 1 or 3; float images are on the [0, 1] scale. Every parameter is a
tensor of shape (N,) (one value per image), so a whole batch is transformed in a few tensor ops and
no Python loop runs over samples. The colour formulas follow torchvision's tensor functional ops
(blend with a degenerate image, then clamp), computed in float without intermediate rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601-2 luma weights, as in PIL and torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)
# Sharpness: 3×3 smoothing kernel of PIL's ImageFilter.SMOOTH (centre weight 5, total 13).
SMOOTH_CENTER = 5.0


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """(N,) parameters -> (N, 1, 1, 1), in x's dtype and device, for broadcasting over images."""
    return v.to(device=x.device, dtype=x.dtype if x.is_floating_point() else v.dtype).view(-1, 1, 1, 1)


def to_float(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return x.to(torch.float32).div_(255.0)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x - mean) / std per channel; mean and std are (C,) tensors on x's device."""
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to size×size; antialiased when shrinking (no aliasing from skipped pixels)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < x.shape[-2] or size < x.shape[-1]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


# ---------------------------------------------------------------------------------------- geometry


def crop_padded(x: Tensor, padding: int, top: Tensor, left: Tensor) -> Tensor:
    """Crop an H×W window at (top, left) from each image zero-padded by `padding` on every side.

    top/left are int64 (N,) in [0, 2·padding]; (padding, padding) returns the image unchanged.
    One gather from the (free) view of all windows of the padded batch.
    """
    n, _, h, w = x.shape
    windows = F.pad(x, (padding, padding, padding, padding)).unfold(2, h, 1).unfold(3, w, 1)  # (N, C, dy, dx, H, W)
    return windows[torch.arange(n, device=x.device), :, top.to(x.device), left.to(x.device)]


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror left-right the images where mask (bool (N,)) is set."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def rotation_matrices(angle_deg: Tensor, h: int, w: int) -> Tensor:
    """(N, 2, 3) maps from output to input pixel coordinates: counter-clockwise rotation about the centre.

    Pixel coordinates put the image's top-left corner at (0, 0) and pixel centres at (j + .5, i + .5).
    """
    a = torch.deg2rad(angle_deg.to(torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = w / 2.0, h / 2.0
    # input = c + R^T (output - c), with R the counter-clockwise rotation in y-down coordinates
    m = torch.zeros(angle_deg.shape[0], 2, 3, device=angle_deg.device)
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    m[:, 0, 2] = cx - cos * cx + sin * cy
    m[:, 1, 2] = cy - sin * cx - cos * cy
    return m


def affine(x: Tensor, matrices: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample each image through its (2, 3) output->input map in pixel coordinates; zeros outside.

    Pixel maps are turned into affine_grid's normalized form T·M·T⁻¹, with T the pixel->[-1, 1]
    map of align_corners=False, so integer translations and quarter turns are exact.
    """
    n, _, h, w = x.shape
    m = matrices.to(device=x.device, dtype=torch.float32)
    full = torch.zeros(n, 3, 3, device=x.device)
    full[:, :2] = m
    full[:, 2, 2] = 1.0
    t = torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]], device=x.device)
    t_inv = torch.tensor([[w / 2.0, 0.0, w / 2.0], [0.0, h / 2.0, h / 2.0], [0.0, 0.0, 1.0]], device=x.device)
    theta = (t @ full @ t_inv)[:, :2]
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


# ------------------------------------------------------------------------------------------ colour


def grayscale(x: Tensor) -> Tensor:
    """(N, 1, H, W) luma; a 1-channel image is its own grayscale."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """factor·x + (1 - factor)·degenerate, clamped to [0, 1]; factor is (N,)."""
    f = _per_sample(factor, x)
    return (f * x + (1.0 - f) * degenerate).clamp_(0.0, 1.0)


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    return blend(x, torch.zeros_like(x), factor)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean gray level."""
    return blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image (no-op for 1 channel)."""
    if x.shape[1] == 1:
        return x
    return blend(x, grayscale(x), factor)


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with a smoothed copy (3×3 kernel, border pixels left as they are)."""
    c = x.shape[1]
    if x.shape[-1] <= 2 or x.shape[-2] <= 2:
        return x
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = SMOOTH_CENTER
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(x, kernel, groups=c)
    return blend(x, smooth, factor)


def _levels(x: Tensor) -> Tensor:
    """Nearest uint8 level (as int32) of each float value."""
    return (x * 255.0).round_().clamp_(0, 255).to(torch.int32)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the `bits` (N,) most significant bits of each 8-bit level."""
    mask = -(2 ** (8 - bits.to(device=x.device, dtype=torch.int32))).view(-1, 1, 1, 1)
    return (_levels(x) & mask).to(x.dtype) / 255.0


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert values >= threshold (N,) (on the [0, 1] scale)."""
    return torch.where(x >= _per_sample(threshold, x), 1.0 - x, x)


def autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each image to span [0, 1]; flat channels stay as they are."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((x - lo) * scale).clamp_(0.0, 1.0)


def equalize(x: Tensor) -> Tensor:
    """Histogram-equalize each channel of each image over its 256 levels (PIL's ImageOps.equalize rule).

    lut[v] = (count of levels below v + step // 2) // step with step = (pixels - count of the top
    level) // 255; channels with step 0 stay unchanged. All histograms at once via scatter_add.
    """
    n, c, h, w = x.shape
    q = _levels(x).view(n * c, h * w).to(torch.int64)
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device).scatter_add_(1, q, torch.ones_like(q))
    # count of the highest level present in each channel
    top_level = 255 - (hist.flip(1) > 0).to(torch.int8).argmax(1)
    top_count = hist.gather(1, top_level.view(-1, 1)).squeeze(1)
    step = (h * w - top_count) // 255
    below = torch.cumsum(hist, 1) - hist  # pixels strictly below each level
    safe = step.clamp_min(1).view(-1, 1)
    lut = ((below + safe // 2) // safe).clamp_(0, 255)
    out = lut.gather(1, q).to(x.dtype) / 255.0
    out = torch.where((step > 0).view(-1, 1), out, q.to(x.dtype) / 255.0)
    return out.view(n, c, h, w)


# ------------------------------------------------------------------------------------ occlusion, mix


def box_mask(h: int, w: int, top: Tensor, left: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """(N, 1, H, W) bool: inside the box [top, top+height) × [left, left+width) of each image."""
    rows = torch.arange(h, device=top.device).view(1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    t, l = top.view(-1, 1, 1), left.view(-1, 1, 1)
    inside = (rows >= t) & (rows < t + height.view(-1, 1, 1)) & (cols >= l) & (cols < l + width.view(-1, 1, 1))
    return inside.unsqueeze(1)


def erase(x: Tensor, mask: Tensor, value: float = 0.0) -> Tensor:
    """Set the pixels under mask ((N, 1, H, W) bool) to `value` in every channel."""
    return x.masked_fill(mask.to(x.device), value)


def mix_targets(y: Tensor, perm: Tensor, lam: float, num_classes: int) -> Tensor:
    """Soft targets lam·onehot(y) + (1 - lam)·onehot(y[perm]), float (N, K)."""
    one = F.one_hot(y, num_classes).to(torch.float32)
    return lam * one + (1.0 - lam) * one[perm]
