"""TensorBoard: one event-file directory per run (default RUN/tensorboard/).

Per epoch, every number of the metrics.jsonl row as a scalar at step = epoch, grouped by split
(`train/loss`, `val/top1`, `test/top1`; the rest — lr, throughput, timing, attention statistics —
under `epoch/`). At the end, the summary's numbers as `final/<key>` scalars, the test confusion matrix
as an image, and the hyperparameters (the flattened config, plus study, factor, level) through the
hparams plugin, so that a study's runs line up in TensorBoard's HParams view:

    tensorboard --logdir STUDY/runs

Every start rewrites the whole history with `purge_step=1`: TensorBoard drops the earlier events of
steps >= 1, so a resumed run never shows an epoch twice, and epochs trained before tracking was turned
on (or whose events a crash lost) are filled in.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..metrics import DATA_SPLITS, HEADLINE_METRICS
from ..rundir import CONFUSION_FILE, TENSORBOARD_DIR
from ..safepath import check_tree, within, writable_run_dir
from .base import FINAL_PREFIX, RunInfo, epoch_metrics, final_metrics, require
from .images import confusion_figure, figure_rgb, read_confusion

#: Group of the per-epoch fields that belong to no split (lr, throughput_img_s, epoch_time_s, ...).
OTHER_GROUP = "epoch"
#: Per-epoch metrics declared to the HParams view beside the headline summary metrics
#: (`vitlab.metrics.HEADLINE_METRICS`, each shown when the run has it), so that runs in progress compare too.
LIVE_METRICS = ("val/top1", "val/loss")
CONFUSION_TAG = "test/confusion_matrix"
#: vitlab run status -> hparams plugin session status.
SESSION_STATUS = {"completed": "STATUS_SUCCESS", "pruned": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE",
                  "failed": "STATUS_FAILURE"}
EVENT_FILE_GLOB = "events.out.tfevents.*"


def scalar_tag(key: str) -> str:
    """A metrics.jsonl key as a TensorBoard tag: `val_top1` -> `val/top1`, `lr` -> `epoch/lr`."""
    split, _, rest = key.partition("_")
    if split in DATA_SPLITS and rest:
        return f"{split}/{rest}"
    return f"{OTHER_GROUP}/{key}"


def hparam_values(info: RunInfo) -> dict:
    """The run's hyperparameters as the hparams plugin takes them: numbers, strings, bools (lists as
    JSON text); unset (None) knobs are left out."""
    values = {k: info.context[k] for k in ("study", "factor", "level") if info.context.get(k) is not None}
    for k, v in info.params().items():
        if v is None:
            continue
        values[k] = json.dumps(v) if isinstance(v, (list, tuple, dict)) else v
    return {k: (str(v) if not isinstance(v, (bool, int, float, str)) else v) for k, v in values.items()}


def session_end(status: str):
    """The hparams plugin's end-of-session summary with `status` (a tensorboard api_pb2.Status name)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status),
                                                        end_time_secs=time.time()),
        version=metadata.PLUGIN_DATA_VERSION)
    smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                 content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=smd)])


def check_installed() -> None:
    """UserError naming the install command when TensorBoard is missing."""
    require("tensorboard", "tensorboard", "track.tensorboard")


class TensorBoardTracker:
    """Writes one run's event files. `replace=True` (the backfill) deletes earlier event files of the
    directory first, so an export is the same however often it is repeated."""

    name = "tensorboard"

    def __init__(self, info: RunInfo, log_dir: str | Path | None = None, replace: bool = False,
                 root: str | Path | None = None):
        """`log_dir` (default RUN/tensorboard/) must stay inside `root` (default the run directory)
        with no symbolic link below it: the backfill deletes event files there."""
        self.info = info
        self.root = Path(root) if root is not None else None
        self.log_dir = Path(log_dir) if log_dir is not None else info.run_dir / TENSORBOARD_DIR
        self.replace = replace
        self.writer = None
        self.last_step = 0

    def start(self, history: list[dict], resumed: bool) -> None:
        check_installed()
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        if self.root is None:
            writable_run_dir(self.info.run_dir)  # also: a study's run folder that is itself a link
        check_tree(within(self.root or self.info.run_dir, self.log_dir, "directory"), "TensorBoard directory")
        if self.replace:
            for f in self.log_dir.glob(EVENT_FILE_GLOB):
                if f.is_file() and not f.is_symlink():
                    f.unlink()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=1)
        metrics = {FINAL_PREFIX + m: 0.0 for m in HEADLINE_METRICS}
        metrics.update({m: 0.0 for m in LIVE_METRICS})
        exp, ssi, _ = hparams(hparam_values(self.info), metrics)
        fw = self.writer._get_file_writer()  # the public add_hparams would open a sub-run of its own
        fw.add_summary(exp)
        fw.add_summary(ssi)
        for row in history:
            self._scalars(row)
        self.writer.flush()

    def _scalars(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, value in epoch_metrics(row).items():
            self.writer.add_scalar(scalar_tag(key), value, step)
        self.last_step = max(self.last_step, step)

    def log_epoch(self, row: dict) -> None:
        self._scalars(row)
        self.writer.flush()

    def finish(self, summary: dict) -> None:
        step = int(summary.get("epochs_run") or self.last_step)
        for key, value in final_metrics(summary).items():
            self.writer.add_scalar(FINAL_PREFIX + key, value, step)
        confusion = read_confusion(self.info.run_dir / CONFUSION_FILE)
        if confusion is not None:
            self.writer.add_image(CONFUSION_TAG, figure_rgb(confusion_figure(*confusion)), step,
                                  dataformats="HWC")
        status = SESSION_STATUS.get(str(summary.get("status")), "STATUS_UNKNOWN")
        self.writer._get_file_writer().add_summary(session_end(status))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
