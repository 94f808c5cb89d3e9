"""Fixed step counts and time budgets: the step solver, config checks, schedules over steps, and
budgeted runs that leave no calibration trace, reproduce with train.steps=N and resume exactly."""
import math

import pytest
import torch

from vitlab.cli import main
from vitlab.config import ScheduleConfig, load_config
from vitlab.errors import ConfigError
from vitlab.io import read_jsonl
from vitlab.training import budget, loop, run_training
from vitlab.training.checkpoint import capture_rng
from vitlab.training.schedules import make_scheduler

from test_train_run import SUMMARY_KEYS, TIMING, TINY, strip_timing, tiny

SPE = 7  # steps per epoch of the tiny config: 240 training images, batch 32
RESULT_KEYS = SUMMARY_KEYS - TIMING - {"train_time_s"}


def naive_steps_within_budget(seconds, step_s, overhead_s, spe):
    n = 0
    while (n + 1) * step_s + math.ceil((n + 1) / spe) * overhead_s <= seconds:
        n += 1
    return n


@pytest.mark.parametrize("seconds,step_s,overhead_s,spe", [
    (100.0, 1.0, 0.0, 7), (100.0, 1.0, 5.0, 7), (100.0, 0.3, 12.0, 50), (3.0, 1.0, 5.0, 7),
    (60.0, 0.7, 2.5, 1), (10.0, 0.01, 1.0, 300), (41.0, 1.0, 3.0, 10), (0.0, 1.0, 0.0, 4),
])
def test_steps_within_budget_matches_brute_force(seconds, step_s, overhead_s, spe):
    assert budget.steps_within_budget(seconds, step_s, overhead_s, spe) == \
        naive_steps_within_budget(seconds, step_s, overhead_s, spe)


def test_calibration_time_is_a_bounded_share_of_the_budget():
    assert budget.calibration_seconds(60) == budget.CALIBRATION_MIN_SECONDS
    assert budget.calibration_seconds(600) == pytest.approx(budget.CALIBRATION_SHARE * 600)
    assert budget.calibration_seconds(10 * 3600) == budget.CALIBRATION_MAX_SECONDS


