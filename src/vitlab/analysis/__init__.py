"""Analysis of trained runs: what the attention does, how robust and how fast the model is.

    from vitlab.analysis import analyze_run
    analysis = analyze_run("runs/x", sections=["attention", "robustness"])   # -> RUN/analysis/analysis.json

Modules: attention_stats (formulas), rollout, corruptions (+ imageops, jpeg), attention / robustness /
calibration / efficiency (the sections), metrics (scalar names), figures, export (ONNX), analyze.
Depends on config, rundir, data, models and train; never on study or report.
"""
from .analyze import analyze_run, missing_sections, read_analysis, read_maps
from .metrics import PER_LAYER_METRICS, SCALAR_METRICS, STUDY_METRICS, is_analysis_metric, metric_names
from .options import SECTIONS, AnalysisOptions

__all__ = ["AnalysisOptions", "PER_LAYER_METRICS", "SCALAR_METRICS", "SECTIONS", "STUDY_METRICS", "analyze_run",
           "is_analysis_metric", "metric_names", "missing_sections", "read_analysis", "read_maps"]
