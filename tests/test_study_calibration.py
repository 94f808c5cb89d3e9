"""Time budgets in a study: one calibration per configuration, before the workers compete, shared by
every seed, rerun and re-dispatched run; the report's compute table shows the steps per level."""
from __future__ import annotations

import copy
import json
import shutil
from types import SimpleNamespace

import pytest

from vitlab.errors import UserError
from vitlab.report.compute import UNEQUAL, compute_rows
from vitlab.report.html import report_main
from vitlab.study import calibration, run_study
from vitlab.study.plan import expand
from vitlab.training import budget

from test_study_runner import TINY

CAP = 17  # steps: the solved count is capped so that the runs are short while the real calibration runs


def timed_spec(**train) -> dict:
    spec = copy.deepcopy(TINY)
    spec["base"]["train"] = {"batch_size": 64, "eval_batch_size": 200, "threads": 1, "budget_minutes": 0.5, **train}
    spec["base"]["sched"] = {"warmup_fraction": 0.1}
    return spec


@pytest.fixture
def quick_calibration(monkeypatch):
    """The coordinator calibrates (in this process) briefly, and caps the solved count."""
    monkeypatch.setattr(budget, "CALIBRATION_MIN_SECONDS", 0.05)
    monkeypatch.setattr(budget, "CALIBRATION_SHARE", 0.0)
    real = budget.steps_within_budget
    monkeypatch.setattr(budget, "steps_within_budget", lambda *a: min(CAP, real(*a)))


def summaries(study) -> dict[str, dict]:
    return {p.name: json.loads((p / "summary.json").read_text()) for p in (study / "runs").iterdir()}


def test_every_seed_of_a_level_trains_the_same_steps_with_two_workers(tmp_path, quick_calibration, monkeypatch,
                                                                      write_spec):
    spec_path = write_spec(tmp_path, timed_spec())
    out = tmp_path / "study"
    result = run_study(spec_path, out, workers=2, progress=False)
    assert result.ok and result.counts == {"completed": 4}, result
    stored = json.loads((out / calibration.CALIBRATION_FILE).read_text())
    runs = expand(spec_path)
    keys = {r.run_id: calibration.config_key(r.config) for r in runs}
    assert len(stored) == 2 == len(set(keys.values()))  # one calibration per level, shared by its seeds
    got = summaries(out)
    for rid, key in keys.items():
        s = got[rid]
        assert s["steps"] == stored[key]["steps"] == CAP, rid  # the runs did not calibrate themselves
        assert s["budget_calibrated_by"] == "study" and s["budget_minutes"] == 0.5
        assert s["budget_step_s"] == stored[key]["budget"]["step_s"]
    assert stored[next(iter(stored))]["budget"]["threads"] == 1

    # A re-dispatched run (its directory lost) and a rerun use the stored steps: nothing recalibrates.
    def no_calibration(*a, **k):
        raise AssertionError("a configuration is calibrated once per study")

    monkeypatch.setattr(calibration, "calibrate_config", no_calibration)
    lost = runs[0].run_id
    shutil.rmtree(out / "runs" / lost)
    again = run_study(spec_path, out, workers=2, progress=False)
    assert again.ok and again.trained == [lost]
    assert summaries(out)[lost]["steps"] == CAP

    html = report_main(out).read_text(encoding="utf-8")
    assert "compute per run" in html and UNEQUAL not in html
    assert "The budget counted the wall clock of the whole run" in html
    assert "the study timed each configuration once" in html


def test_config_key_ignores_only_the_seeds():
    runs = expand(timed_spec())
    by_level: dict[str, set] = {}
    for r in runs:
        by_level.setdefault(r.level_label, set()).add(calibration.config_key(r.config))
    assert all(len(keys) == 1 for keys in by_level.values()) and len(set().union(*by_level.values())) == 2


@pytest.mark.parametrize("text,problem", [
    ("[1, 2]", "not a JSON object"),
    ('{"k": {"steps": 0, "budget": {}}}', "steps must be an integer >= 1"),
    ('{"k": {"steps": 3}}', "must be a mapping with steps and budget"),
])
def test_a_damaged_calibration_file_is_a_one_line_error(tmp_path, text, problem):
    (tmp_path / calibration.CALIBRATION_FILE).write_text(text)
    with pytest.raises(UserError, match=problem) as e:
        calibration.StudyCalibration(tmp_path, threads=1)
    assert "\n" not in str(e.value) and "delete" in str(e.value)


def test_time_budgets_on_ray_are_refused_before_anything_is_written(tmp_path, write_spec):
    spec_path = write_spec(tmp_path, timed_spec())
    with pytest.raises(UserError, match="train.budget_flops"):
        run_study(spec_path, tmp_path / "study", backend="ray", progress=False)
    assert not (tmp_path / "study").exists()


def test_compute_table_flags_a_level_whose_seeds_differ():
    def rec(level, steps, wall, cpu=None):
        summary = {"steps": steps, "train_time_s": wall, **({"train_cpu_s": cpu} if cpu is not None else {})}
        return SimpleNamespace(factor="f", level_label=level, status="completed", summary=summary,
                               config={"train": {"budget_minutes": 3.0, "budget_clock": "cpu"}})

    recs = [rec("a", 563, 170.0, 160.0), rec("a", 402, 278.0, 161.0), rec("b", 300, 100.0), rec("b", 300, 101.0)]
    rows = compute_rows(recs, "f", ["a", "b"])
    assert rows[0] == ["a", "2", "402–563", "170–278", "160–161", UNEQUAL]
    assert rows[1] == ["b", "2", "300", "100–101", "—", ""]


def test_flop_budgeted_study_gives_every_seed_of_a_level_the_same_steps(tmp_path, write_spec):
    spec = timed_spec()
    del spec["base"]["train"]["budget_minutes"]
    spec["base"]["train"]["budget_flops"] = 1.0e9
    out = tmp_path / "study"
    result = run_study(write_spec(tmp_path, spec), out, workers=2, progress=False)
    assert result.ok and result.counts == {"completed": 4}, result
    assert not (out / calibration.CALIBRATION_FILE).exists()  # nothing to calibrate
    by_level: dict[str, set] = {}
    for r in expand(spec):
        s = summaries(out)[r.run_id]
        by_level.setdefault(r.level_label, set()).add((s["steps"], s["train_flops_per_step"]))
        assert s["train_flops"] <= 1.0e9 < s["train_flops"] + s["train_flops_per_step"]
    assert all(len(v) == 1 for v in by_level.values()), by_level
    html = report_main(out).read_text(encoding="utf-8")
    assert "The budget counted training FLOPs" in html and "training FLOPs (train.budget_flops" in html
