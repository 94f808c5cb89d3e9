"""Models of the study: ViT and MobileViT v1 with one shared, configurable attention.

Build models only through `create_model` / `build_model`; `vitlab models` lists the presets.
"""
from .attention import Attention
from .layers import count_flops, count_params
from .registry import (PRESETS, build_model, create_model, describe_model, knobs_of, list_models,
                       model_table)

__all__ = ["Attention", "PRESETS", "build_model", "count_flops", "count_params", "create_model",
           "describe_model", "knobs_of", "list_models", "model_table"]
