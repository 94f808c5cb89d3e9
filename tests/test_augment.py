"""Batched augmentation: each op against a naive per-image reference, reproducibility, per-sample randomness."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from vitlab.config import AugmentConfig
from vitlab.data import Augmenter
from vitlab.data import ops
from vitlab.data.augment import GEOMETRIC, OP_INDEX, POLICY_OPS, cutmix_box

MEAN3, STD3 = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
OFF = dict(crop_padding=0, hflip=False)  # every default-on op disabled


def images(n=16, c=3, size=8, seed=0):
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def naive_normalize(x_uint8, mean, std):
    out = np.zeros(x_uint8.shape, dtype=np.float64)
    for i in range(x_uint8.shape[0]):
        for c in range(x_uint8.shape[1]):
            out[i, c] = (x_uint8[i, c].numpy() / 255.0 - mean[c]) / std[c]
    return torch.from_numpy(out).float()


# --------------------------------------------------------------------------------------------- basics


def test_eval_batch_normalizes_with_mean_and_std():
    x = images()
    aug = Augmenter(AugmentConfig(), MEAN3, STD3, 10, 8)
    out = aug.eval_batch(x)
    assert out.dtype == torch.float32 and out.shape == (16, 3, 8, 8)
    torch.testing.assert_close(out, naive_normalize(x, MEAN3, STD3), atol=1e-5, rtol=0)


def test_shapes_dtypes_and_resize_both_ways():
    x = images(size=32)
    up = Augmenter(AugmentConfig(), MEAN3, STD3, 10, 72)
    xt, yt = up.train_batch(x, torch.arange(16) % 10, gen())
    assert xt.shape == (16, 3, 72, 72) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    ref = F.interpolate(x.float() / 255, size=(72, 72), mode="bilinear", align_corners=False)
    ref = (ref - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1)
    torch.testing.assert_close(up.eval_batch(x), ref, atol=1e-5, rtol=0)
    # fashion-mnist into a 32 px network: 1 channel, 28 -> 32
    g = images(c=1, size=28)
    aug = Augmenter(AugmentConfig(policy="randaugment", color_jitter=0.3), (0.286,), (0.353,), 10, 32)
    xg, _ = aug.train_batch(g, torch.zeros(16, dtype=torch.int64), gen())
    assert xg.shape == (16, 1, 32, 32) and torch.isfinite(xg).all()
    # shrinking is antialiased
    down = Augmenter(AugmentConfig(), MEAN3, STD3, 10, 16).eval_batch(x)
    ref = F.interpolate(x.float() / 255, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(down, (ref - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1),
                               atol=1e-5, rtol=0)


def test_everything_disabled_equals_eval():
    x, y = images(), torch.arange(16) % 10
    aug = Augmenter(AugmentConfig(**OFF), MEAN3, STD3, 10, 12)
    xt, yt = aug.train_batch(x, y, gen())
    assert torch.equal(xt, aug.eval_batch(x)) and torch.equal(yt, y)


FULL = dict(crop_padding=4, hflip=True, rotation_deg=15, color_jitter=0.4, policy="randaugment", randaug_ops=2,
            randaug_magnitude=9, mixup_alpha=0.8, cutmix_alpha=1.0, erase_prob=0.25)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_reproducible_under_a_seed_and_different_across_seeds(policy):
    x, y = images(32, size=16), torch.arange(32) % 10
    aug = Augmenter(AugmentConfig(**{**FULL, "policy": policy}), MEAN3, STD3, 10, 16)
    a = aug.train_batch(x, y, gen(1))
    b = aug.train_batch(x, y, gen(1))
    c = aug.train_batch(x, y, gen(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # the generator's state is all that matters: restoring it replays the batch (checkpoint/resume)
    g = gen(3)
    state = g.get_state()
    first = aug.train_batch(x, y, g)
    g.set_state(state)
    assert torch.equal(aug.train_batch(x, y, g)[0], first[0])


def test_bad_inputs_are_rejected():
    aug = Augmenter(AugmentConfig(), MEAN3, STD3, 10, 8)
    with pytest.raises(ValueError):
        aug.eval_batch(images().float())
    with pytest.raises(ValueError):
        aug.eval_batch(images(c=1))
    with pytest.raises(ValueError):
        Augmenter(AugmentConfig(), (0.5, 0.5), (0.2, 0.2), 10, 8)


# ------------------------------------------------------------------------------------------ geometry


def test_crop_matches_naive_pad_and_slice():
    x = images(6, size=8)
    top = torch.tensor([0, 8, 4, 1, 7, 3])
    left = torch.tensor([8, 0, 4, 6, 2, 5])
    out = ops.crop_padded(x, 4, top, left)
    for i in range(6):
        padded = np.zeros((3, 16, 16), dtype=np.uint8)
        padded[:, 4:12, 4:12] = x[i].numpy()
        ref = padded[:, top[i]:top[i] + 8, left[i]:left[i] + 8]
        assert np.array_equal(out[i].numpy(), ref)
    assert torch.equal(ops.crop_padded(x, 4, torch.full((6,), 4), torch.full((6,), 4)), x)


def test_crop_in_pipeline_draws_per_sample_offsets():
    x = torch.full((64, 1, 8, 8), 255, dtype=torch.uint8)
    aug = Augmenter(AugmentConfig(crop_padding=3, hflip=False), (0.0,), (1.0,), 10, 8)
    out, _ = aug.train_batch(x, torch.zeros(64, dtype=torch.int64), gen())
    # the visible part of the white image is a rectangle of (8-|dy|)(8-|dx|) pixels, dy, dx in -3..3
    visible = (out > 0.5).sum(dim=(1, 2, 3))
    assert set(visible.tolist()) <= {(8 - a) * (8 - b) for a in range(4) for b in range(4)}
    assert len(set(visible.tolist())) > 4  # different offsets in one batch


def test_flip_matches_naive_and_hits_about_half_the_batch():
    x = images(400, c=1, size=4)
    aug = Augmenter(AugmentConfig(crop_padding=0, hflip=True), (0.0,), (1.0,), 10, 4)
    out, _ = aug.train_batch(x, torch.zeros(400, dtype=torch.int64), gen())
    flipped = 0
    for i in range(400):
        img, o = x[i, 0].numpy() / 255.0, out[i, 0].numpy()
        if np.allclose(o, img[:, ::-1], atol=1e-6) and not np.allclose(img, img[:, ::-1]):
            flipped += 1
        else:
            assert np.allclose(o, img, atol=1e-6)
    assert 160 < flipped < 240  # Binomial(400, 0.5): ±4 sd


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotation_by_quarter_turns_is_exact(k):
    x = images(4, size=8).float() / 255
    out = ops.affine(x, ops.rotation_matrices(torch.full((4,), 90.0 * k), 8, 8))
    torch.testing.assert_close(out, torch.rot90(x, k, dims=(2, 3)), atol=1e-5, rtol=0)


def test_rotation_matches_naive_inverse_mapping():
    """Small angles: compare with a per-pixel bilinear implementation of the inverse map."""
    x = images(3, c=1, size=9).float() / 255
    angles = torch.tensor([10.0, -25.0, 40.0])
    out = ops.affine(x, ops.rotation_matrices(angles, 9, 9))
    for i, a in enumerate(angles.tolist()):
        ref = np.zeros((9, 9))
        t = math.radians(a)
        img = x[i, 0].numpy()
        for r in range(9):
            for c in range(9):
                px, py = c + 0.5 - 4.5, r + 0.5 - 4.5  # output pixel centre relative to the image centre
                # counter-clockwise on screen (y down): input = R^T (output)
                sx = math.cos(t) * px - math.sin(t) * py + 4.5 - 0.5
                sy = math.sin(t) * px + math.cos(t) * py + 4.5 - 0.5
                x0, y0 = math.floor(sx), math.floor(sy)
                val = 0.0
                for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                    for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                        if 0 <= yy < 9 and 0 <= xx < 9:
                            val += wy * wx * img[yy, xx]
                ref[r, c] = val
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-5)
    # positive angle = counter-clockwise: a pixel right of centre moves up
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 7] = 1
    turned = ops.affine(dot, ops.rotation_matrices(torch.tensor([90.0]), 9, 9))
    assert turned[0, 0, 1, 4] == pytest.approx(1.0, abs=1e-5)


def test_translate_and_shear_matrices():
    x = images(2, c=1, size=6).float() / 255
    shift = torch.eye(2, 3).repeat(2, 1, 1)
    shift[:, 0, 2] = -2.0  # output x samples input x - 2: content moves right by 2
    out = ops.affine(x, shift)
    ref = torch.zeros_like(x)
    ref[..., 2:] = x[..., :-2]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # shear x by 1 about the top-left corner: output (c, r) samples input x = c + r + 1/2 (pixel
    # index space), halfway between pixels c + r and c + r + 1 of the same row
    shear = torch.eye(2, 3).repeat(2, 1, 1)
    shear[:, 0, 1] = 1.0
    out = ops.affine(x, shear)
    pad = F.pad(x, (0, 14))
    for r in range(6):
        for c in range(6):
            expect = 0.5 * (pad[:, 0, r, c + r] + pad[:, 0, r, c + r + 1])
            torch.testing.assert_close(out[:, 0, r, c], expect, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------- colour


def naive_gray(img):  # img (C, H, W) float64
    if img.shape[0] == 1:
        return img[0]
    return 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]


def naive_blend(a, b, f):
    return np.clip(f * a + (1 - f) * b, 0, 1)


def test_colour_ops_match_formulas():
    x = images(5, size=6).double() / 255
    f = torch.tensor([0.0, 0.5, 1.0, 1.3, 1.9], dtype=torch.float64)
    b, c, s, sh = ops.brightness(x, f), ops.contrast(x, f), ops.saturation(x, f), ops.sharpness(x, f)
    for i in range(5):
        img = x[i].numpy()
        fi = float(f[i])
        np.testing.assert_allclose(b[i].numpy(), naive_blend(img, 0.0, fi), atol=1e-9)
        np.testing.assert_allclose(c[i].numpy(), naive_blend(img, naive_gray(img).mean(), fi), atol=1e-9)
        np.testing.assert_allclose(s[i].numpy(), naive_blend(img, naive_gray(img)[None], fi), atol=1e-9)
        smooth = img.copy()
        for ch in range(3):
            for r in range(1, 5):
                for col in range(1, 5):
                    win = img[ch, r - 1:r + 2, col - 1:col + 2]
                    smooth[ch, r, col] = (win.sum() + 4 * img[ch, r, col]) / 13  # kernel 1s, centre 5
        np.testing.assert_allclose(sh[i].numpy(), naive_blend(img, smooth, fi), atol=1e-9)


def test_saturation_is_a_no_op_for_one_channel():
    x = images(4, c=1).float() / 255
    assert torch.equal(ops.saturation(x, torch.full((4,), 0.2)), x)


def test_color_jitter_in_pipeline_matches_reference():
    """Replays the pipeline's draws (brightness, contrast, saturation factors) on a naive implementation."""
    s, n = 0.4, 6
    x = images(n, size=5)
    aug = Augmenter(AugmentConfig(crop_padding=0, hflip=False, color_jitter=s), MEAN3, STD3, 10, 5)
    out, _ = aug.train_batch(x, torch.zeros(n, dtype=torch.int64), gen(7))
    g = gen(7)
    fb, fc, fs = (1 - s + 2 * s * torch.rand(n, generator=g) for _ in range(3))
    for i in range(n):
        img = x[i].double().numpy() / 255
        img = naive_blend(img, 0.0, float(fb[i]))
        img = naive_blend(img, naive_gray(img).mean(), float(fc[i]))
        img = naive_blend(img, naive_gray(img)[None], float(fs[i]))
        ref = (img - np.array(MEAN3).reshape(3, 1, 1)) / np.array(STD3).reshape(3, 1, 1)
        np.testing.assert_allclose(out[i].numpy(), ref, atol=1e-5)


