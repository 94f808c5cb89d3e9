"""MobileViT v1 (Mehta & Rastegari, ICLR 2022), following the paper and Apple's ml-cvnets code.

Layout (ml-cvnets `MobileViT`), every width/depth a field of `MobileViTArch`:

    stem      3×3 conv, BN, SiLU                    (stride strides[0])
    stage 1   MV2 inverted-residual blocks          (stride strides[1])
    stage 2   MV2 blocks                            (stride strides[2])
    stage 3-5 one MV2 block (stride strides[i]), then a MobileViT block
    final     1×1 conv to min(4 × last width, 960) channels, BN, SiLU; global average pool;
              dropout; linear classifier

MobileViT block: 3×3 conv (BN, SiLU) → 1×1 conv to the transformer width → unfold the map into
p×p patches, giving p² sequences of N = (H/p)(W/p) tokens (each sequence holds the pixels at one
position inside the patches) → pre-LN transformer layers → LayerNorm → fold back → 1×1 conv
(BN, SiLU) → concatenate with the block input → 3×3 fusion conv (BN, SiLU).

The official models use 4 heads whose width is the transformer width / 4; the FFN is 2× wide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..families import Family, Preset, register_family
from ..schema import knob, require
from .attention import check_heads
from .layers import TransformerBlock, count_params, describe_row, drop_path_rates, init_transformer_weights


@dataclass(frozen=True)
class MobileViTArch:
    """Widths and depths of a MobileViT variant (the `mobilevit.py` config of ml-cvnets)."""

    stem: int
    channels: tuple[int, int, int, int, int]  # output channels of stages 1..5
    mv2_blocks: tuple[int, int]  # MV2 blocks of stages 1 and 2
    transformer_widths: tuple[int, int, int]  # stages 3..5
    transformer_depths: tuple[int, int, int]  # stages 3..5
    expansion: float  # MV2 expansion of every stage
    dropout: float  # transformer + classifier dropout of the official recipe


ARCHS = {
    "mobilevit_xxs": MobileViTArch(16, (16, 24, 48, 64, 80), (1, 3), (64, 80, 96), (2, 4, 3), 2.0, 0.05),
    "mobilevit_xs": MobileViTArch(16, (32, 48, 64, 80, 96), (1, 3), (96, 120, 144), (2, 4, 3), 4.0, 0.1),
    "mobilevit_s": MobileViTArch(16, (32, 64, 96, 128, 160), (1, 3), (144, 192, 240), (2, 4, 3), 4.0, 0.1),
}

# The official defaults shared by the three variants.
DEFAULT_HEADS = 4
DEFAULT_PATCH = 2
DEFAULT_MLP_RATIO = 2.0
FINAL_EXPANSION = 4
"""The final 1×1 conv widens the last stage by this factor (ml-cvnets `last_layer_exp_factor`) ..."""
FINAL_MAX_CHANNELS = 960
"""... up to at most this many channels (ml-cvnets caps it at 960)."""
CHANNEL_DIVISOR = 8
"""Scaled channel widths are rounded to multiples of this (MobileNet's `make_divisible`)."""

STRIDES = {
    # (stem, stage 1, ..., stage 5)
    "imagenet": (2, 1, 2, 2, 2, 2),  # official: total stride 32; 256 px -> 32, 16, 8 px maps in stages 3-5
    "cifar": (1, 1, 2, 2, 2, 1),  # total stride 8; 32 px -> 8, 4, 4 px maps: 16, 4, 4 tokens with 2×2 patches
}
"""Stride presets. With imagenet strides a 32 px input leaves 2×2 and 1×1 maps in stages 4-5, so each
attention sees 1 token (every normalization then returns V) and stage 5 cannot be cut into 2×2
patches; the cifar preset drops the stem and last-stage strides so every MobileViT stage attends
across ≥ 4 tokens at 32×32. A stage whose stride is 1 keeps its leading MV2 block (as ml-cvnets does
when it dilates a stage)."""
CIFAR_MAX_SIZE = 64
"""`model.strides` defaults to cifar for inputs up to this size, imagenet above."""

LEVELS = {"C1": 0.5, "C2": 0.75, "C3": 1.0, "C4": 1.5, "C5": 2.0}
"""Complexity levels: width multipliers of the preset (channels and transformer widths). On
mobilevit_xxs (1000 classes): C1 0.40M, C2 0.84M, C3 = XXS 1.27M, C4 2.61M (a little above XS),
C5 4.41M (below S)."""


def make_divisible(value: float, divisor: int) -> int:
    """Round to the nearest multiple of divisor, at least divisor, never more than 10% below value."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def conv_out(size: int, stride: int) -> int:
    """Output size of a 3×3 convolution with padding 1."""
    return (size - 1) // stride + 1


def to_channels_last(x: Tensor) -> Tensor:
    """The input in channels-last layout (a no-op when it already is).

    MobileViT runs channels-last whatever layout its caller uses: with channels-last weights the CPU
    (oneDNN) and CUDA convolutions, BatchNorm and SiLU then work on (B, H, W, C) arrays without
    reordering, ≈ 1.4× faster per training step on a CPU than in the contiguous layout, and the
    unfold/fold to tokens reads channels as the innermost axis. Same values either way.
    """
    return x.contiguous(memory_format=torch.channels_last)


def _is_channels_last(x: Tensor) -> bool:
    """A 4-d tensor laid out (B, H, W, C) in memory (a 1×1 map counts as contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


FLOAT32_DEPTHWISE_TRAINING_DEVICES = frozenset({"cpu"})
"""Device types on which a depthwise ConvBNAct computes in float32 under autocast while gradients are
recorded: on a CPU (oneDNN, torch 2.13) the bf16 depthwise convolution's backward is slower than the
float32 one, so a MobileViT training step with every layer in bf16 is ≈ 1.03× float32, and ≈ 1.36× with
the depthwise units in float32 (pointwise and full 3×3 convolutions and the transformers in bf16).
Inference keeps them in bf16 (2.1× float32 then). benchmarks/RESULTS.md, "bf16 on the CPU"."""


class ConvBNAct(nn.Sequential):
    """Conv (no bias) → BatchNorm → optional SiLU; a depthwise one in float32 when training on
    FLOAT32_DEPTHWISE_TRAINING_DEVICES (see there)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            *([nn.SiLU()] if act else []),  # not in place: an in-place SiLU must copy its input for backward
        )
        self.depthwise = groups > 1 and groups == cin

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        if (self.depthwise and device in FLOAT32_DEPTHWISE_TRAINING_DEVICES and torch.is_grad_enabled()
                and torch.is_autocast_enabled(device)):
            with torch.autocast(device, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand (skipped at expansion 1) → 3×3 depthwise (stride) → 1×1 linear
    projection; residual when the shape is kept. Hidden width = in × expansion rounded to 8."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: float):
        super().__init__()
        hidden = cin if expansion == 1 else make_divisible(round(cin * expansion), CHANNEL_DIVISOR)
        layers = [] if expansion == 1 else [ConvBNAct(cin, hidden, 1)]
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden), ConvBNAct(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileViTBlock(nn.Module):
    """Local 3×3 conv + global transformer over unfolded patches + fusion (see the module docstring)."""

    def __init__(self, channels: int, width: int, depth: int, num_heads: int, mlp_ratio: float,
                 patch_size: int, *, attn_norm: str, zscore_v: bool, dropout: float, attn_dropout: float,
                 drop_path: list[float]):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvBNAct(channels, channels, 3)
        self.conv_1x1 = nn.Conv2d(channels, width, 1, bias=False)
        hidden = int(round(width * mlp_ratio))
        self.transformer = nn.ModuleList([
            TransformerBlock(width, num_heads, hidden, attn_norm=attn_norm, zscore_v=zscore_v, dropout=dropout,
                             attn_dropout=attn_dropout, drop_path=r, act=nn.SiLU)
            for r in drop_path
        ])
        self.norm = nn.LayerNorm(width)
        self.conv_proj = ConvBNAct(width, channels, 1)
        self.conv_fusion = ConvBNAct(2 * channels, channels, 3)

    def unfold(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B·p², N, C): one copy, from either memory format.

        A channels-last input is split through its physical (B, H, W, C) view, so that the backward
        hands the 1×1 conv before it a channels-last gradient too (else a contiguous one, which the
        conv's backward would have to reorder)."""
        B, C, H, W = x.shape
        p = self.patch_size
        if _is_channels_last(x):
            x = x.permute(0, 2, 3, 1).reshape(B, H // p, p, W // p, p, C).permute(0, 2, 4, 1, 3, 5)
        else:
            x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 3, 5, 2, 4, 1)
        return x.reshape(B * p * p, (H // p) * (W // p), C)  # from the (B, p, p, nh, nw, C) view

    def fold(self, t: Tensor, B: int, H: int, W: int, channels_last: bool) -> Tensor:
        """(B·p², N, C) -> (B, C, H, W) in the requested memory format: one copy."""
        p = self.patch_size
        C = t.shape[-1]
        t = t.reshape(B, p, p, H // p, W // p, C)
        if channels_last:  # physical (B, H, W, C) seen as (B, C, H, W)
            return t.permute(0, 3, 1, 4, 2, 5).reshape(B, H, W, C).permute(0, 3, 1, 2)
        return t.permute(0, 5, 3, 1, 4, 2).reshape(B, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x, None)

    def _forward(self, x: Tensor, weights: list | None) -> Tensor:
        B, _, H, W = x.shape
        y = self.conv_1x1(self.conv_kxk(x))
        t = self.unfold(y)
        for layer in self.transformer:
            if weights is None:
                t = layer(t)
            else:
                t, w = layer.forward_with_weights(t)
                weights.append(w)
        t = self.norm(t)
        y = self.conv_proj(self.fold(t, B, H, W, channels_last=_is_channels_last(x)))
        return self.conv_fusion(torch.cat((x, y), dim=1))


class MobileViT(nn.Module):
    """MobileViT v1 classifier built from fully resolved per-stage values (see `resolve`)."""

    def __init__(self, *, num_classes: int, in_chans: int, image_size: int, stem: int, channels: list[int],
                 mv2_blocks: list[int], expansions: list[float], transformer_widths: list[int],
                 transformer_depths: list[int], num_heads: list[int], mlp_ratio: float, patch_size: int,
                 strides: list[int], final_channels: int, attn_norm: str = "softmax", zscore_v: bool = False,
                 dropout: float = 0.0, attn_dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.input_size = image_size
        sizes = feature_sizes(image_size, strides)
        for i, size in enumerate(sizes[2:], start=3):
            if size % patch_size:
                raise ConfigError("model.patch_size", f"{patch_size} does not divide the {size}×{size} feature map of "
                                  f"stage {i} (model.image_size {image_size}, strides {list(strides)}); "
                                  f"{_valid_size_hint(image_size, strides, patch_size)}")
        self.stem = ConvBNAct(in_chans, stem, 3, strides[0])
        rates = iter(drop_path_rates(drop_path, sum(transformer_depths)))
        stages: list[nn.Module] = []
        cin = stem
        for i in range(5):
            blocks: list[nn.Module] = []
            if i < 2:
                for j in range(mv2_blocks[i]):
                    blocks.append(InvertedResidual(cin, channels[i], strides[i + 1] if j == 0 else 1, expansions[i]))
                    cin = channels[i]
            else:
                t = i - 2
                blocks.append(InvertedResidual(cin, channels[i], strides[i + 1], expansions[i]))
                cin = channels[i]
                blocks.append(MobileViTBlock(
                    cin, transformer_widths[t], transformer_depths[t], num_heads[t], mlp_ratio, patch_size,
                    attn_norm=attn_norm, zscore_v=zscore_v, dropout=dropout, attn_dropout=attn_dropout,
                    drop_path=[next(rates) for _ in range(transformer_depths[t])]))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_conv = ConvBNAct(cin, final_channels, 1)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(final_channels, num_classes)
        self.feature_sizes = sizes
        self.tokens_per_attention = [(s // patch_size) ** 2 for s in sizes[2:]]
        self._init_weights()
        self.to(memory_format=torch.channels_last)  # see to_channels_last

    def _init_weights(self) -> None:
        for m in self.modules():  # ml-cvnets: He-normal (fan-out) convs, unit BatchNorms
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        init_transformer_weights(self)

    def no_weight_decay(self) -> set[str]:
        """Attention temperatures (scaled_cosine, lsa): exempt from weight decay."""
        return {n for n, _ in self.named_parameters() if n.endswith((".tau", ".log_tau"))}

    def forward(self, x: Tensor) -> Tensor:
        x = self.final_conv(self.stages(self.stem(to_channels_last(x))))
        # Global average pool over the (B, H, W, C) view: its backward is channels-last as well.
        return self.head(self.head_drop(x.permute(0, 2, 3, 1).mean(dim=(1, 2))))

    def attention_weights(self, x: Tensor) -> list[Tensor]:
        """The (B·p², H, N, N) attention matrix of every transformer layer for the images x."""
        weights: list[Tensor] = []
        x = self.stem(to_channels_last(x))
        for stage in self.stages:
            for block in stage:
                x = block._forward(x, weights) if isinstance(block, MobileViTBlock) else block(x)
        return weights


def feature_sizes(image_size: int, strides) -> list[int]:
    """Side of the feature map after the stem and after each of the 5 stages."""
    sizes, s = [], image_size
    for st in strides:
        s = conv_out(s, st)
        sizes.append(s)
    return sizes[1:]


def _valid_size_hint(image_size: int, strides, patch: int) -> str:
    step = math.prod(strides) * patch
    up = -(-image_size // step) * step
    return f"use a model.image_size that is a multiple of {step} (e.g. {up}) or another model.patch_size"


# ---------------------------------------------------------------------------------------------
# knob resolution


def resolve(arch: MobileViTArch, *, image_size: int, num_heads: int | None = None, head_dim: int | None = None,
            expansion: float | None = None, stage_expansion: list[float] | None = None, level: str | None = None,
            width_mult: float | None = None, strides: str | None = None, patch_size: int | None = None,
            mlp_ratio: float | None = None, attn_norm: str = "softmax", zscore_v: bool = False,
            dropout: float | None = None, attn_dropout: float | None = None,
            drop_path: float | None = None) -> tuple[dict, dict]:
    """Constructor arguments of `MobileViT` (minus num_classes/in_chans) from the preset and the knobs,
    plus the resolved names of the presets used (strides, width_mult, level).

    Width rule: with a width multiplier m ≠ 1 (from `width_mult` or `level`), channels become
    make_divisible(c·m, 8) and transformer widths make_divisible(w·m, lcm(8, num_heads)) — or
    lcm(8, head_dim) when the head width is fixed — so they stay divisible by the head count. At
    m = 1 the official widths are kept exactly and a head count that does not divide them is an error.
    The knobs are validated already (MobileViTConfig: choices, exclusions, five stage expansions).
    """
    mult = LEVELS[level] if level is not None else (1.0 if width_mult is None else float(width_mult))
    stride_name = strides or ("cifar" if image_size <= CIFAR_MAX_SIZE else "imagenet")
    if stage_expansion is not None:
        expansions = [float(e) for e in stage_expansion]
    else:
        expansions = [float(expansion if expansion is not None else arch.expansion)] * 5

    def ch(c: int) -> int:
        return c if mult == 1.0 else make_divisible(c * mult, CHANNEL_DIVISOR)

    heads_field = "model.head_dim" if head_dim is not None else "model.num_heads"
    unit = head_dim if head_dim is not None else (num_heads or DEFAULT_HEADS)
    widths = []
    for w in arch.transformer_widths:
        w = w if mult == 1.0 else make_divisible(w * mult, math.lcm(CHANNEL_DIVISOR, unit))
        if w % unit:
            what = f"head width {unit}" if head_dim is not None else f"{unit} heads"
            raise ConfigError(heads_field, f"{what} do not divide the transformer width {w} "
                              f"(widths {list(arch.transformer_widths)}); choose a divisor of every width, or set "
                              "model.width_mult or model.level so widths are rounded to fit the heads")
        widths.append(w)
    heads = [w // head_dim for w in widths] if head_dim is not None else [unit] * 3
    for w, h in zip(widths, heads, strict=True):
        check_heads(w, h, heads_field)
    channels = [ch(c) for c in arch.channels]
    return dict(
        image_size=image_size,
        stem=ch(arch.stem),
        channels=channels,
        mv2_blocks=list(arch.mv2_blocks),
        expansions=expansions,
        transformer_widths=widths,
        transformer_depths=list(arch.transformer_depths),
        num_heads=heads,
        mlp_ratio=float(mlp_ratio if mlp_ratio is not None else DEFAULT_MLP_RATIO),
        patch_size=patch_size if patch_size is not None else DEFAULT_PATCH,
        strides=list(STRIDES[stride_name]),
        final_channels=min(FINAL_EXPANSION * channels[-1], FINAL_MAX_CHANNELS),
        attn_norm=attn_norm,
        zscore_v=zscore_v,
        dropout=float(arch.dropout if dropout is None else dropout),
        attn_dropout=float(attn_dropout or 0.0),
        drop_path=float(drop_path or 0.0),
    ), dict(strides=stride_name, width_mult=mult, level=level)  # the knobs' resolved values


# ---------------------------------------------------------------------------------------------
# the family: its knobs, presets, construction and description

#: MobileViT stages, each with its own MV2 expansion (`model.stage_expansion`).
STAGES = 5


@dataclass
class MobileViTConfig(ModelConfig):
    """The knobs of a MobileViT: the shared ones (`ModelConfig`) and these."""

    head_dim: Optional[int] = knob(None, "width per head (MobileViT; exclusive with num_heads)", gt=0)
    expansion: Optional[float] = knob(None, "MobileViT: MV2 inverted-residual expansion rate, all stages", gt=0)
    stage_expansion: Optional[list[float]] = knob(
        None, "MobileViT: MV2 expansion per stage (5 values), overrides expansion",
        check=require(lambda es: len(es) == STAGES and all(e > 0 for e in es), "needs 5 positive values"))
    level: Optional[str] = knob(None, "MobileViT: complexity level, a width multiplier: C1 ×0.5, C2 ×0.75, C3 ×1 (the preset), C4 ×1.5, C5 ×2",
                                choices=(None, *LEVELS), excludes=("width_mult",))
    width_mult: Optional[float] = knob(None, "MobileViT: channel and transformer width multiplier", gt=0)
    strides: Optional[str] = knob(None, "MobileViT stride preset: imagenet = official total stride 32, cifar = 8 "
                                  "(≥ 4 tokens per attention at 32 px); default cifar up to 64 px input, else imagenet",
                                  choices=(None, *sorted(STRIDES)))


PRESETS = [
    Preset("mobilevit_xxs", "mobilevit", "MobileViT-XXS (1.27M params at 1000 classes)"),
    Preset("mobilevit_xs", "mobilevit", "MobileViT-XS (2.32M params at 1000 classes)"),
    Preset("mobilevit_s", "mobilevit", "MobileViT-S (5.58M params at 1000 classes)"),
]


def create(preset: Preset, knobs: dict, num_classes: int, in_chans: int, image_size: int) -> tuple[MobileViT, dict]:
    """A MobileViT from its architecture (ARCHS) and `knobs`; every knob's final value beside it."""
    kwargs, names = resolve(ARCHS[preset.name], image_size=image_size, **knobs)
    model = MobileViT(num_classes=num_classes, in_chans=in_chans, **kwargs)
    resolved = dict(kwargs, stage_strides=kwargs["strides"], **names)
    resolved.pop("image_size")
    resolved["head_dim"] = [w // h for w, h in zip(kwargs["transformer_widths"], kwargs["num_heads"], strict=True)]
    resolved["ffn_widths"] = [int(round(w * kwargs["mlp_ratio"])) for w in kwargs["transformer_widths"]]
    return model, resolved


def describe(model: MobileViT) -> list[dict]:
    """Rows of `vitlab models NAME --describe`: stem, the five stages, head."""
    r = model.resolved
    sizes = model.feature_sizes
    strides = r["stage_strides"]
    rows = [describe_row(stage="stem", block="conv 3×3", out=r["stem"], stride=strides[0],
                         map=conv_out(r["image_size"], strides[0]), params=count_params(model.stem))]
    for i, stage in enumerate(model.stages):
        common = dict(stage=f"stage{i + 1}", out=r["channels"][i], stride=strides[i + 1], map=sizes[i],
                      expansion=r["expansions"][i], params=count_params(stage))
        if i < 2:
            rows.append(describe_row(block=f"MV2 ×{r['mv2_blocks'][i]}", **common))
        else:
            t = i - 2
            rows.append(describe_row(block=f"MV2 + MobileViT ({r['attn_norm']}, patch {r['patch_size']})",
                                     width=r["transformer_widths"][t], depth=r["transformer_depths"][t],
                                     heads=r["num_heads"][t], head_dim=r["head_dim"][t], ffn=r["ffn_widths"][t],
                                     tokens=model.tokens_per_attention[t], **common))
    rows.append(describe_row(stage="head", block="conv 1×1, avg pool, linear", out=r["num_classes"],
                             params=count_params(model.final_conv) + count_params(model.head)))
    return rows


register_family(Family("mobilevit", MobileViTConfig, create, describe), PRESETS)
