"""Vision Transformer (Dosovitskiy et al. 2021) for small images, with every size a constructor argument.

Patch embedding (a stride-`patch_size` convolution) → optional class token → position embedding
(learned or fixed 2-D sin-cos) → `depth` pre-LN transformer blocks → LayerNorm → pooling (class
token, mean of the patch tokens, or the flattened token grid as in the Keras ViT example) → optional
MLP head (`head_hidden`) → linear classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..families import Family, Preset, register_family
from ..schema import knob
from .layers import TransformerBlock, count_params, describe_row, drop_path_rates, init_transformer_weights

LAYER_NORM_EPS = 1e-6
"""LayerNorm epsilon of the ViT blocks (the value of the original ViT, timm and the Keras example)."""
SINCOS_TEMPERATURE = 10000.0
"""Base of the sin-cos position frequencies (Vaswani et al. 2017, MAE's 2-D variant)."""
INIT_STD = 0.02
"""Standard deviation of the truncated-normal init of linear layers, position embedding and class token."""


def sincos_pos_embed_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding of a grid×grid token map, shape (grid², dim).

    Half of the channels encode the row, half the column; each half is [sin, cos] of the position
    times frequencies 1 / T^(i / (dim/4)), i = 0..dim/4-1 (as in MAE).
    """
    if dim % 4:
        raise ConfigError("model.dim", f"sincos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / SINCOS_TEMPERATURE ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def encode(p: Tensor) -> Tensor:
        angles = p.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


class ViT(nn.Module):
    """ViT classifier. See the module docstring; knobs are the fields of ViTConfig below."""

    def __init__(self, *, num_classes: int, in_chans: int, image_size: int, patch_size: int, dim: int,
                 depth: int, num_heads: int, mlp_ratio: float, attn_norm: str = "softmax",
                 zscore_v: bool = False, pos_embed: str = "learned", pool: str = "cls",
                 head_hidden: list[int] | tuple[int, ...] = (), dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if image_size % patch_size:
            raise ConfigError("model.patch_size", f"{patch_size} does not divide model.image_size {image_size}")
        if pos_embed not in ("learned", "sincos"):
            raise ConfigError("model.pos_embed", f"must be learned or sincos, got {pos_embed!r}")
        if pool not in ("cls", "mean", "flatten"):
            raise ConfigError("model.pool", f"must be cls, mean or flatten, got {pool!r}")
        self.grid = image_size // patch_size
        self.num_patches = self.grid ** 2
        self.pool = pool
        self.pos_embed_kind = pos_embed
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        n_tokens = self.num_patches + (1 if pool == "cls" else 0)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, dim))
        else:  # fixed; the class token (if any) gets no position
            table = sincos_pos_embed_2d(self.grid, dim)
            if pool == "cls":
                table = torch.cat([torch.zeros(1, dim), table])
            self.register_buffer("pos_embed", table.unsqueeze(0), persistent=False)
        mlp_hidden = int(round(dim * mlp_ratio))
        rates = drop_path_rates(drop_path, depth)
        self.blocks = nn.ModuleList([
            TransformerBlock(dim, num_heads, mlp_hidden, attn_norm=attn_norm, zscore_v=zscore_v,
                             dropout=dropout, attn_dropout=attn_dropout, drop_path=r, norm_eps=LAYER_NORM_EPS)
            for r in rates
        ])
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head_drop = nn.Dropout(dropout)
        width = dim * self.num_patches if pool == "flatten" else dim
        layers: list[nn.Module] = []
        for h in head_hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        self.head = nn.Sequential(*layers, nn.Linear(width, num_classes))
        self.tokens_per_attention = [n_tokens] * depth
        self._init_weights()

    def _init_weights(self) -> None:
        init_transformer_weights(self, std=INIT_STD)
        nn.init.trunc_normal_(self.patch_embed.weight, std=INIT_STD)
        nn.init.zeros_(self.patch_embed.bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=INIT_STD)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=INIT_STD)

    def no_weight_decay(self) -> set[str]:
        """Position embedding, class token and attention temperatures: exempt from weight decay."""
        names = {n for n, _ in self.named_parameters() if n in ("pos_embed", "cls_token")}
        names |= {n for n, _ in self.named_parameters() if n.endswith((".tau", ".log_tau"))}
        return names

    def embed(self, x: Tensor) -> Tensor:
        # Under autocast the patch embedding stays float32: it starts the residual stream, and a bf16
        # output rounds away the small differences between patches of a flat background (most of a
        # Fashion-MNIST image) that LayerNorm then amplifies: the gradient of every parameter was 2.7%
        # off float32's (median) against 0.6% with this conv in float32, and vit_study_b's paired
        # bf16 − float32 gap at 300 steps went from −4.6 to −2.7 points at the same 3 seeds, −1.1 [−3.8,
        # +1.6] over 6 (benchmarks/RESULTS.md). The conv is < 1% of a step's FLOPs. (The meta device
        # of FLOP counting has no autocast state.)
        if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                x = self.patch_embed(x.float())
        else:
            x = self.patch_embed(x)
        x = x.flatten(2).transpose(1, 2)  # (B, N, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed

    def classify(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        if self.pool == "cls":
            x = x[:, 0]
        elif self.pool == "mean":
            x = x.mean(dim=1)
        else:
            x = x.flatten(1)
        return self.head(self.head_drop(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.classify(x)

    def attention_weights(self, x: Tensor) -> list[Tensor]:
        """The (B, H, N, N) attention matrix of every block for the images x."""
        x = self.embed(x)
        out = []
        for block in self.blocks:
            x, w = block.forward_with_weights(x)
            out.append(w)
        return out


# ---------------------------------------------------------------------------------------------
# the family: its knobs, presets, construction and description


@dataclass
class ViTConfig(ModelConfig):
    """The knobs of a ViT: the shared ones (`ModelConfig`) and these."""

    dim: Optional[int] = knob(None, "ViT: embedding width", gt=0)
    depth: Optional[int] = knob(None, "ViT: number of transformer blocks", gt=0)
    pos_embed: Optional[str] = knob(None, "ViT position embedding", choices=(None, "learned", "sincos"))
    pool: Optional[str] = knob(None, "ViT pooling: class token, mean of the patch tokens, or the flattened token grid (Keras example)",
                               choices=(None, "cls", "mean", "flatten"))
    head_hidden: Optional[list[int]] = knob(None, "hidden widths of the MLP classification head (empty: linear head)")


_BASE = dict(pos_embed="learned", pool="cls", head_hidden=[], dropout=0.0, attn_dropout=0.0, drop_path=0.0)

PRESETS = [
    Preset("vit_nano", "vit", "tiny ViT for tests and CPU demos (dim 64, depth 4, 4 heads)", None,
           dict(_BASE, patch_size=4, dim=64, depth=4, num_heads=4, mlp_ratio=2.0)),
    Preset("vit_study_b", "vit", "the study's CIFAR ViT: 32 px, patch 4 (64 tokens), dim 128, depth 6, 4 heads of 32, "
           "MLP 2×; drop_path 0.1", 32,
           dict(_BASE, patch_size=4, dim=128, depth=6, num_heads=4, mlp_ratio=2.0, drop_path=0.1)),
    Preset("vit_tiny", "vit", "ViT-Tiny baseline of the SPT/LSA paper (Lee et al. 2021): dim 192, depth 9, "
           "12 heads of 16, MLP 2×, patch 4", 32,
           dict(_BASE, patch_size=4, dim=192, depth=9, num_heads=12, mlp_ratio=2.0, drop_path=0.1)),
    # Keras "Image classification with Vision Transformer": its MultiHeadAttention has key_dim 64 per
    # head (inner width 256) and its head uses dropout 0.5; here heads split the width (4 × 16) and
    # one dropout (0.1) serves blocks and head, as for every vitlab model.
    Preset("vit_keras_72", "vit", "the Keras ViT example: 72 px, patch 6, dim 64, 8 layers, 4 heads, flattened "
           "tokens into an MLP head 2048-1024", 72,
           dict(_BASE, patch_size=6, dim=64, depth=8, num_heads=4, mlp_ratio=2.0, pool="flatten",
                head_hidden=[2048, 1024], dropout=0.1, attn_dropout=0.1)),
]


def create(preset: Preset, knobs: dict, num_classes: int, in_chans: int, image_size: int) -> tuple[ViT, dict]:
    """A ViT from the preset's knobs with `knobs` over them; every knob's final value beside it."""
    k = dict(preset.defaults)
    k.update(knobs)
    k.setdefault("attn_norm", "softmax")
    k.setdefault("zscore_v", False)
    k["head_hidden"] = list(k["head_hidden"])
    model = ViT(num_classes=num_classes, in_chans=in_chans, image_size=image_size, **k)
    return model, dict(k, head_dim=k["dim"] // k["num_heads"], mlp_hidden=int(round(k["dim"] * k["mlp_ratio"])))


def describe(model: ViT) -> list[dict]:
    """Rows of `vitlab models NAME --describe`: embedding, blocks, head."""
    r = model.resolved
    grid = r["image_size"] // r["patch_size"]
    return [
        describe_row(stage="embed", block=f"patch {r['patch_size']}×{r['patch_size']} + {r['pos_embed']} pos",
                     out=r["dim"], stride=r["patch_size"], map=grid,
                     params=count_params(model.patch_embed) + (model.pos_embed.numel() if r["pos_embed"] == "learned" else 0)
                     + (model.cls_token.numel() if model.cls_token is not None else 0)),
        describe_row(stage="blocks", block=f"transformer ({r['attn_norm']})", out=r["dim"], width=r["dim"],
                     depth=r["depth"], heads=r["num_heads"], head_dim=r["head_dim"], ffn=r["mlp_hidden"],
                     tokens=model.tokens_per_attention[0], params=count_params(model.blocks)),
        describe_row(stage="head", block=f"{r['pool']} pool, MLP {r['head_hidden'] or '-'}", out=r["num_classes"],
                     params=count_params(model.norm) + count_params(model.head)),
    ]


register_family(Family("vit", ViTConfig, create, describe), PRESETS)
