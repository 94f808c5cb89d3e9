"""FLOP budgets: the per-step count against a naive analytic one, the same steps whatever the threads or
the load, runs that leave no counting trace, resume exactly and refuse bad budgets in one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vitlab.cli import main
from vitlab.config import load_config
from vitlab.identity import config_hash, identity_dict
from vitlab.errors import ConfigError, UserError
from vitlab.io import read_jsonl
from vitlab.training import loop, run_training
from vitlab.training.flops import run_step_flops, steps_for_flops, train_step_flops

from realdata import real_data_root
from test_train_budget import RESULT_KEYS
from test_train_run import TINY, strip_timing, tiny

BUDGET = 4.0e9  # FLOPs: 12 steps of the tiny config (320,950,272 FLOPs per step)


def naive_mlp_step_flops(batch: int, d_in: int, hidden: int, classes: int) -> int:
    """Forward 2·B·(fan-in · fan-out) per linear layer; backward 2·B·(in·out) for the weight gradient of
    each layer, and as much again for the input gradient of every layer but the first (the images need
    no gradient): the 6·N·params rule of thumb, less the first layer's input gradient."""
    first, second = d_in * hidden, hidden * classes
    return 2 * batch * (first + second) + 2 * batch * (first + second) + 2 * batch * second


def test_step_flops_of_an_mlp_match_the_analytic_count():
    b, c, size, hidden, classes = 8, 3, 4, 16, 10
    with torch.device("meta"):
        mlp = nn.Sequential(nn.Flatten(), nn.Linear(c * size * size, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    assert train_step_flops(mlp, b, c, size, classes) == naive_mlp_step_flops(b, c * size * size, hidden, classes)


def test_step_flops_of_a_depthwise_convolution_count_its_groups():
    """A depthwise convolution's weight gradient costs what its forward costs (torch's own formula counts
    it C times over); a 1×1 convolution before it makes both of its gradients count."""
    b, c, size, classes = 4, 8, 6, 10
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                            nn.Flatten(), nn.Linear(c * size * size, classes, bias=False))
    pointwise = 2 * b * c * c * size * size
    depthwise = 2 * b * c * 9 * size * size
    linear = 2 * b * c * size * size * classes
    expected = 2 * pointwise + 3 * depthwise + 3 * linear  # the first layer has no input gradient
    assert train_step_flops(net, b, c, size, classes) == expected


def test_steps_for_flops_floor_and_refusal():
    assert steps_for_flops(10.0, 3) == 3 and steps_for_flops(3.0, 3) == 1
    with pytest.raises(UserError, match="less than one training step"):
        steps_for_flops(2.9, 3)


def _count(threads: int) -> int:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = tiny()
        return run_step_flops(cfg.model, 10, 3, 32, cfg.train.batch_size)
    finally:
        torch.set_num_threads(before)


def test_step_count_is_the_same_for_any_threads_and_load(tmp_path):
    quiet_1, quiet_2 = _count(1), _count(2)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = _count(2)
        summary = run_training(tiny("train.budget_flops=4e9", "train.threads=2"), tmp_path / "loaded")
    finally:
        burner.kill()
        burner.wait()
    assert quiet_1 == quiet_2 == loaded > 0
    quiet = run_training(tiny("train.budget_flops=4e9", "train.threads=1"), tmp_path / "quiet")
    assert summary["steps"] == quiet["steps"] == int(BUDGET // summary["train_flops_per_step"]) == 12
    assert summary["train_flops"] == 12 * summary["train_flops_per_step"] <= BUDGET
    assert summary["budget_flops"] == BUDGET and summary["train_cpu_s"] > 0 and summary["train_time_s"] > 0


def test_flop_budgeted_run_equals_its_fixed_step_count(tmp_path):
    """Counting leaves no trace: no random number drawn, no weight touched."""
    cfg = ["model.dropout=0.1", "aug.mixup_alpha=0.4", "train.ema=true"]
    budgeted = run_training(tiny(*cfg, "train.budget_flops=4e9"), tmp_path / "b")
    fixed = run_training(tiny(*cfg, f"train.steps={budgeted['steps']}"), tmp_path / "s")
    assert strip_timing(read_jsonl(tmp_path / "b" / "metrics.jsonl")) == strip_timing(
        read_jsonl(tmp_path / "s" / "metrics.jsonl"))
    for key in RESULT_KEYS:
        assert budgeted[key] == fixed[key], key
    assert "budget_flops" not in fixed and "train_flops" not in fixed


def test_flop_budgeted_run_resumes_exactly_without_recounting(tmp_path, monkeypatch):
    cfg = tiny("train.budget_flops=4e9", "model.dropout=0.1", "aug.mixup_alpha=0.4")

    def stop_after_one(epoch, row):
        raise KeyboardInterrupt  # as if killed right after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "cut", on_epoch=stop_after_one)

    def no_recount(*a, **k):
        raise AssertionError("a resumed run must keep its recorded step count")

    monkeypatch.setattr(loop, "run_step_flops", no_recount)
    resumed = run_training(cfg, tmp_path / "cut", resume=True)
    monkeypatch.undo()
    whole = run_training(cfg, tmp_path / "whole")
    assert resumed["steps"] == whole["steps"] == 12 and resumed["budget_flops"] == BUDGET
    assert resumed["train_flops_per_step"] == whole["train_flops_per_step"]
    assert read_jsonl(tmp_path / "cut" / "metrics.jsonl") != []
    assert strip_timing(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == strip_timing(
        read_jsonl(tmp_path / "whole" / "metrics.jsonl"))
    for key in RESULT_KEYS:
        assert resumed[key] == whole[key], key
    a = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=False)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["run_state"]["budget"] == b["run_state"]["budget"] and a["run_state"]["total_steps"] == 12


@pytest.mark.parametrize("value", ["0", "-1e9", "nan", ".inf", "-.inf"])
def test_bad_flop_budget_values(value):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"train.budget_flops={value}"])
    assert e.value.field == "train.budget_flops"