@pytest.mark.parametrize("override,field", [
    ("train.budget_minutes=nan", "train.budget_minutes"),
    ("train.budget_minutes=.inf", "train.budget_minutes"),
    ("train.budget_minutes=0", "train.budget_minutes"),
    ("train.budget_minutes=-2", "train.budget_minutes"),
    ("train.steps=0", "train.steps"),
    ("train.steps=2.5", "train.steps"),
])
def test_bad_budget_and_steps_values(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.field == field


def test_steps_and_budget_exclusive_and_milestones_must_be_fractions():
    with pytest.raises(ConfigError, match="not both"):
        load_config(None, ["train.steps=10", "train.budget_minutes=1"])
    with pytest.raises(ConfigError, match="milestone_fractions"):
        load_config(None, ["train.budget_minutes=1", "sched.name=step", "sched.milestones=[2]"])
    with pytest.raises(ConfigError, match="milestone_fractions"):
        load_config(None, ["sched.milestone_fractions=[0.5, 1.0]"])
    with pytest.raises(ConfigError, match="not both"):
        load_config(None, ["sched.milestone_fractions=[0.5]", "sched.milestones=[3]"])
    for bad in ("1.0", "-0.1", "nan"):
        with pytest.raises(ConfigError, match="sched.warmup_fraction"):
            load_config(None, [f"sched.warmup_fraction={bad}"])
    cfg = load_config(None, ["train.steps=10", "sched.name=step", "sched.milestone_fractions=[0.5, 0.8]"])
    assert cfg.train.steps == 10 and cfg.sched.milestone_fractions == [0.5, 0.8]


def test_cli_rejects_bad_budget_in_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "train.budget_minutes=nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.budget_minutes: must be a finite number" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def naive_lr(step, base, total, spe, name, warmup_epochs=5.0, warmup_fraction=None, min_lr=0.0, fractions=(),
             gamma=0.1):
    warm = min(round(warmup_epochs * spe), total) if warmup_fraction is None else round(warmup_fraction * total)
    if step < warm:
        return base * (step + 1) / warm
    if name == "cosine":
        t = (step - warm) / max(1, total - warm)
        return min_lr + (base - min_lr) * (1 + math.cos(math.pi * min(t, 1))) / 2
    if name == "step":
        return base * gamma ** len([f for f in fractions if step >= round(f * total)])
    return base


@pytest.mark.parametrize("kw", [
    dict(name="cosine", warmup_epochs=1, min_lr=1e-5),
    dict(name="cosine", warmup_epochs=9),  # longer than the run: warmup is the whole run
    dict(name="step", warmup_epochs=0.5, fractions=[0.3, 0.75], gamma=0.5),
    dict(name="cosine", warmup_epochs=2, warmup_fraction=0.1, min_lr=1e-4),  # the fraction wins
    dict(name="constant", warmup_fraction=0.0),
])
def test_schedule_over_a_fixed_step_count(kw):
    base, spe, total = 1e-3, 7, 23  # 4 epochs, the last one partial
    fields = {("milestone_fractions" if k == "fractions" else k): v for k, v in kw.items()}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = make_scheduler(opt, ScheduleConfig(**fields), base, 30, spe, total_steps=total)
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(naive_lr(step, base, total, spe, **kw), rel=1e-9)
        opt.step()
        sched.step()


def test_fixed_steps_give_a_partial_last_epoch(tmp_path):
    summary = run_training(tiny("train.steps=17"), tmp_path / "r")
    assert summary["status"] == "completed" and summary["steps"] == 17 and summary["steps_per_epoch"] == SPE
    assert summary["epochs_run"] == 3 and "budget_minutes" not in summary
    ck = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)
    assert ck["scheduler"]["last_epoch"] == 17 and ck["run_state"]["total_steps"] == 17
    assert len(read_jsonl(tmp_path / "r" / "metrics.jsonl")) == 3


@pytest.fixture
def quick_calibration(monkeypatch):
    """Calibrate briefly and cap the solved step count at 17, so that budgeted runs are short and
    deterministic while the real calibration runs."""
    monkeypatch.setattr(budget, "CALIBRATION_MIN_SECONDS", 0.05)
    monkeypatch.setattr(budget, "CALIBRATION_SHARE", 0.0)
    real = budget.steps_within_budget
    monkeypatch.setattr(budget, "steps_within_budget", lambda *a: min(17, real(*a)))


