"""vitlab.metrics is the one owner of the metrics' facts: the trainer, the spec, the config, the report and
the results table read them from it, and the table agrees with what a run writes."""
from __future__ import annotations

import dataclasses

import pytest

import vitlab
from vitlab import metrics
from vitlab.config import TrainConfig, load_config
from vitlab.metrics import METRICS, metric_info
from vitlab.report import tables
from vitlab.study import query
from vitlab.study import spec as specmod
from vitlab.training.loop import RunState


def test_every_metric_has_known_facts():
    for name, m in METRICS.items():
        assert m.name == name and m.split in metrics.SPLITS and m.direction in metrics.DIRECTIONS
        assert m.valid[0] < m.valid[1] and m.decimals >= 0 and m.scale > 0
        if m.split in metrics.DATA_SPLITS:
            assert name.startswith(m.split + "_")
        if m.unit == "%":
            assert m.valid == metrics.RANGE_PERCENT and m.scale == 100.0


def test_directions_and_units():
    assert {n for n, m in METRICS.items() if m.split == "val" and m.direction == "lower"} == {"val_loss", "val_ece"}
    assert metrics.lower_is_better("test_ece") and metrics.lower_is_better("params")
    assert not metrics.lower_is_better("val_top1") and not metrics.lower_is_better("epochs_run")
    # a scalar the table does not list (an analysis's) is read from its name's ending
    assert metric_info("corruption_clean_top1").unit == "%" and metric_info("corruption_clean_top1").split == "analysis"
    assert metric_info("attn_max_logit").unit == "" and metric_info("attn_max_logit").higher_is_better
    assert metric_info("val_top1").format(0.91234) == "91.23 %"


def test_the_readers_use_the_table():
    """Monitor choices, objectives, default columns and spec validation all come from the table."""
    monitor = next(f for f in dataclasses.fields(TrainConfig) if f.name == "monitor")
    assert tuple(monitor.metadata["choices"]) == metrics.MONITOR_METRICS
    assert metrics.OBJECTIVE_METRICS == ("val_top1", "val_top5", "val_loss", "val_precision_macro",
                                         "val_recall_macro", "val_f1_macro", "val_ece")
    assert all(specmod.is_metric(n) for n in METRICS) and not specmod.is_metric("val_top7")
    assert specmod.Objective(metric="val_loss").direction == "minimize"
    assert specmod.Objective(metric="val_f1_macro").direction == "maximize"
    rows = {m.key: m for m in tables.table_metrics()}
    assert rows["train_minutes"].unit == METRICS["train_time_s"].unit == "min"
    assert rows["test_ece"].higher_is_better is False and rows["test_top1"].valid == metrics.RANGE_PERCENT
    assert tables.metric_for("val_loss").higher_is_better is False
    assert query._percent("val_ece") and not query._percent("params")


@pytest.mark.parametrize("monitor, values, best", [("val_loss", [0.9, 0.5, 0.7], 0.5), ("val_top1", [0.2, 0.6, 0.4], 0.6)])
def test_the_trainer_keeps_the_better_value_in_the_table_s_direction(monitor, values, best):
    st = RunState()
    for v in values:
        if st.improved(v, monitor):
            st.best_value = v
    assert st.best_value == best


def test_the_table_matches_what_a_run_writes(tmp_path):
    """A real (tiny) run's summary.json has every table metric, and every split metric it has is in the table."""
    cfg = load_config(None, ["data.name=synthetic", "data.synthetic_train=96", "data.synthetic_test=32",
                             "data.val_fraction=0.25", "model.name=vit_nano", "model.dim=16", "model.depth=1",
                             "model.num_heads=2", "train.batch_size=32", "train.epochs=1", "train.progress=false",
                             "train.threads=1"])
    summary = vitlab.train(cfg, tmp_path / "run")
    numeric = {k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert set(METRICS) - {"train_flops"} <= numeric  # train_flops: only a FLOP-budgeted run has it
    per_split = {k for k in numeric if k.startswith(tuple(f"{s}_" for s in metrics.DATA_SPLITS))}
    # the attention-entropy probe of the validation batch is a training curve, not a result
    assert {k for k in per_split if "attn_entropy" not in k} <= set(METRICS)