def pil_each(x_uint8, fn):
    """Apply a PIL ImageOps function image by image, channel by channel (reference for batched ops)."""
    out = torch.empty_like(x_uint8)
    for i in range(x_uint8.shape[0]):
        for c in range(x_uint8.shape[1]):
            out[i, c] = torch.from_numpy(np.array(fn(Image.fromarray(x_uint8[i, c].numpy(), mode="L"))))
    return out


def test_posterize_solarize_equalize_autocontrast_match_pil():
    x = images(6, size=12)
    xf = x.float() / 255
    bits = torch.tensor([8, 7, 6, 5, 4, 2])
    post = ops.posterize(xf, bits)
    for i, b in enumerate(bits.tolist()):
        ref = pil_each(x[i:i + 1], lambda im: ImageOps.posterize(im, b))
        assert torch.equal((post[i:i + 1] * 255).round().to(torch.uint8), ref)
    thr = torch.tensor([1.0, 0.8, 0.5, 0.3, 0.1, 0.0])
    sol = ops.solarize(xf, thr)
    for i, t in enumerate(thr.tolist()):
        ref = pil_each(x[i:i + 1], lambda im: ImageOps.solarize(im, round(t * 255)))
        assert torch.equal((sol[i:i + 1] * 255).round().to(torch.uint8), ref)
    # low-contrast images make autocontrast and equalize do real work
    dull = (x // 4 + 100).to(torch.uint8)
    dull[0, 1] = 77  # a flat channel stays flat
    eq = (ops.equalize(dull.float() / 255) * 255).round().to(torch.uint8)
    assert torch.equal(eq, pil_each(dull, ImageOps.equalize))
    ac = ops.autocontrast(dull.float() / 255) * 255
    diff = ac - pil_each(dull, ImageOps.autocontrast).float()
    assert diff.min() > -1e-3 and diff.max() < 1.001  # PIL truncates its float result


def test_policy_round_applies_each_samples_own_op():
    """One vectorized round == applying each image's chosen op to that image alone."""
    n = len(POLICY_OPS) * 2
    x = images(n, size=10).float() / 255
    choice = torch.arange(n) % len(POLICY_OPS)
    signs = torch.where(torch.arange(n) < len(POLICY_OPS), 1.0, -1.0)
    for policy in ("randaugment", "trivialaugment"):
        aug = Augmenter(AugmentConfig(policy=policy, randaug_magnitude=12), MEAN3, STD3, 10, 10)
        bins = torch.full((n,), 12.0) if policy == "randaugment" else (torch.arange(n) * 7 % 31).float()
        out = aug._apply_policy_round(x, choice, bins, signs, 10, 10)
        for i in range(n):
            op = POLICY_OPS[int(choice[i])]
            v = aug._values(op, bins[i:i + 1], signs[i:i + 1], 10)
            img = x[i:i + 1]
            if op.name == "identity":
                ref = img
            elif op.name in GEOMETRIC:
                m = torch.eye(2, 3).unsqueeze(0)
                if op.name == "rotate":
                    m = ops.rotation_matrices(v, 10, 10)
                elif op.name == "shear_x":
                    m[0, 0, 1] = v
                elif op.name == "shear_y":
                    m[0, 1, 0] = v
                elif op.name == "translate_x":
                    m[0, 0, 2] = -v
                else:
                    m[0, 1, 2] = -v
                ref = ops.affine(img, m)
            else:
                ref = {
                    "brightness": lambda: ops.brightness(img, 1 + v), "color": lambda: ops.saturation(img, 1 + v),
                    "contrast": lambda: ops.contrast(img, 1 + v), "sharpness": lambda: ops.sharpness(img, 1 + v),
                    "posterize": lambda: ops.posterize(img, v.int()), "solarize": lambda: ops.solarize(img, v),
                    "autocontrast": lambda: ops.autocontrast(img), "equalize": lambda: ops.equalize(img),
                }[op.name]()
            torch.testing.assert_close(out[i:i + 1], ref, atol=1e-6, rtol=0, msg=f"{policy} {op.name}")


def test_policy_magnitudes_follow_randaugment_tables():
    aug = Augmenter(AugmentConfig(policy="randaugment", randaug_magnitude=9), MEAN3, STD3, 10, 32)
    b, plus = torch.tensor([9.0]), torch.tensor([1.0])
    val = lambda name: float(aug._values(POLICY_OPS[OP_INDEX[name]], b, plus, 32))  # noqa: E731
    assert val("rotate") == pytest.approx(9.0)  # 30° · 9/30
    assert val("shear_x") == pytest.approx(0.09)
    assert val("brightness") == pytest.approx(0.27)
    assert val("translate_x") == 4.0  # int(150/331 · 32 · 9/30) = int(4.35)
    assert val("posterize") == 7.0  # 8 - round(9 / 7.5)
    assert val("solarize") == pytest.approx(0.7)  # 255 · (1 - 9/30) on the [0, 1] scale
    assert float(aug._values(POLICY_OPS[OP_INDEX["rotate"]], b, -plus, 32)) == pytest.approx(-9.0)


def test_policy_picks_ops_per_sample():
    x = images(256, size=8)
    aug = Augmenter(AugmentConfig(crop_padding=0, hflip=False, policy="randaugment", randaug_ops=1), MEAN3, STD3, 10, 8)
    out, _ = aug.train_batch(x, torch.zeros(256, dtype=torch.int64), gen())
    unchanged = (out - aug.eval_batch(x)).abs().amax(dim=(1, 2, 3)) < 1e-6
    # identity is 1 op of 14: about 18 images of 256 stay the same, never all or none
    assert 3 <= int(unchanged.sum()) <= 45


# ----------------------------------------------------------------------------------------------- mix


def distinct_images(n, size=8):
    """Image i is constant i+1 (so mixing partners can be read off the pixels)."""
    return (torch.arange(n, dtype=torch.uint8) * 9 + 5).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()


def test_mixup_targets_match_pixels():
    n = 16
    x, y = distinct_images(n), torch.arange(n)
    aug = Augmenter(AugmentConfig(**OFF, mixup_alpha=0.4), MEAN3, STD3, n, 8)
    base = aug.eval_batch(x)
    for seed in range(5):
        xt, t = aug.train_batch(x, y, gen(seed))
        assert t.shape == (n, n) and t.dtype == torch.float32
        torch.testing.assert_close(t.sum(1), torch.ones(n))
        lam = None
        for i in range(n):
            others = [j for j in range(n) if j != i and t[i, j] > 0]
            if not others:  # partner is itself
                torch.testing.assert_close(xt[i], base[i], atol=1e-5, rtol=0)
                continue
            (j,) = others
            li = float(t[i, i])
            lam = li if lam is None else lam
            assert li == pytest.approx(lam, abs=1e-6)  # one λ per batch
            torch.testing.assert_close(xt[i], li * base[i] + (1 - li) * base[j], atol=1e-5, rtol=0)


def test_cutmix_lambda_is_the_pixel_share():
    n, size = 12, 16
    x, y = distinct_images(n, size), torch.arange(n)
    aug = Augmenter(AugmentConfig(**OFF, cutmix_alpha=1.0), MEAN3, STD3, n, size)
    base = aug.eval_batch(x)
    for seed in range(6):
        xt, t = aug.train_batch(x, y, gen(seed))
        torch.testing.assert_close(t.sum(1), torch.ones(n))
        for i in range(n):
            own = (xt[i] - base[i]).abs().amax(0) < 1e-5
            assert float(t[i, i]) == pytest.approx(float(own.float().mean()), abs=1e-6) or t[i, i] == 1.0
            if t[i, i] < 1:
                # the pasted region is one rectangle from one partner
                rows, cols = (~own).nonzero(as_tuple=True)
                h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
                assert h * w == int((~own).sum())


def test_cutmix_box_area_formula():
    for lam, uy, ux in [(0.3, 0.5, 0.5), (0.9, 0.0, 0.99), (0.01, 0.2, 0.7), (0.6, 0.95, 0.05)]:
        (top, left, h, w), lam2 = cutmix_box(32, 32, lam, uy, ux)
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 32
        assert lam2 == pytest.approx(1 - h * w / 1024)
        if 0.2 < uy < 0.8 and 0.2 < ux < 0.8:  # unclipped: area ≈ (1-λ)·H·W
            assert abs(h * w / 1024 - (1 - lam)) < 0.1


def test_mix_prob_zero_keeps_hard_labels_and_mixes_sometimes_otherwise():
    x, y = distinct_images(8), torch.arange(8)
    never = Augmenter(AugmentConfig(**OFF, mixup_alpha=1.0, mix_prob=0.0), MEAN3, STD3, 8, 8)
    out, t = never.train_batch(x, y, gen())
    assert torch.equal(t, y) and torch.equal(out, never.eval_batch(x))
    half = Augmenter(AugmentConfig(**OFF, mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.5), MEAN3, STD3, 8, 8)
    soft = sum(half.train_batch(x, y, gen(s))[1].ndim == 2 for s in range(40))
    assert 8 < soft < 32


# --------------------------------------------------------------------------------------------- erase


def test_random_erasing_erases_rectangles_of_about_p_images():
    n = 300
    x = torch.full((n, 3, 16, 16), 200, dtype=torch.uint8)
    aug = Augmenter(AugmentConfig(**OFF, erase_prob=0.5), MEAN3, STD3, 10, 16)
    out, _ = aug.train_batch(x, torch.zeros(n, dtype=torch.int64), gen())
    zero = out.abs().amax(1) == 0  # erased pixels are 0 in every channel
    hit = zero.flatten(1).any(1)
    assert 110 < int(hit.sum()) < 190
    for i in hit.nonzero().squeeze(1).tolist():
        rows, cols = zero[i].nonzero(as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert h * w == int(zero[i].sum())  # a filled rectangle
        assert 1 <= h * w <= 0.5 * 256
