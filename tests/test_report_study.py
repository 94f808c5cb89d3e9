"""`vitlab report DIR` on study directories: through the real study index, and (slow) on a real,
tiny study trained by the study runner."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_report_data import FACTOR, study_meta, study_records
from vitlab.cli import main as cli_main
from vitlab.errors import UserError
from vitlab.report import report_main
from vitlab.study.index import INDEX_FILE, IndexWriter


def write_index(study_dir: Path, records, meta: dict) -> None:
    """A study index as the coordinator writes it, filled with `records`."""
    with IndexWriter(study_dir) as w:
        w.set_meta(meta)
        for r in records:
            w.add_run(r.run_id, r.factor, r.level, r.level_label, r.level_order, r.seed, r.varied, r.config)
            w.set_status(r.run_id, r.status, summary=r.summary, attempts=1)
            w.set_epochs(r.run_id, r.epochs)


def test_report_main_reads_the_study_index(tmp_path):
    recs = study_records(statuses={("cosine", 2): "failed", ("zscore", 0): "pending"})
    write_index(tmp_path, recs, study_meta())
    html_path = report_main(tmp_path)
    assert html_path == tmp_path / "report" / "report.html"
    text = html_path.read_text(encoding="utf-8")
    assert text.count("<table>") == 2 and text.count("<img ") == 1
    assert "2/3 (1 pending)" in text and "2/3 (1 failed)" in text and "0/3 (3 missing)" in text
    rows = list(csv.DictReader((tmp_path / "report" / "tables" / f"{FACTOR}.csv").open()))
    assert {(r["level"], r["n"]) for r in rows if r["metric"] == "test_top1"} == {
        ("softmax", "3"), ("zscore", "2"), ("cosine", "2"), ("sigmoid", "0")}
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]  # atomic writes left nothing behind

    other = report_main(tmp_path, tmp_path / "elsewhere" / "r.html")
    assert other == tmp_path / "elsewhere" / "r.html"
    assert other.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_main_on_a_directory_that_is_not_a_study(tmp_path):
    with pytest.raises(UserError, match="not a vitlab study") as e:
        report_main(tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / INDEX_FILE).exists() and not (tmp_path / "report").exists()


def test_cli_report_exit_code(tmp_path):
    """The CLI prints one line and exits 2 for a directory that is not a study."""
    proc = subprocess.run([sys.executable, "-m", "vitlab", "report", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len((proc.stderr + proc.stdout).strip().splitlines()) == 1


TINY_STUDY = """\
name: tiny_report
base:
  device: cpu
  data: {name: synthetic, synthetic_train: 200, synthetic_test: 100, val_fraction: 0.2}
  model: {name: vit_nano, dim: 32, depth: 1, num_heads: 2}
  sched: {warmup_epochs: 0}
  train: {epochs: 2, batch_size: 64, threads: 1}
vary:
  model.attn_norm: [softmax, zscore]
