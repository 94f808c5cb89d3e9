"""Training: `vitlab.train(config, out_dir)` runs one configuration and returns its summary.

The package itself is callable (its module class is swapped below) so that the short form
`vitlab.train(cfg, "runs/x")` and the explicit `from vitlab.train import run_training` both work.
"""
import sys
import types

from ..rundir import read_metrics
from .loop import run_training

__all__ = ["run_training", "read_metrics"]


class _CallableModule(types.ModuleType):
    def __call__(self, config, out_dir, **kwargs) -> dict:
        """Same as `run_training(config, out_dir, **kwargs)`."""
        return run_training(config, out_dir, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
