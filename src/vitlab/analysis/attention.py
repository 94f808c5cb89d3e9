"""The `attention` section: per-layer and per-head statistics on a fixed sample of test images, and the
attention / rollout maps of the first few of them.

Every statistic is a mean over images, sequences (MobileViT: the p² per image), queries and — for the
layer entry — heads, except `max_logit` (a maximum) and `qk_spectral_norm` (a property of the
weights). Distances are over grid queries only (not the class token).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..models.probe import AttentionLayer, attention_layers, record_attention
from . import attention_stats as st
from .rollout import head_mean, rollout

MAPS_FILE = "attention_maps.npz"
"""Arrays of the drawn maps, beside analysis.json: images (M, C, H, W) uint8, and per layer i
`query_i` and `rollout_i` (M, rows, cols) float32."""


def sample_indices(n: int, k: int, seed: int) -> Tensor:
    """k distinct test indices drawn with a generator seeded by `seed` (the same for every run)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:min(k, n)]


class _LayerAccumulator:
    """Sums over images of one layer's per-head statistics."""

    def __init__(self, layer: AttentionLayer):
        self.layer = layer
        h = layer.attention.num_heads
        self.sums = {k: torch.zeros(h, dtype=torch.float64) for k in ("entropy", "max_weight", "row_mass")}
        self.dist = torch.zeros(h, dtype=torch.float64)
        self.max_logit = torch.full((h,), -math.inf, dtype=torch.float64)
        self.queries = 0  # queries per head seen
        self.grid_queries = 0
        self.residual = 0.0
        self.cosine = 0.0
        self.sequences = 0

    def add(self, w: Tensor, logits: Tensor, tokens: Tensor) -> None:
        p = st.attention_distribution(w)  # (B', H, N, N)
        self.sums["entropy"] += st.attention_entropy(p).sum(dim=(0, 2)).double().cpu()
        self.sums["max_weight"] += st.max_weight(p).sum(dim=(0, 2)).double().cpu()
        self.sums["row_mass"] += w.float().abs().sum(dim=-1).sum(dim=(0, 2)).double().cpu()
        self.dist += st.mean_distance_px(p, self.layer.grid).sum(dim=(0, 2)).double().cpu()
        finite = logits.float().masked_fill(~torch.isfinite(logits.float()), -math.inf)
        self.max_logit = torch.maximum(self.max_logit, finite.amax(dim=(0, 2, 3)).double().cpu())
        self.queries += w.shape[0] * w.shape[2]
        self.grid_queries += w.shape[0] * (w.shape[2] - self.layer.grid.prefix)
        self.residual += st.rank_collapse_residual(tokens).sum().item()
        self.cosine += st.mean_pairwise_cosine(tokens).sum().item()
        self.sequences += tokens.shape[0]

    def result(self) -> dict:
        layer = self.layer
        keys = st.keys_per_query(layer)
        ent = self.sums["entropy"] / self.queries
        heads_ent_norm = [_f(st.normalized_entropy(float(e), keys)) for e in ent]
        spectral = st.qk_spectral_norms(layer.attention).double().cpu()
        per_head = {
            "entropy": ent, "max_weight": self.sums["max_weight"] / self.queries,
            "row_mass": self.sums["row_mass"] / self.queries, "distance_px": self.dist / max(self.grid_queries, 1),
            "max_logit": self.max_logit, "qk_spectral_norm": spectral,
        }
        heads = [dict({k: _f(v[h]) for k, v in per_head.items()}, head=h, entropy_norm=heads_ent_norm[h])
                 for h in range(layer.attention.num_heads)]
        mean_ent = float(ent.mean())
        return {
            "name": layer.name,
            "group": layer.group,
            "attn_norm": layer.attention.attn_norm,
            "tokens": layer.grid.tokens,
            "keys": keys,
            "grid": [layer.grid.rows, layer.grid.cols],
            "spacing_px": layer.grid.spacing_px,
            "num_heads": layer.attention.num_heads,
            "entropy": _f(mean_ent),
            "entropy_norm": _f(st.normalized_entropy(mean_ent, keys)),
            "max_weight": _f(per_head["max_weight"].mean()),
            "row_mass": _f(per_head["row_mass"].mean()),
            "distance_px": _f(per_head["distance_px"].mean()),
            "distance_px_uniform": _f(st.token_distances_px(layer.grid).double().mean()),
            "max_logit": _f(self.max_logit.max()),
            "qk_spectral_norm": _f(spectral.max()),
            "rank_residual": _f(self.residual / max(self.sequences, 1)),
            "token_cosine": _f(self.cosine / max(self.sequences, 1)),
            "heads": heads,
        }


def _f(v) -> float | None:
    """A JSON-safe float (None for nan/inf)."""
    v = float(v)
    return v if math.isfinite(v) else None


def query_map(a: Tensor, layer: AttentionLayer, images: int) -> Tensor:
    """(B', N, N) head-mean (or rolled-out) attention -> (images, rows, cols) map over the grid keys:
    the class token's row when there is one, else the mean over the grid queries; MobileViT's p²
    sequences per image are averaged."""
    k = layer.grid.prefix
    rows = a[:, 0, k:] if k else a[:, k:, k:].mean(dim=1)
    rows = rows.reshape(images, -1, rows.shape[-1]).mean(dim=1)
    return rows.reshape(images, layer.grid.rows, layer.grid.cols)


@torch.no_grad()
def compute_attention(run, opts) -> tuple[dict, dict[str, np.ndarray]]:
    """The attention section and the arrays of its maps (see MAPS_FILE)."""
    model = run.model
    layers = attention_layers(model)
    test_x = run.data.test_x
    idx = sample_indices(len(test_x), opts.samples, opts.seed)
    acc = [_LayerAccumulator(layer) for layer in layers]
    for i in range(0, len(idx), opts.attention_batch):
        x = run.inputs(test_x[idx[i:i + opts.attention_batch]])
        with record_attention(model, logits=True, tokens=True) as rec, run.autocast():  # the run's precision
            model(x)
        for a, w, lg, tk in zip(acc, rec.weights, rec.logits, rec.tokens):
            a.add(w, lg, tk)
    m = min(opts.map_images, len(idx))
    map_idx = idx[:m]
    with record_attention(model) as rec, run.autocast():
        model(run.inputs(test_x[map_idx]))
    arrays: dict[str, np.ndarray] = {"images": test_x[map_idx].cpu().numpy()}
    groups: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(layer.group, []).append(i)
    for group, members in groups.items():
        means = [head_mean(rec.weights[i].float()) for i in members]  # rollout multiplies them: float32
        for i, a, r in zip(members, means, rollout(means)):
            arrays[f"query_{i}"] = query_map(a, layers[i], m).float().cpu().numpy()
            arrays[f"rollout_{i}"] = query_map(r, layers[i], m).float().cpu().numpy()
    entries = [a.result() for a in acc]
    pooled = "class token" if layers and layers[0].grid.prefix else "mean over queries"
    section = {
        "samples": len(idx),
        "seed": opts.seed,
        "layers": entries,
        "maps": {"file": MAPS_FILE, "images": map_idx.tolist(), "query": pooled,
                 "rollout": "within each token sequence (MobileViT: within each stage)"},
    }
    return section, arrays
