"""A finished run, ready to analyze: its config, best-checkpoint model, test data and eval transform."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import DataConfig, RunConfig
from ..schema import build
from ..yamlsafe import read_yaml
from ..data import Augmenter, load_dataset
from ..data.files import ROOT_ENV
from ..errors import UserError
from ..models import build_model
from ..rundir import BEST_CHECKPOINT, CONFIG_FILE, checkpoint_path, read_summary
from ..training.checkpoint import BEST_KEYS, load_checkpoint
from ..training.loop import resolve_device
from ..training.predict import predict_logits
from ..training.precision import autocast, check_recorded, legacy_amp


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    summary: dict
    model: nn.Module
    data: object  # vitlab.data.DataBundle
    augment: object  # vitlab.data.Augmenter
    device: torch.device
    amp: str  # the precision the run trained and was evaluated in: bf16, fp16 or none (float32)
    checkpoint_epoch: int | None

    def inputs(self, x_uint8: Tensor) -> Tensor:
        """The network input for uint8 images: the run's eval transform (resize, normalize) and layout."""
        x = self.augment.eval_batch(x_uint8.to(self.device))
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def autocast(self):
        """The run's recorded precision: what its test accuracy was measured with."""
        return autocast(self.device, self.amp)

    @torch.inference_mode()
    def logits(self, x_uint8: Tensor, batch: int | None = None) -> Tensor:
        """float32 logits of uint8 images, evaluated in batches (default the run's train.eval_batch_size)
        under the run's precision, as its training evaluated them (`train.eval_hflip`)."""
        batch = batch or self.cfg.train.eval_batch_size
        out = []
        for i in range(0, len(x_uint8), batch):
            with self.autocast():
                out.append(predict_logits(self.model, self.inputs(x_uint8[i:i + batch]), self.cfg.train.eval_hflip))
        return torch.cat(out) if out else torch.empty(0, self.data.num_classes, device=self.device)


def check_run_dir(run_dir: str | Path) -> Path:
    """The run directory as a Path; UserError (one line) when it is not one or has no best checkpoint."""
    p = Path(run_dir)
    if not p.is_dir():
        raise UserError(f"{p}: not a directory (expected a run directory)")
    if not (p / CONFIG_FILE).is_file():
        raise UserError(f"{p}: not a run directory (no {CONFIG_FILE})")
    if not checkpoint_path(p, BEST_CHECKPOINT).is_file():
        raise UserError(f"{p}: no checkpoint to analyze ({checkpoint_path(p, BEST_CHECKPOINT).relative_to(p)} "
                        "is missing; the run has not finished an epoch)")
    return p


def data_config_for(data: DataConfig, summary: dict) -> DataConfig:
    """The run's data config, reading from where the run trained: its `data.root` when that is a
    directory here, else $VITLAB_DATA_ROOT when set (an explicit choice wins), else the absolute root the
    run recorded (summary.json `data_root`, a hint: e.g. a relative root, or the variable set at training
    time) when it exists here, else the usual default."""
    if data.root and Path(data.root).expanduser().is_dir():
        return data
    hint = summary.get("data_root")
    if os.environ.get(ROOT_ENV) or not isinstance(hint, str) or not Path(hint).is_dir():
        return data
    return dataclasses.replace(data, root=hint)


def load_run(run_dir: str | Path, device: str | None = None) -> LoadedRun:
    """Load a run's config, test data and best-checkpoint weights (on `device`, default the run's)."""
    p = check_run_dir(run_dir)
    cfg = build(RunConfig, read_yaml(p / CONFIG_FILE))
    summary = read_summary(p) or {}
    dev = resolve_device(device or cfg.device)
    data = load_dataset(data_config_for(cfg.data, summary), cfg.seed, dev)
    model = build_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    ck = load_checkpoint(checkpoint_path(p, BEST_CHECKPOINT), BEST_KEYS)
    try:
        amp = check_recorded(ck.get("amp", legacy_amp(cfg.train.amp, dev)), cfg.train.amp)
    except ValueError as e:
        raise UserError(f"{checkpoint_path(p, BEST_CHECKPOINT)}: {e}") from None
    try:
        model.load_state_dict(ck["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{checkpoint_path(p, BEST_CHECKPOINT)}: weights do not fit the run's model "
                        f"({type(e).__name__})") from None
    model = model.to(dev).eval()
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = Augmenter(cfg.aug, data.mean, data.std, data.num_classes, model.input_size)
    return LoadedRun(p, cfg, summary, model, data, augment, dev,
                     amp, ck.get("epoch"))
