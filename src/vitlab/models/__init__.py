"""Models of the study: ViT and MobileViT v1 with one shared, configurable attention.

Build models only through `create_model` / `build_model`; `vitlab models` lists the presets. Each
model family is one module that registers itself (its knobs, presets and builder) when imported here:
a new family is a new module and one line below.
"""
from . import mobilevit, vit  # noqa: F401  (the families register themselves)
from .attention import Attention
from .layers import count_flops, count_params
from .registry import (PRESETS, build_model, create_model, describe_model, knobs_of, list_models,
                       model_table)

__all__ = ["Attention", "PRESETS", "build_model", "count_flops", "count_params", "create_model",
           "describe_model", "knobs_of", "list_models", "model_table"]
