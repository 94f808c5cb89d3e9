"""The registry of model families and presets, filled in by the families themselves.

A family module (e.g. `vitlab/models/vit.py`) defines one knob dataclass, a subclass of
`vitlab.config.ModelConfig` with the knobs its models take, and calls `register_family` with it, the
functions that build and describe its models, and its presets (the timm `@register_model` idea).
Adding a family is one new module, imported by `vitlab.models`. This registry sits below the run
config, so a config is validated (`model.name` picks the family's knob dataclass) without importing
torch or the models themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError
from .schema import suggest


@dataclass(frozen=True)
class Preset:
    """A named model: a family plus defaults for that family's knobs."""

    name: str
    family: str
    description: str
    image_size: int | None = None
    """The preset's own input size; None: it follows the data."""
    defaults: dict = field(default_factory=dict)
    """Knob values of the preset (a family may keep them elsewhere, e.g. mobilevit.ARCHS)."""


@dataclass(frozen=True)
class Family:
    name: str
    knobs: type
    """The family's `ModelConfig` subclass: every knob its models take, with docs and constraints."""
    create: Callable[..., tuple[Any, dict]]
    """create(preset, knobs, num_classes, in_chans, image_size) -> (nn.Module, resolved knob values);
    `knobs` are the set (not None) overrides, already validated."""
    describe: Callable[[Any], list[dict]]
    """describe(model) -> rows of `vitlab models NAME --describe` (see models.registry.DESCRIBE_COLUMNS)."""


#: Family name -> Family, in registration order.
FAMILIES: dict[str, Family] = {}
#: Preset name -> Preset, of every registered family.
PRESETS: dict[str, Preset] = {}


def register_family(family: Family, presets: list[Preset]) -> Family:
    """Add a family and its presets. A name used twice, or a preset of another family, is a bug."""
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is registered twice")
    for preset in presets:
        if preset.family != family.name or preset.name in PRESETS:
            raise ValueError(f"preset {preset.name!r}: of family {preset.family!r}, or registered twice")
    family.knobs.FAMILY = family.name
    FAMILIES[family.name] = family
    PRESETS.update((p.name, p) for p in presets)
    return family


def list_models() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError("model.name",
                          f"unknown model {name!r}; one of {', '.join(list_models())}" + suggest(str(name), PRESETS))
    return PRESETS[name]


def family_of(name: str) -> Family:
    """The family of preset `name` (ConfigError naming model.name when there is none)."""
    return FAMILIES[get_preset(name).family]