@pytest.mark.parametrize("other", ["train.steps=10", "train.budget_minutes=1"])
def test_flop_budget_is_exclusive_with_steps_and_time_budgets(other):
    with pytest.raises(ConfigError, match="not both") as e:
        load_config(None, ["train.budget_flops=1e12", other])
    assert e.value.field == "train.budget_flops"
    with pytest.raises(ConfigError, match="milestone_fractions"):
        load_config(None, ["train.budget_flops=1e12", "sched.name=step", "sched.milestones=[2]"])


@pytest.mark.parametrize("value,message", [
    ("nan", "train.budget_flops: must be a finite number"),
    ("0", "train.budget_flops: must be a finite number > 0"),
    ("-5", "train.budget_flops: must be a finite number > 0"),
    ("1e6", "train.budget_flops: 1e+06 FLOPs is less than one training step of this model"),
])
def test_cli_refuses_a_bad_flop_budget_in_one_line_before_writing(tmp_path, capsys, value, message):
    out = tmp_path / "x"
    assert main(["train", "--out", str(out), *TINY, f"train.budget_flops={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_flop_budget_is_part_of_the_run_identity_only_when_set():
    plain = load_config(None, [])
    assert "budget_flops" not in identity_dict(plain)["train"]  # older run IDs hold
    a, b = load_config(None, ["train.budget_flops=3e15"]), load_config(None, ["train.budget_flops=3.0e+15"])
    assert config_hash(a) == config_hash(b) != config_hash(plain)
    assert "budget_clock" not in identity_dict(a)["train"]


ROOT = Path(__file__).resolve().parents[1]
TRAIN_DOC = ROOT / "docs" / "train.md"  # where the FLOP-budget command is documented
README_FLOP_COMMAND = ("vitlab train studies/base/fashion_mnist.yaml model.name=mobilevit_xxs train.budget_flops=5.0e+12 "
                       "--out runs/f")


def test_readme_flop_command_buys_the_steps_of_the_shipped_recipe():
    """The documented FLOP-budget command, read from docs/train.md: mobilevit_xxs on the Fashion-MNIST recipe
    trains ⌊5e12 / FLOPs per step⌋ = 502 steps on any machine (counted here without training)."""
    assert README_FLOP_COMMAND in TRAIN_DOC.read_text(encoding="utf-8")
    args = README_FLOP_COMMAND.split()[2:]
    cfg = load_config(ROOT / args[0], args[1:3])
    per_step = run_step_flops(cfg.model, 10, 1, 28, cfg.train.batch_size)
    assert steps_for_flops(cfg.train.budget_flops, per_step) == 502


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 502 MobileViT steps and 16,000 evaluated images: minutes on a CPU
def test_readme_flop_command_runs_verbatim(tmp_path):
    root = real_data_root("fashion-mnist")
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    env = {**os.environ, "VITLAB_DATA_ROOT": str(root), "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "vitlab", *README_FLOP_COMMAND.split()[1:]]
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    summary = json.loads((tmp_path / "runs" / "f" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 502 and summary["train_flops"] <= 5.0e12
