"""Statistics of attention layers, one small function per formula.

| statistic            | formula                                                                 | source |
|----------------------|-------------------------------------------------------------------------|--------|
| entropy              | H_i = −Σ_j p_ij log p_ij (nats), p = |A| row-normalized                   | Shannon 1948 |
| normalized entropy   | H_i / log K, K = keys a query may attend to (1 = uniform, 0 = one key)    | — |
| max weight           | max_j p_ij                                                              | — |
| attention distance   | Σ_j p̃_ij ‖pos_i − pos_j‖ over grid tokens, p̃ renormalized over them (px) | Dosovitskiy et al. 2021, Fig. 7 |
| largest logit        | max_ij S_ij of the pre-normalization scores S (`Attention.score_logits`) | Zhai et al. 2023 |
| spectral norm        | σ_max(W_qʰ W_kʰᵀ) per head h (the bilinear form behind q·k)              | Zhai et al. 2023 |
| rank-collapse residual | ‖X − 1x̄ᵀ‖_F / ‖X‖_F of the tokens X (N × C) after a block, x̄ = mean token | Dong et al. 2021 |
| token cosine         | mean over i ≠ j of cos(x_i, x_j)                                        | (oversmoothing measure) |

Notes. `p` is `vitlab.models.probe.attention_distribution` (signed `cosine` and unnormalized `sigmoid`
rows become distributions of attention mass). Distances leave out prefix tokens (the class token has
no position): a query on the grid spreads its grid-key weights renormalized to sum to 1. Dong et al.
measure the residual in a composite ℓ1,∞ norm; the Frobenius norm used here makes x̄ the exact
minimizer (the mean token), and the ratio is scale-free.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..models.attention import Attention
from ..models.probe import (TokenGrid, attention_distribution, attention_entropy, keys_per_query,
                            normalized_entropy)

__all__ = ["attention_distribution", "attention_entropy", "keys_per_query", "max_weight", "mean_distance_px",
           "mean_pairwise_cosine", "normalized_entropy", "qk_spectral_norms", "rank_collapse_residual",
           "token_distances_px"]


def max_weight(p: Tensor) -> Tensor:
    """The largest weight of each query's distribution p (..., N) -> (...)."""
    return p.amax(dim=-1)


def token_distances_px(grid: TokenGrid, device=None) -> Tensor:
    """(R·C, R·C) Euclidean distances in input pixels between the centres of the grid tokens
    (row-major, `grid.spacing_px` apart; prefix tokens are not included)."""
    rows = torch.arange(grid.rows, dtype=torch.float64, device=device)
    cols = torch.arange(grid.cols, dtype=torch.float64, device=device)
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    pos = torch.stack([r.reshape(-1), c.reshape(-1)], dim=1) * grid.spacing_px
    return torch.cdist(pos, pos).float()


def mean_distance_px(p: Tensor, grid: TokenGrid) -> Tensor:
    """Mean attention distance (Dosovitskiy et al. 2021) of every grid query: Σ_j p̃_ij d_ij with p̃ the
    query's weights over grid keys renormalized to 1, d the pixel distance. p (..., N, N) -> (..., R·C)."""
    k = grid.prefix
    q = p[..., k:, k:]
    q = q / q.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    d = token_distances_px(grid, p.device)
    return (q * d).sum(dim=-1)


def qk_spectral_norms(attn: Attention) -> Tensor:
    """σ_max(W_qʰ W_kʰᵀ) for every head h, shape (H,). With q = x W_q (x a row), q·k = x W_q W_kᵀ yᵀ:
    this is the largest factor by which the layer's scores can grow with its input (Zhai et al. 2023)."""
    dim, h, d = attn.dim, attn.num_heads, attn.head_dim
    w = attn.qkv.weight.detach().float()  # (3·dim, dim): rows = output features
    wq = w[:dim].reshape(h, d, dim).transpose(1, 2)  # (H, dim, d): q_h = x @ wq[h]
    wk = w[dim:2 * dim].reshape(h, d, dim).transpose(1, 2)
    return torch.linalg.matrix_norm(wq @ wk.transpose(1, 2), ord=2)


def rank_collapse_residual(x: Tensor) -> Tensor:
    """‖X − 1x̄ᵀ‖_F / ‖X‖_F of every token sequence X in x (..., N, C) -> (...): 0 when all tokens are
    equal (rank collapse, Dong et al. 2021), up to 1 when their mean is zero."""
    x = x.float()
    res = x - x.mean(dim=-2, keepdim=True)
    return torch.linalg.vector_norm(res, dim=(-2, -1)) / torch.linalg.vector_norm(x, dim=(-2, -1)).clamp_min(1e-12)


def mean_pairwise_cosine(x: Tensor) -> Tensor:
    """Mean cosine similarity over ordered pairs i ≠ j of the tokens of each sequence (..., N, C) -> (...).
    Uses Σ_{i≠j} cos = ‖Σ_i x̂_i‖² − N with unit tokens x̂."""
    n = x.shape[-2]
    u = torch.nn.functional.normalize(x.float(), dim=-1)
    total = u.sum(dim=-2).pow(2).sum(dim=-1)
    return (total - n) / (n * (n - 1)) if n > 1 else total * float("nan")
