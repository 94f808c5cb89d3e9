"""Each batched corruption against a per-image reference written like make_cifar_c.py (numpy, one image
at a time, its library calls done with scipy / PIL / naive loops), fed the same random numbers.

The batched op runs with a recording `Draws`; the reference replays image i's slice of every draw in
the same order, so both see identical randomness.
"""
from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from vitlab.analysis import corruptions as C
from vitlab.analysis.imageops import border_index, clipped_zoom_matrix, pil_box_resize_uint8
from vitlab.data.synthetic import load as load_synthetic

N_IMAGES = 3


@pytest.fixture(scope="module")
def images():
    return load_synthetic(10, 10, 20, 1234).test_x[:N_IMAGES]  # uint8 (N, 3, 32, 32)


class Recording(C.Draws):
    def __init__(self, n, seed=0):
        super().__init__(torch.Generator().manual_seed(seed), n, "cpu")
        self.calls = []

    def uniform(self, *shape, low=0.0, high=1.0):
        return self._keep(super().uniform(*shape, low=low, high=high))

    def normal(self, *shape, mean=0.0, std=1.0):
        return self._keep(super().normal(*shape, mean=mean, std=std))

    def integers(self, *shape, low, high):
        return self._keep(super().integers(*shape, low=low, high=high))

    def poisson(self, rates):
        return self._keep(super().poisson(rates))

    def poisson_levels(self, levels, which):
        return self._keep(super().poisson_levels(levels, which))

    def _keep(self, t):
        self.calls.append(t)
        return t


class Replay:
    """numpy's np.random, as the reference calls it, answered with image i's recorded draws."""

    def __init__(self, rec: Recording, i: int):
        self.calls, self.i, self.k = rec.calls, i, 0

    def _next(self, shape):
        t = self.calls[self.k][self.i].double().numpy()
        self.k += 1
        shape = tuple(shape)
        if t.ndim == 3 and len(shape) == 3 and t.shape == (shape[2], shape[0], shape[1]) and t.shape != shape:
            t = np.transpose(t, (1, 2, 0))  # the batched ops draw per image in (C, H, W), the reference in (H, W, C)
        assert t.shape == shape, (t.shape, shape)
        return t

    def uniform(self, low, high, size=()):
        return self._next(size)

    def normal(self, size, loc=0.0, scale=1.0):
        return self._next(size)

    def randint(self, low, high, size):
        return self._next(size).astype(int)

    def poisson(self, lam):
        return self._next(lam.shape)

    def done(self):
        assert self.k == len(self.calls)


def run_batched(name, severity, x_uint8, seed=0):
    rec = Recording(len(x_uint8), seed)
    out = C.to_uint8(C.CORRUPTIONS[name].fn(C.to_unit(x_uint8), severity, rec))
    return out, rec


def hwc(x_uint8_chw):
    return np.transpose(x_uint8_chw.numpy(), (1, 2, 0))


def assert_close_uint8(ours, ref, max_diff=1, max_frac=0.01, mean_diff=None):
    """ours (C, H, W) torch uint8 vs ref (H, W, C) values 0..255: at most max_frac of the values may differ
    (float32 vs float64 at truncation boundaries), none by more than max_diff."""
    a = hwc(ours).astype(np.int64)
    b = np.uint8(np.clip(ref, 0, 255)).astype(np.int64) if ref.dtype != np.uint8 else ref.astype(np.int64)
    d = np.abs(a - b)
    assert d.max() <= max_diff, d.max()
    assert (d > 0).mean() <= max_frac, (d > 0).mean()
    if mean_diff is not None:
        assert d.mean() <= mean_diff


# ------------------------------------------------------------------------- references (make_cifar_c.py)


def ref_gaussian_noise(x, s, rng):
    c = [0.04, 0.06, .08, .09, .10][s - 1]
    x = np.array(x) / 255.
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def ref_shot_noise(x, s, rng):
    c = [500, 250, 100, 75, 50][s - 1]
    x = np.array(x) / 255.
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def ref_impulse_noise(x, s, rng):
    c = [.01, .02, .03, .05, .07][s - 1]
    x = np.array(x) / 255.
    flipped = rng.uniform(0, 1, x.shape) <= c  # skimage random_noise(mode='s&p', amount=c)
    salted = rng.uniform(0, 1, x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return np.clip(out, 0, 1) * 255


def ref_disk(radius, alias_blur):
    L = np.arange(-8, 8 + 1)
    X, Y = np.meshgrid(L, L)
    d = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=np.float64)
    d /= np.sum(d)
    g = np.exp(-(np.arange(3) - 1.0) ** 2 / (2 * alias_blur ** 2))  # cv2.GaussianBlur(ksize=(3, 3)), reflect-101
    g /= g.sum()
    return ndimage.correlate1d(ndimage.correlate1d(d, g, axis=1, mode="mirror"), g, axis=0, mode="mirror")


