"""End-to-end training runs on tiny synthetic data: output contract, exact resume, divergence, CLI errors."""
import csv
import json

import pytest
import torch

import vitlab
from vitlab.cli import main
from vitlab.config import load_config
from vitlab.errors import UserError
from vitlab.rundir import RunStatus
from vitlab.io import read_jsonl
from vitlab.training import loop, run_training

TINY = [
    "data.name=synthetic", "data.synthetic_train=320", "data.synthetic_test=120", "data.val_fraction=0.25",
    "model.name=vit_nano", "model.dim=32", "model.depth=2", "model.num_heads=2",
    "train.batch_size=32", "train.eval_batch_size=64", "train.epochs=3", "train.progress=false",
    "train.threads=1", "sched.warmup_epochs=1", "aug.rotation_deg=10", "aug.color_jitter=0.2",
]
TIMING = {"epoch_time_s", "throughput_img_s", "data_time_frac"}
SUMMARY_KEYS = {
    "status", "epochs_run", "best_epoch", "params", "flops", "train_time_s", "throughput_img_s", "train_loss",
    "train_top1", "val_top1", "test_loss", "test_top1", "test_top5", "test_precision_macro",
    "test_recall_macro", "test_f1_macro", "test_ece",
}


def tiny(*extra):
    return load_config(None, TINY + list(extra))


def strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_output_contract(tmp_path):
    out = tmp_path / "run"
    summary = vitlab.train(tiny("train.ema=true"), out)
    assert summary["status"] == "completed"
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["synthetic"] is True and summary["epochs_run"] == 3
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_f1_macro", "val_ece", "lr"):
        assert key in rows[0]
    assert not any(k.startswith("test_") for k in rows[0])  # test is for final numbers only
    assert load_config(out / "config.yaml") == tiny("train.ema=true")
    with open(out / "confusion_test.csv") as f:
        table = list(csv.reader(f))
    k = summary["num_classes"]
    assert len(table) == k + 1 and len(table[0]) == k + 1
    assert sum(int(v) for r in table[1:] for v in r[1:]) == 120
    assert (out / "checkpoints" / "last.pt").exists() and (out / "checkpoints" / "best.pt").exists()
    assert summary["best_epoch"] == max(rows, key=lambda r: r["val_top1"])["epoch"]


def test_resume_after_interrupt_is_exact(tmp_path):
    cfg = tiny("train.epochs=4", "model.dropout=0.1", "aug.mixup_alpha=0.4")
    full = run_training(cfg, tmp_path / "full")

    def stop_after_two(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # as if killed right after epoch 2's checkpoint
        return False

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "cut", on_epoch=stop_after_two)
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 2
    resumed = run_training(cfg, tmp_path / "cut", resume=True)
    assert strip_timing(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == strip_timing(
        read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    for key in SUMMARY_KEYS - TIMING - {"train_time_s"}:
        assert resumed[key] == full[key], key


def test_resume_drops_a_metrics_line_without_checkpoint(tmp_path):
    cfg = tiny("train.epochs=2")
    run_training(cfg, tmp_path / "ref")
    reference = read_jsonl(tmp_path / "ref" / "metrics.jsonl")

    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "r", on_epoch=stop)
    # A crash after epoch 2's metrics line but before its checkpoint leaves a line the checkpoint lacks.
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({**reference[1], "val_top1": -1.0}) + "\n")
    run_training(cfg, tmp_path / "r")
    rows = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert strip_timing(rows) == strip_timing(reference)


def test_completed_run_is_not_retrained(tmp_path):
    cfg = tiny("train.epochs=1")
    first = run_training(cfg, tmp_path / "r")
    mtime = (tmp_path / "r" / "metrics.jsonl").stat().st_mtime_ns
    again = run_training(cfg, tmp_path / "r", resume=True)
    assert again == json.loads(json.dumps(first))
    assert (tmp_path / "r" / "metrics.jsonl").stat().st_mtime_ns == mtime
    with pytest.raises(UserError, match="--resume"):
        run_training(cfg, tmp_path / "r", resume=False)
    with pytest.raises(UserError, match="different config"):
        run_training(tiny("train.epochs=2"), tmp_path / "r")


def test_divergence_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = loop.soft_cross_entropy

    def nan_in_epoch_two(logits, target, smoothing):
        calls["n"] += 1
        loss = real(logits, target, smoothing)
        return loss * float("nan") if calls["n"] > 7 else loss  # 7 steps per epoch at this size

    monkeypatch.setattr(loop, "soft_cross_entropy", nan_in_epoch_two)
    summary = run_training(tiny("train.batch_size=32"), tmp_path / "r")
    assert summary["status"] == "diverged" and "non-finite loss at epoch 2" in summary["error"]
    assert summary["epochs_run"] == 1
    ck = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["run_state"]["epoch"] == 1
    assert "test_top1" in summary  # the best checkpoint (epoch 1) was still evaluated
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "diverged"


