"""Multi-head self-attention with interchangeable score normalizations (`model.attn_norm`).

Every model of vitlab builds its attention from the one `Attention` class below, so a knob such as
`num_heads` or `attn_norm` means the same thing everywhere: the head width is always
`dim // num_heads`, and a width that the head count does not divide is a `ConfigError`.

Each normalization is a small function from per-head queries, keys and values (B, H, N, d) to the
attention output (B, H, N, d) and, when asked, the (B, H, N, N) matrix that multiplies V. Notation:
N tokens, d = head width, rows of the matrix are queries.

| attn_norm       | weights A (out = A V)                                             | source                      |
|-----------------|-------------------------------------------------------------------|-----------------------------|
| `softmax`       | softmax(Q Kᵀ / √d)                                                | Vaswani et al. 2017         |
| `zscore`        | softmax(Q′ K′ᵀ / d), Q′, K′ standardized over the head dim         | (study variant)             |
| `cosine`        | Q̂ K̂ᵀ / N, Q̂, K̂ L2-normalized, no softmax                          | (study variant)             |
| `linear`        | φ(Q) φ(K)ᵀ / (φ(Q) Σⱼ φ(Kⱼ)), φ = elu + 1, computed in O(N)       | Katharopoulos et al. 2020   |
| `linear_scale`  | (S − minⱼ S) / Σⱼ (S − minⱼ S), S = Q Kᵀ / √d, no exponential     | (study variant)             |
| `qk_layernorm`  | softmax(LN(Q) LN(K)ᵀ / √d)                                        | Dehghani et al. 2023 (ViT-22B) |
| `scaled_cosine` | softmax(cos(Q, K) / τ), learnable τ per head, τ ≥ 0.01             | Liu et al. 2022 (Swin V2)   |
| `sigmoid`       | σ(Q Kᵀ / √d − log N), no row normalization                        | Ramapuram et al. 2024       |
| `lsa`           | softmax(Q Kᵀ / τ) with the diagonal masked, learnable τ (init √d)  | Lee et al. 2021 (LSA)       |
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ATTN_NORMS
from ..errors import ConfigError

# ---------------------------------------------------------------------------------------------
# named constants (not knobs: they guard numerics, they do not shape the model)

ZSCORE_EPS = 1e-5
"""Added to the variance when standardizing Q, K (and V): the LayerNorm default."""
LINEAR_EPS = 1e-6
"""Added to the normalizer φ(q)·Σφ(k) of linear attention (always > 0, so this only guards underflow)."""
LINEAR_SCALE_EPS = 1e-6
"""Added to the row sum of shifted scores in `linear_scale`; a row whose scores are all equal gets all-zero weights."""
COSINE_EPS = 1e-6
"""Lower bound on ‖q‖, ‖k‖ before dividing (F.normalize's eps)."""
SCALED_COSINE_TAU_INIT = 0.1
"""Initial temperature of `scaled_cosine` (Swin V2 initializes the logit scale to log 10, i.e. τ = 0.1)."""
SCALED_COSINE_TAU_MIN = 0.01
"""Swin V2 keeps τ above 0.01 so that the logits stay below 100."""

FP32_NORMS = frozenset({"cosine", "linear", "linear_scale", "sigmoid"})
"""Variants whose normalizer is a plain sum over tokens (no max-subtracting softmax): their sums can
overflow float16, so under autocast they compute scores and sums in float32."""


FUSED_SLOW_DTYPES = {"cpu": frozenset({torch.bfloat16})}
"""Device types and dtypes where softmax attention is computed as matmul → softmax → matmul instead of
the fused `scaled_dot_product_attention`: on a CPU the fused flash-attention backward in bf16 is ≈ 7×
slower than in float32 (34.7 vs 5.2 ms a call at vit_study_b's shapes, torch 2.13), while the three
explicit ops run on the bf16 GEMM units; at 64 tokens the N×N matrix is small. See
benchmarks/RESULTS.md ("bf16 on the CPU") for the formulations compared."""


def check_heads(dim: int, num_heads: int, field: str = "model.num_heads") -> int:
    """The head width dim // num_heads; a ConfigError when num_heads does not divide dim."""
    if num_heads <= 0:
        raise ConfigError(field, f"must be > 0, got {num_heads}")
    if dim % num_heads:
        raise ConfigError(field, f"{num_heads} heads do not divide the transformer width {dim}")
    return dim // num_heads


# ---------------------------------------------------------------------------------------------
# score functions: (q, k, v) of shape (B, H, N, d) -> (out, weights or None)


def _apply(weights: Tensor, v: Tensor, drop: float, training: bool) -> Tensor:
    return F.dropout(weights, drop, training) @ v


def softmax_attention(q, k, v, *, scale: float, drop: float, training: bool, need_weights: bool, mask=None):
    """softmax(s·Q Kᵀ) V, through the fused `scaled_dot_product_attention` kernel unless weights are
    needed or the inputs' device and dtype are in FUSED_SLOW_DTYPES.

    `mask` is a boolean (N, N) matrix, True where a query may attend to a key.
    """
    if not need_weights and q.dtype not in FUSED_SLOW_DTYPES.get(q.device.type, ()):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop if training else 0.0, scale=scale)
        return out, None
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return _apply(weights, v, drop, training), weights


