"""Model presets and the one way to build a model: `create_model(name, **knobs)`.

A preset is a family (ViT or MobileViT) plus default values for that family's knobs; every knob is a
`vitlab.config.ModelConfig` field and can be overridden. Setting a knob that the family does not
have is an error, never silently ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from ..config import ModelConfig, build, suggest
from ..errors import ConfigError
from . import mobilevit as mv
from .layers import count_flops, count_params
from .vit import ViT

DEFAULT_IMAGE_SIZE = 32
"""Input size of presets without one of their own when none is given (the study's CIFAR resolution)."""

COMMON_KNOBS = ("image_size", "attn_norm", "zscore_v", "num_heads", "patch_size", "mlp_ratio",
                "dropout", "attn_dropout", "drop_path")
FAMILY_KNOBS = {
    "vit": COMMON_KNOBS + ("dim", "depth", "pos_embed", "pool", "head_hidden"),
    "mobilevit": COMMON_KNOBS + ("head_dim", "expansion", "stage_expansion", "level", "width_mult", "strides"),
}


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    description: str
    image_size: int | None = None  # the preset's own input size; None: follows the data
    defaults: dict = field(default_factory=dict)  # ViT: every knob; MobileViT: taken from mobilevit.ARCHS


_VIT_BASE = dict(pos_embed="learned", pool="cls", head_hidden=[], dropout=0.0, attn_dropout=0.0, drop_path=0.0)

PRESETS = {p.name: p for p in [
    Preset("vit_nano", "vit", "tiny ViT for tests and CPU demos (dim 64, depth 4, 4 heads)", None,
           dict(_VIT_BASE, patch_size=4, dim=64, depth=4, num_heads=4, mlp_ratio=2.0)),
    Preset("vit_study_b", "vit", "the study's CIFAR ViT: 32 px, patch 4 (64 tokens), dim 128, depth 6, 4 heads of 32, "
           "MLP 2×; drop_path 0.1", 32,
           dict(_VIT_BASE, patch_size=4, dim=128, depth=6, num_heads=4, mlp_ratio=2.0, drop_path=0.1)),
    Preset("vit_tiny", "vit", "ViT-Tiny baseline of the SPT/LSA paper (Lee et al. 2021): dim 192, depth 9, "
           "12 heads of 16, MLP 2×, patch 4", 32,
           dict(_VIT_BASE, patch_size=4, dim=192, depth=9, num_heads=12, mlp_ratio=2.0, drop_path=0.1)),
    # Keras "Image classification with Vision Transformer": its MultiHeadAttention has key_dim 64 per
    # head (inner width 256) and its head uses dropout 0.5; here heads split the width (4 × 16) and
    # one dropout (0.1) serves blocks and head, as for every vitlab model.
    Preset("vit_keras_72", "vit", "the Keras ViT example: 72 px, patch 6, dim 64, 8 layers, 4 heads, flattened "
           "tokens into an MLP head 2048-1024", 72,
           dict(_VIT_BASE, patch_size=6, dim=64, depth=8, num_heads=4, mlp_ratio=2.0, pool="flatten",
                head_hidden=[2048, 1024], dropout=0.1, attn_dropout=0.1)),
    Preset("mobilevit_xxs", "mobilevit", "MobileViT-XXS (1.27M params at 1000 classes)"),
    Preset("mobilevit_xs", "mobilevit", "MobileViT-XS (2.32M params at 1000 classes)"),
    Preset("mobilevit_s", "mobilevit", "MobileViT-S (5.58M params at 1000 classes)"),
]}


def list_models() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError("model.name",
                          f"unknown model {name!r}; one of {', '.join(list_models())}" + suggest(name, PRESETS))
    return PRESETS[name]


def knobs_of(name: str) -> tuple[str, ...]:
    """The ModelConfig fields that model `name` accepts as overrides."""
    return FAMILY_KNOBS[get_preset(name).family]


def _check_knobs(name: str, overrides: dict) -> dict:
    """Validate override names against the model's knobs and values against ModelConfig. Returns the
    overrides that are set (None means "the preset's value")."""
    preset = get_preset(name)
    allowed = FAMILY_KNOBS[preset.family]
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if key not in fields:
            raise ConfigError(f"model.{key}", "unknown key" + suggest(key, fields))
        default_valued = (key == "attn_norm" and value == "softmax") or (key == "zscore_v" and value is False)
        if key not in allowed and not default_valued:
            raise ConfigError(f"model.{key}", f"not a knob of {name}; its knobs: {', '.join(allowed)}")
    build(ModelConfig, dict(given, name=name), "model.")  # types, choices and ranges
    return given


def create_model(name: str, num_classes: int = 1000, in_chans: int = 3, **overrides) -> nn.Module:
    """Build model `name` with knob overrides (ModelConfig fields; see `knobs_of(name)`).

    The returned module has `input_size` (the image size it expects), `resolved` (every knob's final
    value, for reports), `tokens_per_attention` and `no_weight_decay()`.
    """
    given = _check_knobs(name, overrides)
    for field_name, v in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(v, int) or v <= 0:
            raise ConfigError(field_name, f"must be a positive integer, got {v!r}")
    preset = get_preset(name)
    image_size = given.pop("image_size", None) or preset.image_size or DEFAULT_IMAGE_SIZE
    if preset.family == "vit":
        knobs = dict(preset.defaults)
        knobs.update(given)
        knobs.setdefault("attn_norm", "softmax")
        knobs.setdefault("zscore_v", False)
        knobs["head_hidden"] = list(knobs["head_hidden"])
        model = ViT(num_classes=num_classes, in_chans=in_chans, image_size=image_size, **knobs)
        resolved = dict(knobs, head_dim=knobs["dim"] // knobs["num_heads"],
                        mlp_hidden=int(round(knobs["dim"] * knobs["mlp_ratio"])))
    else:
        kwargs, names = mv.resolve(mv.ARCHS[name], image_size=image_size, **given)
        model = mv.MobileViT(num_classes=num_classes, in_chans=in_chans, **kwargs)
        resolved = dict(kwargs, stage_strides=kwargs["strides"], **names)
        resolved.pop("image_size")
        resolved["head_dim"] = [w // h for w, h in zip(kwargs["transformer_widths"], kwargs["num_heads"], strict=True)]
        resolved["ffn_widths"] = [int(round(w * kwargs["mlp_ratio"])) for w in kwargs["transformer_widths"]]
    model.input_size = image_size
    model.resolved = dict(name=name, family=preset.family, image_size=image_size, in_chans=in_chans,
                          num_classes=num_classes, **resolved,
                          tokens_per_attention=list(model.tokens_per_attention), params=count_params(model))
    return model


def build_model(cfg: ModelConfig, num_classes: int, in_chans: int, data_image_size: int) -> nn.Module:
    """The model of a run config. Its input size is cfg.image_size, else the preset's own (vit_keras_72:
    72), else the data's; the trainer resizes batches when it differs from the data."""
    overrides = cfg.overrides()
    if "image_size" not in overrides:
        overrides["image_size"] = get_preset(cfg.name).image_size or data_image_size
    return create_model(cfg.name, num_classes=num_classes, in_chans=in_chans, **overrides)


def model_table(names: list[str] | None = None, image_size: int | None = None, num_classes: int = 1000,
                in_chans: int = 3, **overrides) -> list[dict]:
    """One row per model for `vitlab models`: name, family, params, forward FLOPs of one image at its
    default input (or `image_size`), input size, tokens per attention stage, description."""
    rows = []
    for name in names or list_models():
        kw = dict(overrides, image_size=image_size) if image_size else dict(overrides)
        model = create_model(name, num_classes=num_classes, in_chans=in_chans, **kw)
        rows.append(dict(name=name, family=model.resolved["family"], params=count_params(model),
                         flops=count_flops(model, model.input_size, in_chans), input_size=model.input_size,
                         tokens=list(model.tokens_per_attention), description=PRESETS[name].description))
    return rows


def describe_model(name: str, num_classes: int = 1000, in_chans: int = 3, **overrides) -> list[dict]:
    """Resolved per-stage rows for `vitlab models NAME --describe`. Columns (None where not applicable):
    stage, block, out (channels or width), stride, map (feature map side), expansion, width
    (transformer width), depth, heads, head_dim, ffn, tokens (per attention), params."""
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, **overrides)
    r = model.resolved
    cols = ("stage", "block", "out", "stride", "map", "expansion", "width", "depth", "heads", "head_dim", "ffn",
            "tokens", "params")

    def row(**kw):
        return {c: kw.get(c) for c in cols}

    if r["family"] == "vit":
        grid = r["image_size"] // r["patch_size"]
        rows = [
            row(stage="embed", block=f"patch {r['patch_size']}×{r['patch_size']} + {r['pos_embed']} pos",
                out=r["dim"], stride=r["patch_size"], map=grid,
                params=count_params(model.patch_embed) + (model.pos_embed.numel() if r["pos_embed"] == "learned" else 0)
                + (model.cls_token.numel() if model.cls_token is not None else 0)),
            row(stage="blocks", block=f"transformer ({r['attn_norm']})", out=r["dim"], width=r["dim"],
                depth=r["depth"], heads=r["num_heads"], head_dim=r["head_dim"], ffn=r["mlp_hidden"],
                tokens=model.tokens_per_attention[0], params=count_params(model.blocks)),
            row(stage="head", block=f"{r['pool']} pool, MLP {r['head_hidden'] or '-'}", out=r["num_classes"],
                params=count_params(model.norm) + count_params(model.head)),
        ]
        return rows
    sizes = model.feature_sizes
    strides = r["stage_strides"]
    rows = [row(stage="stem", block="conv 3×3", out=r["stem"], stride=strides[0],
                map=mv.conv_out(r["image_size"], strides[0]), params=count_params(model.stem))]
    for i, stage in enumerate(model.stages):
        common = dict(stage=f"stage{i + 1}", out=r["channels"][i], stride=strides[i + 1], map=sizes[i],
                      expansion=r["expansions"][i], params=count_params(stage))
        if i < 2:
            rows.append(row(block=f"MV2 ×{r['mv2_blocks'][i]}", **common))
        else:
            t = i - 2
            rows.append(row(block=f"MV2 + MobileViT ({r['attn_norm']}, patch {r['patch_size']})",
                            width=r["transformer_widths"][t], depth=r["transformer_depths"][t],
                            heads=r["num_heads"][t], head_dim=r["head_dim"][t], ffn=r["ffn_widths"][t],
                            tokens=model.tokens_per_attention[t], **common))
    rows.append(row(stage="head", block="conv 1×1, avg pool, linear", out=r["num_classes"],
                    params=count_params(model.final_conv) + count_params(model.head)))
    return rows
