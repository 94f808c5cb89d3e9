"""Studies: one YAML spec -> every run trained once, crash-safe, indexed, queryable.

    result = run_study("studies/vit_attention_norm.yaml", "out/attn", workers=2, profile="quick")
    print(summary_table("out/attn"))
    for rec in open_index("out/attn").runs(status="completed"): ...

`vitlab study`, `vitlab search` and `vitlab results` are thin wrappers over this package.
"""
from .index import RunRecord, StudyIndex, open_index, rebuild_index
from .query import format_rows, results_rows, summary_table
from .runner import StudyResult, run_study
from .plan import RunSpec, count_runs, expand, runs_for_level
from .search import run_search
from .spec import StudySpec, load_spec, resolve


__all__ = ["RunRecord", "RunSpec", "StudyIndex", "StudyResult", "StudySpec", "count_runs", "expand", "format_rows",
           "load_spec", "open_index", "rebuild_index", "resolve", "results_rows", "run_search", "run_study",
           "runs_for_level", "summary_table"]