def standardize(x: Tensor) -> Tensor:
    """Zero mean, unit (population) variance along the last dim: LayerNorm without affine parameters."""
    return F.layer_norm(x, x.shape[-1:], eps=ZSCORE_EPS)


def zscore_attention(q, k, v, *, zscore_v: bool, **kw):
    """softmax(Q′K′ᵀ / d) V with Q′, K′ standardized per token over the head dim.

    Since ‖q′‖ = ‖k′‖ = √d, the score q′·k′/d is the Pearson correlation of q and k, in [-1, 1].
    `zscore_v` also standardizes V.
    """
    d = q.shape[-1]
    if zscore_v:
        v = standardize(v)
    return softmax_attention(standardize(q), standardize(k), v, scale=1.0 / d, **kw)


def cosine_attention(q, k, v, *, drop: float, training: bool, need_weights: bool):
    """(Q̂ K̂ᵀ / N) V with L2-normalized Q̂, K̂ and no softmax.

    Scaling: each cosine lies in [-1, 1], so dividing by the number of tokens N bounds every row's
    absolute sum by 1 and the output by max|v|, whatever N is. Without it the output would grow
    linearly with N (MobileViT stages see 4 to 256 tokens), the residual stream would blow up in the
    long-sequence stages and training diverges; with it a layer starts near the identity scale of
    mean-pooling, like softmax attention does. Without dropout on the weights the product is taken
    as Q̂ (K̂ᵀ V) when that is cheaper (N > d): O(N d²) instead of O(N² d).
    """
    n, d = q.shape[-2], q.shape[-1]
    q = F.normalize(q, dim=-1, eps=COSINE_EPS)
    k = F.normalize(k, dim=-1, eps=COSINE_EPS)
    if not need_weights and not (training and drop > 0) and n > d:
        return q @ (k.transpose(-2, -1) @ v) / n, None
    weights = (q @ k.transpose(-2, -1)) / n
    return _apply(weights, v, drop, training), weights if need_weights else None