def test_calibration_leaves_no_trace(tmp_path, quick_calibration):
    cfg = tiny("train.budget_minutes=2", "train.ema=true", "model.dropout=0.1", "aug.mixup_alpha=0.4")
    trainer = loop.Trainer(cfg, tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    rng_before = capture_rng(trainer.generators)
    cal = budget.calibrate(trainer, seconds=0.05)
    assert cal.step_s > 0 and cal.eval_image_s > 0 and cal.checkpoint_s > 0 and cal.probe_s > 0
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in trainer.ema.state_dict().items():
        assert torch.equal(v, ema_before[k]), k
    assert trainer.optimizer.state_dict()["state"] == {}
    rng_after = capture_rng(trainer.generators)
    assert torch.equal(rng_after["torch"], rng_before["torch"])
    for name in trainer.generators:
        assert torch.equal(rng_after["generators"][name], rng_before["generators"][name])
    assert not list(trainer.ckpt_dir.glob("*.pt"))


def test_budgeted_run_is_reproduced_by_its_step_count(tmp_path, quick_calibration):
    cfg = ["train.budget_minutes=2", "model.dropout=0.1", "aug.mixup_alpha=0.4", "train.ema=true"]
    budgeted = run_training(tiny(*cfg), tmp_path / "b")
    assert budgeted["status"] == "completed" and budgeted["budget_minutes"] == 2.0
    assert budgeted["steps"] == 17 and budgeted["epochs_run"] == 3
    assert budgeted["budget_step_s"] > 0 and budgeted["budget_calibration_s"] > 0
    fixed = run_training(tiny(*cfg, "train.budget_minutes=null", f"train.steps={budgeted['steps']}"), tmp_path / "s")
    assert strip_timing(read_jsonl(tmp_path / "b" / "metrics.jsonl")) == strip_timing(
        read_jsonl(tmp_path / "s" / "metrics.jsonl"))
    for key in RESULT_KEYS:
        assert budgeted[key] == fixed[key], key


def test_budgeted_run_resumes_exactly_without_recalibrating(tmp_path, quick_calibration, monkeypatch):
    cfg = tiny("train.budget_minutes=2", "model.dropout=0.1", "aug.mixup_alpha=0.4")

    def stop_after_one(epoch, row):
        raise KeyboardInterrupt  # as if killed right after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "cut", on_epoch=stop_after_one)

    def no_recalibration(*a, **k):
        raise AssertionError("a resumed run must keep its recorded step count")

    monkeypatch.setattr(loop, "plan_budget", no_recalibration)
    resumed = run_training(cfg, tmp_path / "cut", resume=True)
    assert resumed["steps"] == 17 and resumed["budget_minutes"] == 2.0
    reference = run_training(tiny("model.dropout=0.1", "aug.mixup_alpha=0.4", "train.steps=17"), tmp_path / "ref")
    assert strip_timing(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == strip_timing(
        read_jsonl(tmp_path / "ref" / "metrics.jsonl"))
    for key in RESULT_KEYS:
        assert resumed[key] == reference[key], key


def test_budget_and_steps_are_part_of_the_run_identity_only_when_set():
    from vitlab.identity import config_hash, identity_dict

    plain = identity_dict(load_config(None, []))
    assert "steps" not in plain["train"] and "budget_minutes" not in plain["train"]  # older run IDs hold
    assert "warmup_fraction" not in plain["sched"] and "milestone_fractions" not in plain["sched"]
    a, b = load_config(None, ["train.budget_minutes=7"]), load_config(None, ["train.budget_minutes=7"])
    assert config_hash(a) == config_hash(b) != config_hash(load_config(None, ["train.budget_minutes=8"]))
    assert config_hash(a) != config_hash(load_config(None, []))
    assert identity_dict(load_config(None, ["train.steps=100"]))["train"]["steps"] == 100


def test_cpu_clock_budget(tmp_path, quick_calibration):
    summary = run_training(tiny("train.budget_minutes=2", "train.budget_clock=cpu"), tmp_path / "r")
    assert summary["status"] == "completed" and summary["budget_clock"] == "cpu" and summary["steps"] == 17
    from vitlab.identity import config_hash, identity_dict

    assert config_hash(tiny("train.budget_minutes=2", "train.budget_clock=cpu")) != config_hash(
        tiny("train.budget_minutes=2"))
    assert "budget_clock" not in identity_dict(tiny("train.budget_clock=cpu"))["train"]  # no budget: no effect


def test_cpu_clock_refuses_an_accelerator():
    from types import SimpleNamespace

    from vitlab.errors import UserError

    with pytest.raises(UserError, match="train.budget_clock"):
        budget.plan_budget(SimpleNamespace(device=torch.device("cuda")), 1.0, "cpu")


def test_a_budget_that_fits_no_step_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """Where calibration and evaluation alone outlast the budget, the run refuses in one line instead of
    reporting a 1-step model (which trains nothing and scores chance)."""
    monkeypatch.setattr(budget, "CALIBRATION_MIN_SECONDS", 0.05)
    monkeypatch.setattr(budget, "CALIBRATION_SHARE", 0.0)
    out = tmp_path / "r"
    args = ["train", "--out", str(out), *TINY, "train.budget_minutes=0.0005"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.budget_minutes: 0.0005 wall minutes leave no time to train" in err
    assert not (out / "checkpoints" / "last.pt").exists()
