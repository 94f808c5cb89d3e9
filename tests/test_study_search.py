"""Optuna search: trials in their own run directories, pruning through on_epoch, a killed
coordinator's RUNNING trials retried (resuming their run directory), and resumption by rerunning."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from vitlab.errors import UserError
from vitlab.io import read_jsonl
from vitlab.study import open_index, results_rows, summary_table
from vitlab.study.search import (ATTR_RETRY_OF, ATTR_RUN_ID, JOURNAL_FILE, make_pruner, objective_value,
                                 open_storage, run_search)
from vitlab.study.optuna_glue import PruneHook

SPEC = {
    "name": "tiny_search",
    "base": {
        "device": "cpu",
        "data": {"name": "synthetic", "synthetic_train": 400, "synthetic_test": 200, "val_fraction": 0.2},
        "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
        "sched": {"warmup_epochs": 1},
        "train": {"epochs": 3, "batch_size": 64, "eval_batch_size": 200, "threads": 1},
    },
    "space": {"optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
              "model.attn_norm": {"choices": ["softmax", "cosine"]}},
    "objective": "val_top1",
    "pruner": {"startup_trials": 2, "warmup_epochs": 1},
}


def kill_coordinator_once(cfg, out_dir, resume=True, on_epoch=None, progress=None, context=None):
    """The real trainer; the first time any trial of the study reaches epoch 2, it SIGKILLs the
    coordinator (its parent process) - a deterministic mid-run crash."""
    from vitlab.training import run_training

    marker = Path(out_dir).parent.parent / "killed-once"

    def hook(epoch, row):
        stop = on_epoch(epoch, row) if on_epoch else False
        if epoch == 2 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getppid(), signal.SIGKILL)
        return stop

    return run_training(cfg, out_dir, resume=resume, on_epoch=hook, progress=progress, context=context)


def _trials(out: Path):
    study = optuna.load_study(study_name="tiny_search", storage=open_storage(out / JOURNAL_FILE))
    return study.get_trials(deepcopy=False)


def test_killed_search_resumes_its_running_trials_and_extends(tmp_path):
    spec = tmp_path / "search.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    out = tmp_path / "search"
    code = (f"from test_study_search import kill_coordinator_once as t; from vitlab.study.search import run_search; "
            f"run_search({str(spec)!r}, {str(out)!r}, trials=3, workers=2, progress=False, trainer=t)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    stale = [t for t in _trials(out) if t.state == TrialState.RUNNING]
    assert stale, "the kill left no RUNNING trial"
    stale_dirs = {t.user_attrs[ATTR_RUN_ID] for t in stale}

    result = run_search(spec, out, trials=3, workers=2, progress=False, trainer=kill_coordinator_once)
    assert result.finished == 3 and result.ok, result.describe()
    trials = _trials(out)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert {t.number for t in failed} == {t.number for t in stale}  # the stale ones, marked failed
    retries = [t for t in trials if ATTR_RETRY_OF in t.user_attrs]
    assert {t.user_attrs[ATTR_RETRY_OF] for t in retries} == {t.number for t in stale}
    # each retry resumed the run directory of its trial: same directory, every epoch exactly once
    assert {t.user_attrs[ATTR_RUN_ID] for t in retries} == stale_dirs
    for t in finished:
        rows = read_jsonl(out / "runs" / t.user_attrs[ATTR_RUN_ID] / "metrics.jsonl")
        summary = json.loads((out / "runs" / t.user_attrs[ATTR_RUN_ID] / "summary.json").read_text())
        assert [r["epoch"] for r in rows] == list(range(1, summary["epochs_run"] + 1))
        # the pruner saw every epoch (a retry inherits the reports of the epochs it resumed after)
        assert t.intermediate_values == {r["epoch"]: pytest.approx(r["val_top1"]) for r in rows}
        if t.state == TrialState.COMPLETE:
            assert summary["status"] == "completed" and t.value == pytest.approx(summary["val_top1"])
        else:
            assert summary["status"] == "pruned"

    # one index row per trial, labelled by the Optuna number of the trial (not of its retries)
    labels = [f"trial {t.number}" for t in trials if ATTR_RUN_ID in t.user_attrs and ATTR_RETRY_OF not in t.user_attrs]
    assert len(labels) == 3
    index = open_index(out)
    assert index.meta()["kind"] == "search" and index.meta()["factors"] == {"search": labels}
    assert [r.level_label for r in index.runs()] == labels
    assert all(r.factor == "search" and r.status in ("completed", "pruned") for r in index.runs())
    assert set(index.runs()[0].level) == {"optim.lr", "model.attn_norm"}
    index.close()
    assert len(results_rows(out, where="status == 'completed' or status == 'pruned'")) == 3
    assert "best trials by val_top1" in summary_table(out)

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")}
    more = run_search(spec, out, trials=4, workers=2, progress=False)
    assert more.finished == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # earlier trials were not touched
    assert len(open_index(out).runs()) == 4


def test_pruning_hook_reports_to_optuna_and_asks_the_median_pruner(tmp_path):
    path = tmp_path / JOURNAL_FILE
    pruner_cfg = {"name": "median", "startup_trials": 1, "warmup_epochs": 0}
    study = optuna.create_study(study_name="s", storage=open_storage(path), direction="maximize",
                                pruner=make_pruner(pruner_cfg))
    good = study.ask()
    for epoch in (1, 2):
        good.report(0.8, epoch)
    study.tell(good, 0.8)
    hooks = []
    for _ in range(2):
        trial = study.ask()
        hooks.append(PruneHook(storage=str(path), study_name="s", trial_id=trial._trial_id,
                               metric="val_top1", pruner=pruner_cfg).open())
    assert hooks[0](1, {"val_top1": 0.9}) is False  # better than the completed trial at epoch 1: go on
    assert hooks[1](1, {"val_top1": 0.1}) is True  # worse: prune
    assert study.trials[2].intermediate_values == {1: 0.1}


def test_objective_value_and_bad_arguments(tmp_path):
    assert objective_value({"val_top1": 0.5}, [], "val_top1") == 0.5
    rows = [{"epoch": 1, "val_f1_macro": 0.2}, {"epoch": 2, "val_f1_macro": 0.3}]
    assert objective_value({"best_epoch": 1}, rows, "val_f1_macro") == 0.2
    assert objective_value({"val_top1": float("nan")}, [], "val_top1") is None
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    with pytest.raises(UserError, match="--trials"):
        run_search(spec, tmp_path / "o", trials=0)
    study_spec = tmp_path / "study.yaml"
    study_spec.write_text(yaml.safe_dump({"name": "x", "base": {}, "vary": {"train.epochs": [1]}}))
    with pytest.raises(UserError, match="needs a space: section"):
        run_search(study_spec, tmp_path / "o", trials=1)
    bad = dict(SPEC, space={"model.num_heads": {"choices": [2, 3]}})
    spec.write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError, match=r"space.model.num_heads=3: model.num_heads: 3 heads do not divide"):
        run_search(spec, tmp_path / "o", trials=1)
    assert not (tmp_path / "o").exists()