def elu_feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 > 0, the feature map of Katharopoulos et al. 2020."""
    return F.elu(x) + 1.0


def linear_attention(q, k, v, *, drop: float, training: bool, need_weights: bool):
    """Linear attention: out_i = φ(q_i) (Σⱼ φ(k_j) v_jᵀ) / (φ(q_i) · Σⱼ φ(k_j)), O(N d²).

    The equivalent N×N matrix A_ij = φ(q_i)·φ(k_j) / Σ_l φ(q_i)·φ(k_l) is only formed when weights
    are requested or dropout is applied to them.
    """
    q, k = elu_feature_map(q), elu_feature_map(k)
    if need_weights or (training and drop > 0):
        sim = q @ k.transpose(-2, -1)
        weights = sim / (sim.sum(dim=-1, keepdim=True) + LINEAR_EPS)
        return _apply(weights, v, drop, training), weights if need_weights else None
    kv = k.transpose(-2, -1) @ v  # (B, H, d, d)
    norm = q @ k.sum(dim=-2).unsqueeze(-1)  # (B, H, N, 1)
    return (q @ kv) / (norm + LINEAR_EPS), None


def linear_scale_attention(q, k, v, *, drop: float, training: bool, need_weights: bool):
    """Scores S = Q Kᵀ/√d, shifted by their row minimum and divided by their row sum; no exponential."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    shifted = scores - scores.amin(dim=-1, keepdim=True)
    weights = shifted / (shifted.sum(dim=-1, keepdim=True) + LINEAR_SCALE_EPS)
    return _apply(weights, v, drop, training), weights if need_weights else None


def sigmoid_attention(q, k, v, *, drop: float, training: bool, need_weights: bool):
    """σ(Q Kᵀ/√d − log N) V: each weight is an independent sigmoid, the bias −log N keeps the row sum near 1 at init."""
    n = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]) - math.log(n)
    weights = torch.sigmoid(scores)
    return _apply(weights, v, drop, training), weights if need_weights else None


