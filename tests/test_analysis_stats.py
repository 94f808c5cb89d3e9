"""Attention statistics, rollout and the probe API against naive float64 implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitlab.analysis import attention_stats as st
from vitlab.analysis.rollout import head_mean, mix_identity, rollout
from vitlab.config import ATTN_NORMS
from vitlab.models import create_model
from vitlab.models.attention import Attention
from vitlab.models.probe import (TokenGrid, attention_layers, mean_entropy_per_layer, record_attention)


def random_rows(*shape, seed=0, zeros=False):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(*shape, generator=g, dtype=torch.float64) ** 3
    if zeros:
        p[..., ::3] = 0
    return p / p.sum(dim=-1, keepdim=True)


# ------------------------------------------------------------------------------------- entropy family


def test_entropy_matches_naive_loop():
    p = random_rows(2, 3, 5, 7, zeros=True)
    got = st.attention_entropy(p)
    flat = p.reshape(-1, 7).numpy()
    naive = [-sum(v * math.log(v) for v in row if v > 0) for row in flat]
    np.testing.assert_allclose(got.reshape(-1).numpy(), naive, rtol=1e-12)


@pytest.mark.parametrize("n", [2, 7, 64, 65])
def test_uniform_attention_has_normalized_entropy_one(n):
    attn = Attention(16, 2, "softmax")
    q = torch.zeros(1, 2, n, 8)  # all scores equal
    _, w = attn._softmax(q, q, q, drop=0.0, training=False, need_weights=True)
    p = st.attention_distribution(w).double()
    h = st.normalized_entropy(st.attention_entropy(p), n)
    assert torch.allclose(h, torch.ones_like(h), atol=1e-6, rtol=0)
    assert float((h - 1).abs().max()) < 1e-6


def test_one_hot_attention_has_entropy_zero_and_max_weight_one():
    p = torch.eye(5, dtype=torch.float64).expand(2, 3, 5, 5)
    assert float(st.attention_entropy(p).abs().max()) == 0.0
    assert float(st.normalized_entropy(st.attention_entropy(p), 5).abs().max()) == 0.0
    assert torch.equal(st.max_weight(p), torch.ones(2, 3, 5, dtype=torch.float64))


def test_distribution_of_signed_and_unnormalized_rows():
    w = torch.tensor([[[[0.5, -0.25, 0.25, 0.0]]]])  # a cosine-style signed row
    p = st.attention_distribution(w)
    np.testing.assert_allclose(p[0, 0, 0].numpy(), [0.5, 0.25, 0.25, 0.0])
    w = torch.tensor([[[[0.1, 0.1, 0.2, 0.0]]]])  # a sigmoid row summing to 0.4
    np.testing.assert_allclose(st.attention_distribution(w)[0, 0, 0].numpy(), [0.25, 0.25, 0.5, 0.0], rtol=1e-6)
    assert float(st.attention_distribution(torch.zeros(1, 1, 1, 3)).abs().sum()) == 0.0  # empty row stays empty


def test_keys_per_query_masks_the_lsa_diagonal():
    for norm, keys in (("softmax", 17), ("lsa", 16)):
        m = create_model("vit_nano", num_classes=3, attn_norm=norm, dim=16, depth=1, num_heads=2, patch_size=8)
        assert st.keys_per_query(attention_layers(m)[0]) == keys


# ------------------------------------------------------------------------------------- distance


def test_token_distances_and_mean_distance_match_naive():
    grid = TokenGrid(3, 4, 2.5, prefix=1)
    d = st.token_distances_px(grid).double().numpy()
    pos = [(r * 2.5, c * 2.5) for r in range(3) for c in range(4)]
    naive_d = np.array([[math.dist(a, b) for b in pos] for a in pos])
    np.testing.assert_allclose(d, naive_d, rtol=1e-6)
    p = random_rows(2, 3, 13, 13, seed=1)
    got = st.mean_distance_px(p, grid).numpy()
    for b in range(2):
        for h in range(3):
            for i in range(12):
                row = p[b, h, 1 + i, 1:].numpy()
                row = row / row.sum()
                assert got[b, h, i] == pytest.approx(sum(row[j] * naive_d[i, j] for j in range(12)), rel=1e-6)


def test_uniform_attention_distance_is_mean_pairwise_distance():
    grid = TokenGrid(4, 4, 4.0)
    p = torch.full((1, 1, 16, 16), 1 / 16, dtype=torch.float64)
    d = st.token_distances_px(grid).double()
    assert torch.allclose(st.mean_distance_px(p, grid)[0, 0], d.mean(dim=1))


# ------------------------------------------------------------------------------------- tokens


def test_rank_collapse_residual_matches_naive():
    x = torch.randn(3, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = st.rank_collapse_residual(x).double().numpy()
    for b in range(3):
        m = x[b].numpy()
        naive = np.linalg.norm(m - np.ones((6, 1)) @ m.mean(axis=0, keepdims=True)) / np.linalg.norm(m)
        assert got[b] == pytest.approx(naive, rel=1e-5)
    same = torch.ones(1, 4, 3) * torch.tensor([1.0, 2.0, 3.0])
    assert float(st.rank_collapse_residual(same)) == pytest.approx(0.0, abs=1e-7)


def test_mean_pairwise_cosine_matches_naive():
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    got = st.mean_pairwise_cosine(x).numpy()
    for b in range(2):
        m = x[b].double().numpy()
        cos = [m[i] @ m[j] / np.linalg.norm(m[i]) / np.linalg.norm(m[j]) for i in range(5) for j in range(5) if i != j]
        assert got[b] == pytest.approx(np.mean(cos), abs=1e-6)


# ------------------------------------------------------------------------------------- spectral norm


def test_qk_spectral_norm_matches_naive_and_is_the_score_bilinear_form():
    torch.manual_seed(4)
    attn = Attention(12, 3, "softmax")
    got = st.qk_spectral_norms(attn).double().numpy()
    w = attn.qkv.weight.detach().double().numpy()
    x, y = np.random.default_rng(0).standard_normal((2, 12))
    q_all, k_all = w[:12] @ x, w[12:24] @ y
    for h in range(3):
        wq, wk = w[4 * h:4 * h + 4], w[12 + 4 * h:12 + 4 * h + 4]  # (d, dim): q_h = wq @ x
        m = wq.T @ wk
        assert got[h] == pytest.approx(np.linalg.svd(m, compute_uv=False)[0], rel=1e-5)
        assert q_all[4 * h:4 * h + 4] @ k_all[4 * h:4 * h + 4] == pytest.approx(x @ m @ y, rel=1e-9)


# ------------------------------------------------------------------------------------- rollout


def test_rollout_matches_naive_product():
    layers = [random_rows(2, 6, 6, seed=s) for s in range(3)]
    got = rollout(layers)
    for b in range(2):
        r = np.eye(6)
        for l_, a in enumerate(layers):
            r = (0.5 * a[b].numpy() + 0.5 * np.eye(6)) @ r
            np.testing.assert_allclose(got[l_][b].numpy(), r, rtol=1e-10)
        np.testing.assert_allclose(got[-1][b].sum(dim=-1).numpy(), np.ones(6), rtol=1e-10)  # rows stay distributions


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_rollout_of_uniform_attention_is_the_identity_mixed_average(depth):
    n = 9
    u = torch.full((1, n, n), 1 / n, dtype=torch.float64)
    got = rollout([u] * depth)[-1][0]
    expected = (1 - 0.5 ** depth) * u[0] + 0.5 ** depth * torch.eye(n, dtype=torch.float64)
    assert torch.allclose(got, expected, atol=1e-15)
    assert torch.allclose(mix_identity(u)[0], 0.5 * u[0] + 0.5 * torch.eye(n, dtype=torch.float64))


def test_head_mean_averages_the_row_distributions():
    w = random_rows(2, 4, 5, 5)
    assert torch.allclose(head_mean(w), w.float().mean(dim=1).to(head_mean(w).dtype))


# ------------------------------------------------------------------------------------- probe and logits


@pytest.mark.parametrize("norm", ATTN_NORMS)
def test_score_logits_reproduce_the_weights(norm):
    """The logits each variant reports, normalized by that variant's rule, are its attention weights."""
    torch.manual_seed(5)
    attn = Attention(16, 2, norm).eval()
    x = torch.randn(2, 7, 16)
    _, w = attn(x, return_weights=True)
    qkv = attn.qkv(x).reshape(2, 7, 3, 2, 8).permute(2, 0, 3, 1, 4)
    s = attn.score_logits(qkv[0], qkv[1]).double()
    n = 7
    if norm in ("softmax", "zscore", "zscore_qkv", "qk_layernorm", "scaled_cosine", "lsa"):
        expected = s.softmax(dim=-1)
    elif norm == "sigmoid":
        expected = torch.sigmoid(s)
    elif norm == "cosine":
        expected = s / n
    elif norm == "linear":
        expected = s / s.sum(dim=-1, keepdim=True)
    else:  # linear_scale
        shifted = s - s.amin(dim=-1, keepdim=True)
        expected = shifted / shifted.sum(dim=-1, keepdim=True)
    assert torch.allclose(w.double(), expected, atol=1e-5), norm
    if norm == "lsa":
        assert torch.isinf(s.diagonal(dim1=-2, dim2=-1)).all()


