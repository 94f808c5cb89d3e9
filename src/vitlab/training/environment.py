"""What a run records about where it ran, beside its config: summary.json's `environment` and `data_root`.

Neither is part of the run's identity. `environment` says what decides bitwise equality of two runs of
one configuration: the same config and step count compute the same run anywhere, but the floating-point
results are bitwise equal only with the same torch and oneDNN builds, the same CPU kernels (the
capability torch dispatches to: AVX2, AVX512, ...), the same thread count and device. `data_root` is
where the run read its dataset, absolute, so that `vitlab analyze` and `export` find it again without
$VITLAB_DATA_ROOT (see `vitlab.analysis.loading.data_config_for`).
"""
from __future__ import annotations

import functools
import platform
import re

import torch

from ..config import DataConfig
from ..data import resolve_root
from ..datasets import DATASETS

#: How torch's build summary (`torch.__config__.show()`) names the oneDNN (formerly MKL-DNN) and MKL versions.
ONEDNN_PATTERN = re.compile(r"(?:MKL-DNN|oneDNN)\s+v?([\d.]+)")
MKL_PATTERN = re.compile(r"Math Kernel Library Version\s+([\d.]+)")



def environment(device: torch.device | str) -> dict:
    """The software and hardware facts that decide whether two runs are bitwise equal."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # an older torch
        capability = None
    onednn, mkl = _build_versions()
    return {
        "torch": torch.__version__,
        "onednn": onednn if torch.backends.mkldnn.is_available() else None,
        "mkl": mkl,
        "cpu_capability": capability,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


@functools.lru_cache(maxsize=1)
def _build_versions() -> tuple[str | None, str | None]:
    """(oneDNN version, MKL version) of this torch build, None where it has none."""
    try:
        text = torch.__config__.show()
    except RuntimeError:
        return None, None
    onednn, mkl = ONEDNN_PATTERN.search(text), MKL_PATTERN.search(text)
    return (onednn.group(1) if onednn else None), (mkl.group(1) if mkl else None)


def data_root_hint(cfg: DataConfig) -> str | None:
    """The resolved, absolute data root the run reads (None for datasets without one)."""
    if not DATASETS[cfg.name].rooted:
        return None
    return str(resolve_root(cfg.root).absolute())