def test_early_stopping(tmp_path):
    # lr 0 cannot improve after epoch 1: patience 2 stops after epoch 3 of 10.
    summary = run_training(tiny("train.epochs=10", "train.patience=2", "optim.lr=1e-12", "sched.name=constant",
                                "sched.warmup_epochs=0", "train.monitor=val_loss"), tmp_path / "r")
    assert summary["status"] == "completed" and summary["epochs_run"] == 3 and summary["best_epoch"] == 1


def test_pruned_by_callback(tmp_path):
    summary = run_training(tiny(), tmp_path / "r", on_epoch=lambda e, row: e == 1)
    assert summary["status"] == "pruned" and summary["epochs_run"] == 1


def test_cli_train_and_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "train.epochs=1"]) == 0
    capsys.readouterr()
    cases = [
        (["train", "--out", str(out), *TINY, "train.epochs=1"], "--resume"),       # would overwrite
        (["train", "--out", str(tmp_path / "x"), *TINY, "model.num_heads=3"], "model.num_heads"),
        (["train", "--out", str(tmp_path / "x"), "optim.lrr=1"], "did you mean 'lr'"),
        (["train", "--out", str(tmp_path / "x"), "data.name=cifar100", f"data.root={tmp_path}",
          "data.download=false"], "cifar-100-python"),
        (["train", "--out", "/proc/vitlab-cannot-write", *TINY], "not writable"),
        (["train", "--out", str(tmp_path / "x"), str(tmp_path / "missing.yaml")], "no such file"),
        (["train", *TINY], "--out"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x" / "config.yaml").exists()
    assert len(read_jsonl(out / "metrics.jsonl")) == 1  # untouched


def test_cli_resume_reads_the_saved_config(tmp_path, capsys):
    """`--resume` needs no retyped overrides; execution settings may change, anything else is refused
    with one line, and so is a missing or empty directory."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "train.epochs=1"]) == 0
    saved = (out / "config.yaml").read_text()
    assert main(["train", "--out", str(out), "--resume", "train.threads=2", "--quiet"]) == 0   # nothing retyped
    assert main(["train", *TINY, "--out", str(out), "train.epochs=1", "--resume"]) == 0       # all retyped
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(out), "optim.lr=0.5"], "optim.lr would make another run"),
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path / "empty")], "holds no run"),
    ]
    for (where, *overrides), fragment in cases:
        assert main(["train", "--out", where, "--resume", *overrides]) == 2, where
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err, err
    assert (out / "config.yaml").read_text() == saved
    assert not (tmp_path / "missing").exists() and not any((tmp_path / "empty").iterdir())


def test_ctrl_c_marks_the_run_interrupted_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def stop(epoch, row):
        raise KeyboardInterrupt

    cfg = tiny("train.epochs=2")
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "r", on_epoch=stop)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and not RunStatus("interrupted").final
    assert run_training(cfg, tmp_path / "r", resume=True)["status"] == "completed"  # it resumes

    import vitlab.cli as cli

    def interrupted(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_train", interrupted)
    monkeypatch.setattr(cli, "cmd_study", interrupted)
    assert main(["train", "--out", str(tmp_path / "x")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted — rerun the same command with --resume to continue"
    assert main(["study", "spec.yaml", "--out", str(tmp_path / "s")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted — rerun the same command to resume"


def test_ema_averages_parameters_and_takes_the_live_models_normalization_statistics(tmp_path):
    """Averaged BatchNorm statistics do not describe averaged weights (a MobileViT evaluated with them
    scored chance on Fashion-MNIST): the EMA keeps the live model's buffers, and its parameters are the
    warmed-up exponential average, checked against a naive per-step average."""
    cfg = load_config(None, ["data.name=synthetic", "data.synthetic_train=64", "model.name=mobilevit_xxs",
                             "model.level=C1", "train.batch_size=16", "train.ema=true", "train.ema_decay=0.5",
                             "train.amp=none"])
    t = loop.Trainer(cfg, tmp_path / "run", progress=False)
    naive = {k: v.detach().clone() for k, v in t.model.named_parameters()}
    t.model.train()
    for step in range(3):
        x, target = t.train_batch(torch.arange(16 * step, 16 * (step + 1)))
        t.optimize(t.forward_loss(x, target)[0])
        decay = min(0.5, (1 + step) / (loop.EMA_WARMUP + step))  # step = the updates before this one
        for k, v in t.model.named_parameters():  # the first update copies, each later one averages
            naive[k] = v.detach().clone() if step == 0 else decay * naive[k] + (1 - decay) * v.detach()
    live, ema = dict(t.model.named_buffers()), dict(t.ema.module.named_buffers())
    assert any(k.endswith("running_var") for k in live)
    for k in live:
        assert torch.equal(ema[k], live[k]), k
    for k, v in t.ema.module.named_parameters():
        torch.testing.assert_close(v, naive[k], rtol=1e-6, atol=1e-7)
