"""Looking inside a model's attention: which layers attend over which token grid, a context manager
that records every layer's weights in forward order, and the two formulas the trainer also needs
(the attention distribution of a query and its entropy).

    layers = attention_layers(model)                 # forward order, with each layer's token grid
    with record_attention(model, logits=True) as rec:
        model(x)
    rec.weights[i], rec.logits[i], rec.tokens[i]     # (B', H, N, N), (B', H, N, N), (B', N, C)

This module sits with the models (it depends only on them) so that both the trainer (entropy per
epoch) and `vitlab.analysis` (every statistic) can use it without an import cycle.

For MobileViT, B' = B·p²: each image gives p² sequences (one per pixel position inside the p×p
patches), each over the (H/p)×(W/p) grid of patches of that stage's feature map.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from .attention import Attention
from .mobilevit import MobileViT, MobileViTBlock
from .vit import ViT

ROW_SUM_FLOOR = 1e-12
"""A row of |weights| summing to less than this is treated as empty (all-zero `linear_scale` row)."""


@dataclass(frozen=True)
class TokenGrid:
    """Where a layer's tokens sit in the input image.

    `prefix` tokens (the class token) come first and have no position; the next rows × cols tokens
    are a row-major grid whose neighbours are `spacing_px` input pixels apart.
    """

    rows: int
    cols: int
    spacing_px: float
    prefix: int = 0

    @property
    def tokens(self) -> int:
        return self.prefix + self.rows * self.cols


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer: its module path, modules, token grid and the sequence group it belongs to
    (layers of one group act on the same tokens one after another: rollout is taken within a group)."""

    name: str
    attention: Attention
    block: nn.Module  # the transformer block holding it: its output is the token sequence after the layer
    grid: TokenGrid
    group: str


def attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """Every attention layer of a vitlab ViT or MobileViT in forward order."""
    if isinstance(model, ViT):
        patch = model.patch_embed.kernel_size[0]
        grid = TokenGrid(model.grid, model.grid, float(patch), 1 if model.cls_token is not None else 0)
        return [AttentionLayer(f"blocks.{i}.attn", b.attn, b, grid, "blocks") for i, b in enumerate(model.blocks)]
    if isinstance(model, MobileViT):
        out = []
        for s, stage in enumerate(model.stages):
            for j, block in enumerate(stage):
                if not isinstance(block, MobileViTBlock):
                    continue
                size, p = model.feature_sizes[s], block.patch_size
                grid = TokenGrid(size // p, size // p, p * model.input_size / size)
                for t, layer in enumerate(block.transformer):
                    out.append(AttentionLayer(f"stages.{s}.{j}.transformer.{t}.attn", layer.attn, layer, grid,
                                              f"stage{s + 1}"))
        return out
    raise TypeError(f"not a vitlab ViT or MobileViT: {type(model).__name__}")


@dataclass
class Recording:
    """What one or more forward passes under `record_attention` saw, per layer in forward order."""

    layers: list[AttentionLayer]
    weights: list[Tensor | None] = field(default_factory=list)
    logits: list[Tensor | None] = field(default_factory=list)
    tokens: list[Tensor | None] = field(default_factory=list)


@contextlib.contextmanager
def record_attention(model: nn.Module, *, logits: bool = False, tokens: bool = False) -> Iterator[Recording]:
    """Record, during the forward passes inside the block, every attention layer's weights
    (B', H, N, N) — and with `logits` its pre-normalization scores (`Attention.score_logits`), with
    `tokens` the (B', N, C) output of its transformer block. A later pass overwrites an earlier one.
    The model is left exactly as it was (the hooks are removed even on error)."""
    layers = attention_layers(model)
    rec = Recording(layers, [None] * len(layers), [None] * len(layers), [None] * len(layers))
    handles = []

    def attention_probe(i: int):
        def probe(module: Attention, q: Tensor, k: Tensor, weights: Tensor) -> None:
            rec.weights[i] = weights.detach()
            if logits:
                with torch.no_grad():
                    rec.logits[i] = module.score_logits(q.detach(), k.detach())
        return probe

    def token_hook(i: int):
        def hook(module, args, output):
            rec.tokens[i] = output.detach()
        return hook

    try:
        for i, layer in enumerate(layers):
            layer.attention.probe = attention_probe(i)
            if tokens:
                handles.append(layer.block.register_forward_hook(token_hook(i)))
        yield rec
    finally:
        for layer in layers:
            layer.attention.probe = None
        for h in handles:
            h.remove()


def keys_per_query(layer: AttentionLayer) -> int:
    """How many keys a query can attend to: N, or N − 1 under `lsa` (its diagonal is masked)."""
    n = layer.grid.tokens
    return n - 1 if layer.attention.attn_norm == "lsa" and n > 1 else n


def attention_distribution(weights: Tensor) -> Tensor:
    """Each query's attention as a probability distribution over keys: p_ij = |a_ij| / Σ_j |a_ij|.

    Softmax-family rows (and `linear`, `linear_scale`) already sum to 1 and are unchanged; the signed
    rows of `cosine` and the unnormalized rows of `sigmoid` become distributions of attention mass.
    An all-zero row stays zero. Computed in float32.
    """
    a = weights.float().abs()
    total = a.sum(dim=-1, keepdim=True)
    return a / total.clamp_min(ROW_SUM_FLOOR)


def attention_entropy(p: Tensor) -> Tensor:
    """Shannon entropy in nats of each row of a distribution p (..., N): H = −Σ_j p_j log p_j
    (Shannon 1948; 0 log 0 = 0). Uniform rows give log N, one-hot rows 0."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


def normalized_entropy(h: Tensor | float, n_keys: int) -> Tensor | float:
    """Entropy divided by its maximum log(n_keys): 1.0 = uniform attention, 0.0 = one key.
    Undefined (nan) with a single key."""
    return h / math.log(n_keys) if n_keys > 1 else h * math.nan


ENTROPY_CHUNK = 32
"""Images per forward pass of `mean_entropy_per_layer` (bounds the memory of one layer's weights)."""


@torch.no_grad()
def mean_entropy_per_layer(model: nn.Module, x: Tensor) -> list[float | None]:
    """Mean normalized attention entropy of every layer (forward order) on the batch x, in eval mode;
    the model's training mode is restored. None for a layer with a single key per query.

    The trainer records it each epoch (see `entropy_row`). Each layer's weights are reduced as soon
    as they are computed, ENTROPY_CHUNK images at a time.
    """
    layers = attention_layers(model)
    sums = [0.0] * len(layers)
    counts = [0] * len(layers)

    def probe(i: int):
        def fn(module, q, k, w):
            h = attention_entropy(attention_distribution(w))
            sums[i] += float(h.sum())
            counts[i] += h.numel()
        return fn

    was_training = model.training
    model.eval()
    try:
        for i, layer in enumerate(layers):
            layer.attention.probe = probe(i)
        for start in range(0, len(x), ENTROPY_CHUNK):
            model(x[start:start + ENTROPY_CHUNK])
    finally:
        for layer in layers:
            layer.attention.probe = None
        model.train(was_training)
    out: list[float | None] = []
    for layer, total, n in zip(layers, sums, counts):
        h = normalized_entropy(total / n, keys_per_query(layer)) if n else math.nan
        out.append(h if math.isfinite(h) else None)
    return out


ENTROPY_KEY = "val_attn_entropy_norm_l"
"""Prefix of the per-layer metrics.jsonl fields (`val_attn_entropy_norm_l0`, ...; `..._mean` = their mean)."""


def entropy_row(per_layer: list[float | None]) -> dict[str, float | None]:
    """The metrics.jsonl fields of one epoch's per-layer entropies: one scalar per layer (so trackers and
    tables see them as ordinary metrics) and their mean."""
    row: dict[str, float | None] = {f"{ENTROPY_KEY}{i}": h for i, h in enumerate(per_layer)}
    vals = [h for h in per_layer if h is not None]
    row["val_attn_entropy_norm_mean"] = sum(vals) / len(vals) if vals else None
    return row


__all__ = ["ENTROPY_KEY", "entropy_row", "AttentionLayer", "Recording", "TokenGrid", "attention_distribution", "attention_entropy",
           "attention_layers", "keys_per_query", "mean_entropy_per_layer", "normalized_entropy",
           "record_attention"]