seeds: 2
"""


def test_report_on_a_real_tiny_study(tmp_path):
    """Train a real 2 levels x 2 seeds study (~1 min on 2 CPU cores), report it, then make it
    partial (one run's results gone, index rebuilt) and report again."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_STUDY)
    out = tmp_path / "study"
    subprocess.run([sys.executable, "-m", "vitlab", "study", str(spec), "--out", str(out)], check=True,
                   capture_output=True, text=True, timeout=600)
    text = report_main(out).read_text(encoding="utf-8")
    assert "4 completed, 0 failed of 4" in text
    assert text.count("<table>") == 2 and text.count("<img ") == 1 and "synthetic data" in text

    run = sorted((out / "runs").iterdir())[0]
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints")
    (out / INDEX_FILE).unlink()
    text = report_main(out).read_text(encoding="utf-8")
    assert "3 completed, 0 failed of 4 (1 pending)" in text
    assert "1/2 (1 pending)" in text and "(no interval) (n=1/2)" in text


TINY_SEARCH = """\
name: tiny_search
base:
  device: cpu
  data: {name: synthetic, synthetic_train: 200, synthetic_test: 100, val_fraction: 0.2}
  model: {name: vit_nano, dim: 32, depth: 1, num_heads: 2}
  sched: {warmup_epochs: 0}
  train: {epochs: 2, batch_size: 64, threads: 1}
space:
  optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
objective: {metric: val_top1, direction: maximize}
"""


def test_report_on_a_real_tiny_search(tmp_path):
    """A real 3-trial Optuna search (~40 s), reported from its journal: trials table and history;
    too few trials for importances, which the report says."""
    spec = tmp_path / "search.yaml"
    spec.write_text(TINY_SEARCH)
    out = tmp_path / "search"
    subprocess.run([sys.executable, "-m", "vitlab", "search", str(spec), "--out", str(out), "--trials", "3"],
                   check=True, capture_output=True, text=True, timeout=600)
    text = report_main(out).read_text(encoding="utf-8")
    assert "Search: tiny_search" in text and "3 completed, 0 failed of 3" in text
    assert text.count("<table>") == 1 and text.count("<img ") == 1 and "at least" in text
    rows = list(csv.DictReader((out / "report" / "tables" / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 and all(r["param_optim.lr"] for r in rows)


def test_report_options_come_from_the_spec_and_the_command_line(tmp_path):
    """`report: {ci, target_delta}` in the study meta sets the defaults; CLI / API arguments override."""
    write_index(tmp_path, study_records(), study_meta(report={"ci": "bootstrap", "target_delta": 2.0}))
    tdir = tmp_path / "report" / "tables"
    report_main(tmp_path)
    rows = list(csv.DictReader((tdir / f"{FACTOR}.csv").open()))
    assert {r["ci_method"] for r in rows} == {"bootstrap"}
    paired = list(csv.DictReader((tdir / f"{FACTOR}_paired.csv").open()))
    assert {r["target_delta"] for r in paired} == {"2.0"} and {r["ci_method"] for r in paired} == {"bootstrap"}
    assert "percentile bootstrap interval" in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")

    assert cli_main(["report", str(tmp_path), "--ci", "t", "--target-delta", "0.5"]) == 0
    rows = list(csv.DictReader((tdir / f"{FACTOR}.csv").open()))
    assert {r["ci_method"] for r in rows} == {"t"}
    paired = list(csv.DictReader((tdir / f"{FACTOR}_paired.csv").open()))
    assert {r["target_delta"] for r in paired} == {"0.5"}


@pytest.mark.parametrize("args, field", [(["--ci", "percentile"], "--ci"), (["--target-delta", "-1"], "target_delta"),
                                         (["--target-delta", "nan"], "target_delta")])
def test_cli_report_rejects_bad_options(tmp_path, capsys, args, field):
    write_index(tmp_path, study_records(), study_meta())
    assert cli_main(["report", str(tmp_path), *args]) == 2
    cap = capsys.readouterr()
    out = (cap.err + cap.out).strip().splitlines()
    assert len(out) == 1 and field in out[0]
    assert not (tmp_path / "report").exists()  # nothing written


def test_bad_report_section_is_a_user_error(tmp_path):
    write_index(tmp_path, study_records(), study_meta(report={"ci": "studentized"}))
    with pytest.raises(UserError, match="report.ci"):
        report_main(tmp_path)
    assert not (tmp_path / "report").exists()


def test_report_says_when_every_run_had_the_same_time_budget(tmp_path):
    recs = study_records()
    for i, r in enumerate(recs):
        r.config.setdefault("train", {}).update(budget_minutes=7.0, budget_clock="cpu")
        r.summary["steps"] = 900 + i
    write_index(tmp_path, recs, study_meta())
    text = report_main(tmp_path).read_text(encoding="utf-8")
    assert "every run had the same budget of 7.0 minutes of cpu time" in text
    assert f"(900–{900 + len(recs) - 1:,} steps across runs)" in text
    plain = tmp_path / "plain"
    write_index(plain, study_records(), study_meta())
    assert "budget" not in report_main(plain).read_text(encoding="utf-8")
