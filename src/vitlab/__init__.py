"""vitlab: controlled studies of compact vision transformers.

    import vitlab
    summary = vitlab.train(config, "runs/x")                 # one run -> its summary dict (vitlab.training)
    model = vitlab.create_model("mobilevit_xxs", num_classes=100, num_heads=2)
    result = vitlab.run_study("studies/vit_attention_norm.yaml", "out/attn", profile="quick")
    vitlab.write_report("out/attn")                          # tables, figures, report.html
    analysis = vitlab.analyze_run("runs/x")                   # attention, robustness, calibration, efficiency
    df = vitlab.load_results("out/attn")                     # pandas: one row per run (vitlab[pandas])
    study = vitlab.Study("out/attn")                         # a study directory as one object (vitlab.api)
"""
from .analysis import analyze_run
from .api import RunOptions, Study
from .config import RunConfig, load_config
from .models import create_model
from .notebook import export_dir, load_history, load_results
from .report import open_report, write_report
from .study import run_search, run_study
from .training import run_training as train  # `vitlab.train(cfg, out)`: the function; the package is vitlab.training
from .version import __version__

__all__ = ["Study", "RunOptions", "RunConfig", "load_config", "train", "create_model", "run_study", "run_search",
           "write_report", "analyze_run", "open_report", "load_results", "load_history", "export_dir", "__version__"]
