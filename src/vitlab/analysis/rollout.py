"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

The residual connection is accounted for by mixing each layer's head-averaged attention with the
identity, Ã_l = ½ A_l + ½ I (rows still sum to 1), and the attention of layer l's tokens to the input
tokens is the product R_l = Ã_l Ã_{l−1} ··· Ã_1.

Rows are first made distributions (`attention_distribution`: |A| row-normalized), so the variants
whose weights are signed (`cosine`) or unnormalized (`sigmoid`) roll out as attention mass.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..models.probe import attention_distribution

RESIDUAL_MIX = 0.5
"""Weight of the attention in Ã = a·A + (1 − a)·I (Abnar & Zuidema use ½)."""


def mix_identity(a: Tensor, mix: float = RESIDUAL_MIX) -> Tensor:
    """Ã = mix·A + (1 − mix)·I for (..., N, N) matrices."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return mix * a + (1.0 - mix) * eye


def head_mean(weights: Tensor) -> Tensor:
    """(B, H, N, N) weights -> (B, N, N): the mean over heads of the row distributions."""
    return attention_distribution(weights).mean(dim=1)


def rollout(layers: list[Tensor], mix: float = RESIDUAL_MIX) -> list[Tensor]:
    """Rollout after each layer: [R_1, ..., R_L] from head-averaged (B, N, N) attention of layers 1..L
    of one token sequence, R_l = Ã_l R_{l−1}, R_0 = I."""
    out: list[Tensor] = []
    r = None
    for a in layers:
        m = mix_identity(a if a.is_floating_point() else a.float(), mix)
        r = m if r is None else m @ r
        out.append(r)
    return out
