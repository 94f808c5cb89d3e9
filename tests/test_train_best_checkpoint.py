"""The final test evaluation uses the best-validation checkpoint, not the last weights: a run whose
monitor peaks at epoch 1 of 3 reports the test metrics of epoch 1's weights."""
from __future__ import annotations

import pytest
import torch

from vitlab.config import load_config
from vitlab.rundir import BEST_CHECKPOINT, checkpoint_path
from vitlab.training import loop, run_training

@pytest.fixture(scope="module")
def tiny(tiny_run) -> list[str]:
    """The shared tiny run on 200 images for 3 epochs at a high learning rate."""
    return tiny_run("data.synthetic_train=200", "data.synthetic_test=100", "train.epochs=3", "optim.lr=1e-2",
                    "sched.warmup_epochs=0")


def test_test_metrics_come_from_the_best_epoch(tmp_path, monkeypatch, tiny):
    real_evaluate = loop.Trainer.evaluate

    def evaluate(self, x, y, prefix, confusion=False):
        metrics, matrix = real_evaluate(self, x, y, prefix, confusion)
        if prefix == "val":  # a monitor that peaks at epoch 1 and only falls afterwards
            metrics["val_top1"] = 1.0 / (self.state.epoch + 1)
        return metrics, matrix

    monkeypatch.setattr(loop.Trainer, "evaluate", evaluate)
    cfg = load_config(None, tiny)
    out = tmp_path / "run"
    summary = run_training(cfg, out)
    assert summary["status"] == "completed" and summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    monkeypatch.undo()

    # Evaluate the test set independently with the weights of epoch 1 (best.pt) and of epoch 3 (last.pt).
    probe = loop.Trainer(cfg, tmp_path / "probe", progress=False)
    results = {}
    for which in (BEST_CHECKPOINT, "last.pt"):
        state = torch.load(checkpoint_path(out, which), weights_only=True)
        probe.model.load_state_dict(state["model"])
        results[which] = probe.evaluate(probe.data.test_x, probe.data.test_y, "test")[0]
    best, last = results[BEST_CHECKPOINT], results["last.pt"]
    assert torch.load(checkpoint_path(out, BEST_CHECKPOINT), weights_only=True)["epoch"] == 1
    assert abs(best["test_loss"] - last["test_loss"]) > 1e-3  # two more epochs moved the weights
    for key in ("test_loss", "test_top1", "test_ece"):
        assert summary[key] == pytest.approx(best[key], rel=1e-6, abs=1e-9), key
    assert summary["test_loss"] != pytest.approx(last["test_loss"], rel=1e-6)