@pytest.mark.parametrize("name,kw", [("vit_nano", dict(dim=16, depth=2, num_heads=2)),
                                     ("vit_nano", dict(dim=16, depth=2, num_heads=2, pool="mean")),
                                     ("mobilevit_xxs", dict(width_mult=0.25, num_heads=2))])
def test_record_attention_sees_every_layer_in_forward_order(name, kw):
    torch.manual_seed(6)
    m = create_model(name, num_classes=5, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = m.attention_weights(x)
    with torch.no_grad(), record_attention(m, logits=True, tokens=True) as rec:
        out = m(x)
    assert len(rec.weights) == len(expected) == len(rec.layers)
    for w, e, layer, tok in zip(rec.weights, expected, rec.layers, rec.tokens):
        assert torch.allclose(w, e, atol=1e-6)
        assert w.shape[-1] == layer.grid.tokens and tok.shape[1] == layer.grid.tokens
    assert all(layer.attention.probe is None for layer in rec.layers)  # hooks removed
    with torch.no_grad():
        assert torch.allclose(m(x), out)  # and the model is unchanged
    if name == "mobilevit_xxs":
        assert [layer.grid.rows for layer in rec.layers] == [4, 4, 2, 2, 2, 2, 2, 2, 2]
        assert rec.layers[0].grid.spacing_px == 8.0 and rec.layers[2].grid.spacing_px == 16.0
        assert [layer.group for layer in rec.layers][:3] == ["stage3", "stage3", "stage4"]
    else:
        assert rec.layers[0].grid.prefix == (0 if kw.get("pool") == "mean" else 1)
        assert rec.layers[0].grid.spacing_px == 4.0


def test_mean_entropy_per_layer_is_in_range_and_restores_training_mode():
    torch.manual_seed(7)
    m = create_model("vit_nano", num_classes=5, dim=16, depth=3, num_heads=2).train()
    x = torch.randn(40, 3, 32, 32)
    h = mean_entropy_per_layer(m, x)
    assert m.training and len(h) == 3 and all(0.0 < v <= 1.0 for v in h)
    with torch.no_grad(), record_attention(m.eval()) as rec:
        m(x)
    naive = [float(st.attention_entropy(st.attention_distribution(w)).mean()) / math.log(65) for w in rec.weights]
    np.testing.assert_allclose(h, naive, rtol=1e-5)
