"""Training: `run_training(config, out_dir)` runs one configuration and returns its summary.

The package is `vitlab.training`; `vitlab.train(config, out_dir)` is its `run_training` under the short
name the README uses (a function, not this package).
"""
from ..rundir import read_metrics
from .loop import run_training

__all__ = ["run_training", "read_metrics"]
