"""Scalar results of an analysis: their names (metrics like any other, merged into summary.json) and
how each is read from analysis.json.

Per-layer names carry the layer's forward index: `attn_entropy_norm_l0`, `attn_entropy_norm_l1`, ...
"""
from __future__ import annotations

import math
import re
from typing import Any

from .corruptions import CORRUPTIONS

SCALAR_METRICS: dict[str, str] = {
    # attention
    "attn_entropy_norm_mean": "mean over layers of the normalized attention entropy (1 = uniform, 0 = one key)",
    "attn_entropy_mean": "mean over layers of the attention entropy (nats)",
    "attn_max_weight_mean": "mean over layers of each query's largest attention weight",
    "attn_distance_px_mean": "mean over layers of the mean attention distance (input pixels)",
    "attn_max_logit": "largest pre-normalization attention score of any layer and head",
    "attn_qk_spectral_norm_max": "largest spectral norm of W_q W_kᵀ of any layer and head",
    "attn_rank_residual_last": "rank-collapse residual ‖X − 1x̄ᵀ‖/‖X‖ of the tokens after the last layer",
    "attn_token_cosine_last": "mean pairwise cosine similarity of the tokens after the last layer",
    # robustness
    "corruption_clean_top1": "top-1 on the clean images of the corruption sweep",
    "corruption_top1_mean": "mean top-1 over the faithful corruptions and the 5 severities",
    "corruption_relative_drop": "(clean − mean corruption top-1) / clean",
    **{f"corruption_top1_s{s}": f"mean top-1 over the faithful corruptions at severity {s}" for s in range(1, 6)},
    **{f"corruption_top1_{c}": f"top-1 under {c}, mean over the 5 severities" for c in CORRUPTIONS},
    # calibration
    "calib_overconfidence": "mean confidence − accuracy on the clean test set",
    # efficiency
    "latency_ms_b1": "median batch-1 inference latency (ms), eager",
    "latency_ms_b1_compiled": "median batch-1 inference latency (ms), torch.compile'd",
    "throughput_img_s_b256": "inference throughput at batch 256 (images/s), eager",
    "throughput_img_s_b256_compiled": "inference throughput at batch 256 (images/s), torch.compile'd",
    "onnx_latency_ms_b1": "median batch-1 latency of the exported ONNX model in onnxruntime (ms)",
}
"""Every fixed-name scalar an analysis can add to summary.json, with its meaning."""

PER_LAYER_METRICS = {
    "attn_entropy_norm_l": "normalized attention entropy of layer i (forward order, from 0)",
    "attn_distance_px_l": "mean attention distance of layer i (input pixels)",
}
"""Prefixes of per-layer scalars; the full name appends the layer index."""

STUDY_METRICS = {
    "mce": "mean corruption error against the study's reference level (Hendrycks & Dietterich 2019)",
    "relative_mce": "relative mean corruption error against the reference level",
}
"""Robustness metrics that need a reference level: computed per study (the report), not per run."""

_PER_LAYER = re.compile("^(" + "|".join(map(re.escape, PER_LAYER_METRICS)) + r")\d+$")


def is_analysis_metric(name: str) -> bool:
    """True for a scalar name an analysis writes into summary.json (fixed or per-layer)."""
    return name in SCALAR_METRICS or bool(_PER_LAYER.match(name))


def metric_names(analysis: dict | None = None) -> list[str]:
    """The scalar names: every fixed one, plus the per-layer ones of `analysis` when given."""
    names = list(SCALAR_METRICS)
    layers = ((analysis or {}).get("attention") or {}).get("layers") or []
    for prefix in PER_LAYER_METRICS:
        names += [f"{prefix}{i}" for i in range(len(layers))]
    return names


def _mean(values) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def scalar_metrics(analysis: dict) -> dict[str, Any]:
    """The scalars of an analysis.json, by name (only those its sections provide)."""
    out: dict[str, Any] = {}
    att = analysis.get("attention")
    if att:
        layers = att["layers"]
        out["attn_entropy_norm_mean"] = _mean(lay["entropy_norm"] for lay in layers)
        out["attn_entropy_mean"] = _mean(lay["entropy"] for lay in layers)
        out["attn_max_weight_mean"] = _mean(lay["max_weight"] for lay in layers)
        out["attn_distance_px_mean"] = _mean(lay["distance_px"] for lay in layers)
        logits = [lay["max_logit"] for lay in layers if lay["max_logit"] is not None]
        out["attn_max_logit"] = max(logits) if logits else None
        out["attn_qk_spectral_norm_max"] = max(lay["qk_spectral_norm"] for lay in layers) if layers else None
        out["attn_rank_residual_last"] = layers[-1]["rank_residual"] if layers else None
        out["attn_token_cosine_last"] = layers[-1]["token_cosine"] if layers else None
        for i, lay in enumerate(layers):
            out[f"attn_entropy_norm_l{i}"] = lay["entropy_norm"]
            out[f"attn_distance_px_l{i}"] = lay["distance_px"]
    rob = analysis.get("robustness")
    if rob and rob.get("complete"):
        out["corruption_clean_top1"] = rob["clean_top1"]
        out["corruption_top1_mean"] = rob["mean_top1"]
        out["corruption_relative_drop"] = rob.get("relative_drop")
        for s, v in enumerate(rob["severity_top1"], start=1):
            out[f"corruption_top1_s{s}"] = v
        for name, accs in rob["corruptions"].items():
            out[f"corruption_top1_{name}"] = _mean(accs)
    cal = analysis.get("calibration")
    if cal:
        out["calib_overconfidence"] = cal["overconfidence"]
    eff = analysis.get("efficiency")
    if eff:
        out["latency_ms_b1"] = eff.get("latency_ms_b1")
        out["throughput_img_s_b256"] = eff.get("throughput_img_s_b256")
        comp = eff.get("compiled") or {}
        if "latency_ms_b1" in comp:
            out["latency_ms_b1_compiled"] = comp["latency_ms_b1"]
            out["throughput_img_s_b256_compiled"] = comp["throughput_img_s_b256"]
        onnx = eff.get("onnx") or {}
        if onnx.get("latency_ms_b1") is not None:
            out["onnx_latency_ms_b1"] = onnx["latency_ms_b1"]
    return out