# ---------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention on (B, N, dim) tokens with the score normalization `attn_norm`.

    Parameters: one fused qkv projection and an output projection; `qk_layernorm` adds a LayerNorm
    (over the head width, shared by the heads) for q and for k, `scaled_cosine` a temperature per
    head, `lsa` one temperature per layer (stored as its log, like the LSA reference code).
    """

    def __init__(self, dim: int, num_heads: int, attn_norm: str = "softmax", qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, zscore_v: bool = False):
        super().__init__()
        if attn_norm not in ATTN_NORMS:
            raise ConfigError("model.attn_norm",
                              f"unknown attention normalization {attn_norm!r}; one of {', '.join(ATTN_NORMS)}")
        if zscore_v and attn_norm != "zscore":
            raise ConfigError("model.zscore_v", f"only applies to attn_norm=zscore, not {attn_norm}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.attn_norm = attn_norm
        self.zscore_v = zscore_v
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if attn_norm == "qk_layernorm":
            self.q_norm = nn.LayerNorm(self.head_dim)
            self.k_norm = nn.LayerNorm(self.head_dim)
        if attn_norm == "scaled_cosine":
            self.tau = nn.Parameter(torch.full((num_heads,), SCALED_COSINE_TAU_INIT))
        if attn_norm == "lsa":
            self.log_tau = nn.Parameter(torch.tensor(math.log(math.sqrt(self.head_dim))))
        self.probe = None
        """Analysis hook (see `vitlab.models.probe`): when set, forward also computes the weights and
        calls probe(self, q, k, weights) with the per-head (B, H, N, d) queries and keys."""

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, attn_norm={self.attn_norm}"

    def temperature(self) -> Tensor | None:
        """The current temperature(s) τ of `scaled_cosine` (per head, clamped) or `lsa` (scalar), else None."""
        if self.attn_norm == "scaled_cosine":
            return self.tau.clamp(min=SCALED_COSINE_TAU_MIN)
        if self.attn_norm == "lsa":
            return self.log_tau.exp()
        return None

    def forward(self, x: Tensor, return_weights: bool = False):
        B, N, C = x.shape
        # Split along the qkv axis first, then move the heads: the views are the same as a permute to
        # (3, B, H, N, d), but the backward stacks the three gradients straight into the (B, N, 3, H, d)
        # layout of the qkv output, one copy instead of two.
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).unbind(2))
        score = getattr(self, "_" + self.attn_norm)
        probe = self.probe
        kw = dict(drop=self.attn_drop, training=self.training, need_weights=return_weights or probe is not None)
        # The meta device (FLOP counting, train/flops.py) has no autocast state to ask about.
        if self.attn_norm in FP32_NORMS and x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                out, weights = score(q.float(), k.float(), v.float(), **kw)
            out = out.to(v.dtype)
        else:
            out, weights = score(q, k, v, **kw)
        if probe is not None:
            probe(self, q, k, weights)
        out = out.transpose(1, 2).reshape(B, N, C)
        out = self.proj_drop(self.proj(out))
        return (out, weights) if return_weights else out

    def score_logits(self, q: Tensor, k: Tensor) -> Tensor:
        """The (B, H, N, N) scores each variant turns into weights, from the raw per-head q, k.

        softmax, linear_scale: Q Kᵀ/√d · zscore: Q′K′ᵀ/d · cosine: cos(q, k) (before the 1/N) ·
        linear: φ(Q) φ(K)ᵀ (positive, normalized by its row sum) · qk_layernorm: LN(Q) LN(K)ᵀ/√d ·
        scaled_cosine: cos(q, k)/τ · sigmoid: Q Kᵀ/√d − log N · lsa: Q Kᵀ/τ with the masked diagonal at −inf.
        """
        q, k = q.float(), k.float()
        d, n = q.shape[-1], q.shape[-2]
        norm = self.attn_norm
        if norm == "zscore":
            return standardize(q) @ standardize(k).transpose(-2, -1) / d
        if norm in ("cosine", "scaled_cosine"):
            cos = F.normalize(q, dim=-1, eps=COSINE_EPS) @ F.normalize(k, dim=-1, eps=COSINE_EPS).transpose(-2, -1)
            return cos / self.temperature().view(1, -1, 1, 1) if norm == "scaled_cosine" else cos
        if norm == "linear":
            return elu_feature_map(q) @ elu_feature_map(k).transpose(-2, -1)
        if norm == "qk_layernorm":
            q, k = self.q_norm(q), self.k_norm(k)
        if norm == "lsa":
            s = q @ k.transpose(-2, -1) / self.temperature()
            return s if n == 1 else s.masked_fill(torch.eye(n, dtype=torch.bool, device=q.device), float("-inf"))
        s = q @ k.transpose(-2, -1) / math.sqrt(d)
        return s - math.log(n) if norm == "sigmoid" else s

    # one method per attn_norm, each a thin adapter to the score functions above

    def _softmax(self, q, k, v, **kw):
        return softmax_attention(q, k, v, scale=self.head_dim ** -0.5, **kw)

    def _zscore(self, q, k, v, **kw):
        return zscore_attention(q, k, v, zscore_v=self.zscore_v, **kw)

    def _cosine(self, q, k, v, **kw):
        return cosine_attention(q, k, v, **kw)

    def _linear(self, q, k, v, **kw):
        return linear_attention(q, k, v, **kw)

    def _linear_scale(self, q, k, v, **kw):
        return linear_scale_attention(q, k, v, **kw)

    def _sigmoid(self, q, k, v, **kw):
        return sigmoid_attention(q, k, v, **kw)

    def _qk_layernorm(self, q, k, v, **kw):
        return softmax_attention(self.q_norm(q), self.k_norm(k), v, scale=self.head_dim ** -0.5, **kw)

    def _scaled_cosine(self, q, k, v, **kw):
        # cos(q, k) / τ_h: fold 1/τ_h into the normalized queries so the fused kernel can be used
        q = F.normalize(q, dim=-1, eps=COSINE_EPS) / self.temperature().view(1, -1, 1, 1).to(q.dtype)
        k = F.normalize(k, dim=-1, eps=COSINE_EPS)
        return softmax_attention(q, k, v, scale=1.0, **kw)

    def _lsa(self, q, k, v, **kw):
        # Diagonal masking: a token does not attend to itself. With a single token nothing would be
        # left to attend to, so that case stays unmasked (the output is then V, like every softmax).
        n = q.shape[-2]
        mask = None if n == 1 else ~torch.eye(n, dtype=torch.bool, device=q.device)
        return softmax_attention(q / self.temperature().to(q.dtype), k, v, scale=1.0, mask=mask, **kw)
