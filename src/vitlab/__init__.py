"""vitlab: controlled studies of compact vision transformers.

    import vitlab
    summary = vitlab.train(config, "runs/x")                 # one run -> its summary dict
    model = vitlab.create_model("mobilevit_xxs", num_classes=100, num_heads=2)
    result = vitlab.run_study("studies/vit_attention_norm.yaml", "out/attn", profile="quick")
    vitlab.write_report("out/attn")                          # tables, figures, report.html
    analysis = vitlab.analyze_run("runs/x")                   # attention, robustness, calibration, efficiency
    df = vitlab.load_results("out/attn")                     # pandas: one row per run (vitlab[pandas])
    study = vitlab.Study("out/attn")                         # a study directory as one object (vitlab.api)
"""
from .version import __version__
from . import train
from .config import RunConfig, load_config
from .models import create_model


def __getattr__(name):
    if name in ("Study", "RunOptions"):  # the public study object (vitlab.api pulls in every layer)
        from . import api

        return getattr(api, name)
    # The study runner and the report pull in optuna, scipy and matplotlib: import them on first use.
    if name == "run_study":
        from .study import run_study

        return run_study
    if name == "run_search":
        from .study.search import run_search

        return run_search
    if name == "analyze_run":
        from .analysis import analyze_run

        return analyze_run
    if name == "write_report":
        from .report import write_report

        return write_report
    if name == "open_report":
        from .report import open_report

        return open_report
    if name in ("load_results", "load_history", "export_dir"):
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'vitlab' has no attribute {name!r}")


__all__ = ["Study", "RunOptions", "RunConfig", "load_config", "train", "create_model", "run_study", "run_search",
           "write_report", "analyze_run", "open_report", "load_results", "load_history", "export_dir", "__version__"]
