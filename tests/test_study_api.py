"""`vitlab.Study`: create, run, reopen, results, analyze, report, status and search on tiny synthetic
studies, each call checked against the function the CLI calls."""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect

import pytest

import vitlab
from vitlab.api import NOT_FOR_SEARCH, Study
from vitlab.cli import main
from vitlab.errors import UserError
from vitlab.study import results_rows, run_study
from vitlab.study.runner import RunOptions
from vitlab.study.status import planned_epochs

BASE = {
    "device": "cpu",
    "data": {"name": "synthetic", "synthetic_train": 300, "synthetic_test": 100, "val_fraction": 0.2},
    "model": {"name": "vit_nano", "dim": 16, "depth": 1, "num_heads": 2},
    "sched": {"warmup_epochs": 0},
    "train": {"epochs": 2, "batch_size": 64, "eval_batch_size": 100, "threads": 1},
}
# 2 attention normalizations x 2 seeds = 4 runs of 2 short epochs.
TINY = {"name": "tiny_api", "base": BASE, "vary": {"model.attn_norm": ["softmax", "cosine"]}, "seeds": 2}
TINY_SEARCH = {"name": "tiny_api_search", "base": BASE,
               "space": {"model.attn_norm": {"choices": ["softmax", "cosine"]}}, "objective": "val_top1"}


@pytest.fixture(scope="module")
def done(tmp_path_factory, write_spec) -> Study:
    """The tiny study created, then run by a reopened Study (what a later session does)."""
    base = tmp_path_factory.mktemp("api")
    created = Study.create(write_spec(base, TINY), base / "study", progress=False)
    assert (created.path / "spec.yaml").is_file() and not (created.path / "runs").exists()  # nothing trained yet
    study = Study(base / "study", progress=False)
    result = study.run()
    assert result.ok and result.counts == {"completed": 4}, result
    return study


def test_vitlab_study_is_the_api_object():
    assert vitlab.Study is Study and vitlab.RunOptions is RunOptions
    assert "Study" in vitlab.__all__


def test_a_reopened_study_knows_its_spec_and_a_rerun_trains_nothing(done):
    assert (done.name, done.kind) == ("tiny_api", "study")
    assert "tiny_api" in repr(done)
    again = done.run()
    assert again.ok and again.trained == [] and again.counts == {"completed": 4}


def test_results_are_the_cli_rows(done):
    rows = results_rows(done.path)
    df = done.results()
    if importlib.util.find_spec("pandas") is None:
        assert df == rows
        return
    assert len(df) == len(rows) == 4
    assert list(df["run_id"]) == [r["run_id"] for r in rows]
    assert set(df["model.attn_norm"]) == {"softmax", "cosine"}  # config keys as dotted columns


def test_results_without_pandas_are_dicts(done, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pandas" else real(name, *a))
    rows = done.results()
    assert isinstance(rows, list) and rows == results_rows(done.path)


def test_status_report_and_analyze(done):
    assert "4 runs, 4 final" in done.status()
    analyses = done.analyze(sections="calibration")
    assert len(analyses) == 4 and all("calibration" in a for a in analyses.values())
    html = done.report()
    assert html == done.path / "report" / "report.html" and html.is_file()
    assert "tiny_api" in html.read_text()


def test_the_cli_prints_what_the_study_object_returns(done, capsys):
    """`vitlab results` and `vitlab status` are the Study's `table` and `status`, printed."""
    assert main(["results", str(done.path), "--format", "md", "--where", "seed == 1"]) == 0
    shown = capsys.readouterr().out
    assert shown.strip() == done.table(where="seed == 1", format="md").strip() and shown.count("\n") > 2
    assert main(["status", str(done.path)]) == 0
    assert capsys.readouterr().out.strip() == done.status().strip()


def test_opening_a_directory_without_a_study_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"not a vitlab study directory \(no spec.yaml\)"):
        Study(tmp_path / "nothing")


def test_bad_options_are_refused_before_anything_is_written(tmp_path, write_spec):
    spec = write_spec(tmp_path, TINY)
    with pytest.raises(UserError, match="--workers"):
        Study.create(spec, tmp_path / "out", workers=0)
    with pytest.raises(UserError, match="--ray-address: only used with --backend ray"):
        Study(tmp_path / "out", spec=spec, ray_address="auto")
    study = Study(tmp_path / "out", spec=spec)
    with pytest.raises(UserError, match="--backend"):
        study.run(backend="cloud")
    with pytest.raises(UserError, match=r"more than the limit of 1 runs"):
        Study.create(spec, tmp_path / "out", max_runs=1)
    assert not (tmp_path / "out").exists()


def test_create_refuses_a_directory_of_another_study(done, tmp_path, write_spec):
    Study.create(write_spec(tmp_path, TINY), done.path)  # the same study again: a no-op
    other = dict(TINY, name="other")
    with pytest.raises(UserError, match="holds a different study"):
        Study.create(write_spec(tmp_path, other), done.path)


def test_run_options_are_run_studys_arguments():
    """RunOptions' fields and defaults are run_study's keyword arguments (one set of defaults)."""
    sig = inspect.signature(run_study)
    kwargs = RunOptions().kwargs()
    assert set(kwargs) == set(sig.parameters) - {"spec", "out_dir"}
    assert {k: v for k, v in kwargs.items() if sig.parameters[k].default != v} == {}
    assert RunOptions(slurm=["time=10"], backend="slurm").kwargs()["slurm"] == ["time=10"]
    assert set(NOT_FOR_SEARCH) <= {f.name for f in dataclasses.fields(RunOptions)}


def test_search_runs_trials_and_refuses_run(tmp_path, write_spec):
    study = Study.create(write_spec(tmp_path, TINY_SEARCH), tmp_path / "search", progress=False)
    assert study.kind == "search"
    with pytest.raises(UserError, match=r"is a search \(space:\); run it with .search"):
        study.run()
    with pytest.raises(UserError, match="storage: not used by a search"):
        study.search(trials=2, storage=str(tmp_path / "elsewhere"))
    result = Study(tmp_path / "search", progress=False).search(trials=2)
    assert result.ok and result.finished == 2
    assert len(results_rows(study.path)) == 2


def test_status_shows_the_epochs_a_budgeted_run_will_train():
    """A FLOP, time or step budget fixes a run's epochs when it starts (summary.json `steps`): the status
    line shows those, not train.epochs (a findings run with 6,229 steps of 843 showed 'epoch 6/3')."""
    budgeted = {"train": {"epochs": 3, "budget_flops": 1.7e13}}
    assert planned_epochs({"status": "running", "steps": 6229, "steps_per_epoch": 843}, budgeted) == 8
    assert planned_epochs({"status": "running", "steps": 843, "steps_per_epoch": 843}, budgeted) == 1
    assert planned_epochs(None, budgeted) == "?"  # not started: the step count is not known yet
    assert planned_epochs({"steps": "6229", "steps_per_epoch": 843}, budgeted) == "?"  # a hand-edited file
    assert planned_epochs(None, {"train": {"epochs": 3}}) == 3