def ref_defocus_blur(x, s, rng):
    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][s - 1]
    x = np.array(x) / 255.
    kernel = ref_disk(c[0], c[1])
    channels = [ndimage.correlate(x[:, :, d], kernel, mode="mirror") for d in range(x.shape[2])]  # cv2.filter2D
    return np.clip(np.array(channels).transpose((1, 2, 0)), 0, 1) * 255


def sk_gaussian(x, sigma, mode="nearest", truncate=4.0):
    """skimage.filters.gaussian(x, sigma, multichannel=True) for float images."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode=mode, truncate=truncate)


def ref_glass_blur(x, s, rng):
    c = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][s - 1]
    x = np.uint8(sk_gaussian(np.array(x) / 255., c[0]) * 255)
    offsets = rng.randint(-c[1], c[1], size=(c[2], (32 - 2 * c[1]) ** 2, 2))  # the batched op draws them at once
    for i in range(c[2]):
        p = 0
        for h in range(32 - c[1], c[1], -1):
            for w in range(32 - c[1], c[1], -1):
                dx, dy = offsets[i, p]
                p += 1
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w].copy()
    return np.clip(sk_gaussian(x / 255., c[0]), 0, 1) * 255


def ref_motion(x01, radius, sigma, angle):
    """ImageMagick MotionBlurImage on a float image (H, W, C) in [0, 1], edge pixels, 8-bit output."""
    width = 2 * math.ceil(radius) + 1
    k = np.array([math.exp(-(i * i) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma) for i in range(width)])
    k /= k.sum()
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(px, py)
    off = [(math.ceil(i * py / hyp - 0.5), math.ceil(i * px / hyp - 0.5)) for i in range(width)]
    h, w = x01.shape[:2]
    out = np.zeros_like(x01)
    for yy in range(h):
        for xx in range(w):
            for i, (ox, oy) in enumerate(off):
                out[yy, xx] += k[i] * x01[min(max(yy + oy, 0), h - 1), min(max(xx + ox, 0), w - 1)]
    return np.round(out * 255)


def ref_motion_blur(x, s, rng):
    c = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][s - 1]
    return ref_motion(np.array(x) / 255., c[0], c[1], rng.uniform(-45, 45))


def ref_clipped_zoom(img, zoom_factor):
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


def ref_zoom_blur(x, s, rng):
    c = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
         np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][s - 1]
    x = (np.array(x) / 255.)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += ref_clipped_zoom(x, zoom_factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def ref_plasma(rng, mapsize=32, wibbledecay=3):
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def ref_fog(x, s, rng):
    c = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][s - 1]
    x = np.array(x) / 255.
    max_val = x.max()
    x += c[0] * ref_plasma(rng, wibbledecay=c[1])[:32, :32][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def ref_frost(x, s, rng):  # vitlab's procedural stand-in (not the reference's photographs)
    c = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][s - 1]
    frost = ref_plasma(rng, wibbledecay=1.5)[:32, :32, None] ** 1.5 * np.array(C.FROST_TINT)
    return np.clip(c[0] * np.array(x) / 255. + c[1] * frost, 0, 1) * 255


def ref_snow(x, s, rng):
    c = [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][s - 1]
    x = np.array(x, dtype=np.float64) / 255.
    snow_layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    snow_layer = ref_clipped_zoom(snow_layer[..., np.newaxis], c[2])
    snow_layer[snow_layer < c[3]] = 0
    snow_layer = (np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8)  # the PNG for ImageMagick
    snow_layer = ref_motion(snow_layer[..., None] / 255., c[4], c[5], rng.uniform(-135, -45)) / 255.
    gray = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).reshape(32, 32, 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255


def ref_brightness(x, s, rng):
    c = [.05, .1, .15, .2, .3][s - 1]
    x = np.array(x) / 255.
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            h, sat, v = colorsys.rgb_to_hsv(*x[i, j])
            out[i, j] = colorsys.hsv_to_rgb(h, sat, min(max(v + c, 0), 1))
    return np.clip(out, 0, 1) * 255


def ref_contrast(x, s, rng):
    c = [.75, .5, .4, .3, 0.15][s - 1]
    x = np.array(x) / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def ref_elastic_transform(image, s, rng):
    IMSIZE = 32
    c = [(IMSIZE * 0, IMSIZE * 0, IMSIZE * 0.08), (IMSIZE * 0.05, IMSIZE * 0.2, IMSIZE * 0.07),
         (IMSIZE * 0.08, IMSIZE * 0.06, IMSIZE * 0.06), (IMSIZE * 0.1, IMSIZE * 0.04, IMSIZE * 0.05),
         (IMSIZE * 0.1, IMSIZE * 0.03, IMSIZE * 0.03)][s - 1]
    image = np.array(image, dtype=np.float64) / 255.
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float64(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float64([center_square + square_size, [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape)
    M = np.linalg.solve(np.hstack([pts1, np.ones((3, 1))]), pts2).T  # cv2.getAffineTransform
    # cv2.warpAffine(BORDER_REFLECT_101): dst(x, y) = src(M⁻¹ (x, y)); scipy works in (row, col)
    a_inv = np.linalg.inv(M[:, :2])
    t = -a_inv @ M[:, 2]
    rc = np.array([[a_inv[1, 1], a_inv[1, 0]], [a_inv[0, 1], a_inv[0, 0]]])
    image = np.stack([ndimage.affine_transform(image[..., ch], rc, offset=(t[1], t[0]), order=1, mode="mirror")
                      for ch in range(shape[2])], axis=-1)
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(ndimage.map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def ref_pixelate(x, s, rng):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][s - 1]
    img = Image.fromarray(np.uint8(x))
    img = img.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
    return np.array(img)


def ref_jpeg_compression(x, s, rng):
    c = [80, 65, 58, 50, 40][s - 1]
    output = io.BytesIO()
    Image.fromarray(np.uint8(x)).save(output, "JPEG", quality=c)
    return np.array(Image.open(output))


REFERENCES = {
    "gaussian_noise": (ref_gaussian_noise, {}),
    "shot_noise": (ref_shot_noise, {}),
    "impulse_noise": (ref_impulse_noise, {"max_frac": 0.0}),
    # flat regions: v·Σk with Σk = 1 ∓ ε truncates to v or v − 1 depending on the float type
    "defocus_blur": (ref_defocus_blur, {"max_frac": 0.06}),
    "glass_blur": (ref_glass_blur, {"max_frac": 0.02}),
    "motion_blur": (ref_motion_blur, {"max_frac": 0.005}),
    "zoom_blur": (ref_zoom_blur, {}),
    "snow": (ref_snow, {"max_frac": 0.02}),
    "frost": (ref_frost, {}),
    "fog": (ref_fog, {}),
    "brightness": (ref_brightness, {}),
    "contrast": (ref_contrast, {}),
    "elastic_transform": (ref_elastic_transform, {"max_frac": 0.02}),
    "pixelate": (ref_pixelate, {"max_diff": 0}),
    "jpeg_compression": (ref_jpeg_compression, {"max_diff": 0}),  # bit-exact libjpeg pipeline
}


def test_every_corruption_has_a_reference():
    assert set(REFERENCES) == set(C.CORRUPTIONS) and len(C.CORRUPTIONS) == 15
    cats = [c.category for c in C.CORRUPTIONS.values()]
    assert [cats.count(k) for k in ("noise", "blur", "weather", "digital")] == [3, 4, 4, 4]
    assert [n for n, c in C.CORRUPTIONS.items() if not c.faithful] == ["frost"]


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_corruption_matches_per_image_reference(images, name, severity):
    ref_fn, tol = REFERENCES[name]
    ours, rec = run_batched(name, severity, images)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    for i in range(len(images)):
        rng = Replay(rec, i)
        ref = ref_fn(hwc(images[i]), severity, rng)
        rng.done()
        assert_close_uint8(ours[i], np.asarray(ref), **tol)


@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_corruption_is_deterministic_under_a_seed_and_works_on_grayscale(images, name):
    gray = images[:2, :1]
    a = C.corrupt(gray, name, 4, torch.Generator().manual_seed(3))
    b = C.corrupt(gray, name, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == gray.shape and a.dtype == torch.uint8
    c = C.corrupt(images[:2], name, 5, torch.Generator().manual_seed(3))
    assert not torch.equal(c, images[:2])  # severity 5 changes the image


def test_corrupt_rejects_bad_names_and_severities(images):
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt(images, "rain", 1, torch.Generator())
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(images, "fog", 6, torch.Generator())


# ------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("mode,scipy_mode", [("nearest", "nearest"), ("reflect", "reflect"), ("mirror", "mirror")])
def test_border_index_matches_scipy_padding(mode, scipy_mode):
    x = np.arange(5.0)
    idx = border_index(5, 7, mode).numpy()
    k = np.zeros(15)
    k[0] = 1  # correlating with a one-hot kernel at offset -7 reads the padded value
    for o in range(5):
        kernel = np.zeros(15)
        kernel[0] = 1
        got = ndimage.correlate1d(x, kernel, mode=scipy_mode, origin=0)[o]
        assert got == x[idx[o]]


@pytest.mark.parametrize("quality", [95, 80, 40, 10])
def test_jpeg_is_bit_exact_with_pil_on_gray_and_odd_sizes(quality):
    from vitlab.analysis.jpeg import jpeg_roundtrip

    rng = np.random.default_rng(quality)
    for shape, mode in (((28, 28), "L"), ((24, 40, 3), "RGB"), ((27, 33, 3), "RGB")):
        img = ndimage.gaussian_filter(rng.integers(0, 256, shape).astype(float), 1.0).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img, mode).save(buf, "JPEG", quality=quality)
        ref = np.array(Image.open(buf))
        x = torch.from_numpy(img).float()
        x = x[None, None] if img.ndim == 2 else x.permute(2, 0, 1)[None]
        ours = jpeg_roundtrip(x, quality)[0]
        ours = ours[0] if img.ndim == 2 else ours.permute(1, 2, 0)
        assert np.array_equal(ours.numpy().astype(np.uint8), ref)


@pytest.mark.parametrize("factor", [1.0, 1.03, 1.25, 1.75, 2.25])
def test_clipped_zoom_matrix_matches_scipy(factor):
    img = np.random.default_rng(0).random((32, 32, 1))
    z = clipped_zoom_matrix(32, factor).numpy()
    np.testing.assert_allclose(z @ img[..., 0] @ z.T, ref_clipped_zoom(img, factor)[..., 0], atol=1e-12)


@pytest.mark.parametrize("small", [30, 28, 27, 24, 20, 16])
def test_pil_box_resize_is_exact(small):
    """PIL's BOX coefficients and 8-bit fixed-point rounding, reproduced exactly."""
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    down = np.array(Image.fromarray(img).resize((small, small), Image.BOX))
    up = np.array(Image.fromarray(down).resize((32, 32), Image.BOX))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ours_down = pil_box_resize_uint8(x, small)
    assert np.array_equal(ours_down[0].permute(1, 2, 0).numpy(), down)
    assert np.array_equal(pil_box_resize_uint8(ours_down, 32)[0].permute(1, 2, 0).numpy(), up)


def test_poisson_table_sampler_is_the_inverse_cdf():
    from scipy import stats

    levels = torch.tensor([0.0, 0.2, 3.0, 47.5, 500.0], dtype=torch.float64)
    which = torch.arange(5).repeat_interleave(400)
    u = torch.rand(2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = C.poisson_inverse_cdf(levels, which, u).numpy()
    expected = stats.poisson.ppf(u.numpy(), levels[which].numpy())
    expected[levels[which].numpy() == 0] = 0
    assert np.array_equal(got, expected)
    rates = (torch.arange(256, dtype=torch.float32) / 255 * 100).repeat(200)  # shot noise's 256 levels
    levels = torch.arange(256, dtype=torch.float64) / 255 * 100
    which = torch.arange(256).repeat(200).view(1, -1)
    x = C.Draws(torch.Generator().manual_seed(1), 1, "cpu").poisson_levels(levels, which)[0].view(200, 256)
    assert torch.allclose(x.mean(dim=0), rates[:256], atol=4 * (rates[:256].sqrt().max() / 200 ** 0.5).item())
