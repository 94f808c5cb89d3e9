"""The one way to build a model: `create_model(name, **knobs)`, and the tables of `vitlab models`.

A preset is a family (ViT, MobileViT, ...) plus default values for that family's knobs; each family
registers itself, its knob dataclass and its presets (`vitlab.families`; the families are the modules
`vitlab.models` imports). Every knob can be overridden; setting a knob that the family does not have
is an error, never silently ignored.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from ..config import ModelConfig, model_config
from ..errors import ConfigError
from ..families import FAMILIES, PRESETS, family_of, get_preset, list_models
from .layers import count_flops, count_params

DEFAULT_IMAGE_SIZE = 32
"""Input size of presets without one of their own when none is given (the study's CIFAR resolution)."""

__all__ = ["DEFAULT_IMAGE_SIZE", "PRESETS", "build_model", "create_model", "describe_model", "get_preset",
           "knobs_of", "list_models", "model_table"]


def knobs_of(name: str) -> tuple[str, ...]:
    """The knobs (fields of its family's ModelConfig subclass) that model `name` accepts as overrides."""
    return tuple(fl.name for fl in dataclasses.fields(family_of(name).knobs) if fl.name != "name")


def create_model(name: str, num_classes: int = 1000, in_chans: int = 3, **overrides) -> nn.Module:
    """Build model `name` with knob overrides (see `knobs_of(name)`).

    The returned module has `input_size` (the image size it expects), `resolved` (every knob's final
    value, for reports), `tokens_per_attention` and `no_weight_decay()`.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    model_config(name, **given)  # names, types, choices and ranges of the knobs
    for field_name, v in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(v, int) or v <= 0:
            raise ConfigError(field_name, f"must be a positive integer, got {v!r}")
    preset = get_preset(name)
    image_size = given.pop("image_size", None) or preset.image_size or DEFAULT_IMAGE_SIZE
    model, resolved = FAMILIES[preset.family].create(preset, given, num_classes, in_chans, image_size)
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
    """Resolved per-stage rows for `vitlab models NAME --describe` (columns: layers.DESCRIBE_COLUMNS,
    None where not applicable), as the model's family describes it."""
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, **overrides)
    return FAMILIES[model.resolved["family"]].describe(model)
