"""The HTML report: files under report/, one self-contained HTML that renders in headless Chromium."""
from __future__ import annotations

import re
import shutil
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_report_data import FACTOR, study_meta, study_records
from vitlab.errors import UserError
from vitlab.report import build_report, render_html, report_main
from vitlab.report.search import JOURNAL_FILE, MIN_TRIALS_FOR_IMPORTANCE, search_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM_TIMEOUT_S = 120
MIN_DISTINCT_COLOURS = 50  # a page with tables and plots has hundreds; a blank one has 1
MIN_PIXEL_STD = 10.0  # grey-level standard deviation of the screenshot; blank white is 0

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def partial_study():
    """3 of 4 levels run, one failed and one diverged run: the report must still be complete."""
    return study_records(statuses={("cosine", 2): "failed", ("zscore", 1): "diverged"})


def test_build_report_writes_tables_and_figures(tmp_path):
    rep = build_report(study_meta(), partial_study(), tmp_path / "report")
    names = sorted(p.relative_to(tmp_path / "report").as_posix() for p in (tmp_path / "report").rglob("*"))
    base = "model.attn_norm"
    assert names == ["figures", f"figures/{base}_curves.png", f"figures/{base}_curves.svg", "tables",
                     f"tables/{base}.csv", f"tables/{base}.md", f"tables/{base}.tex",
                     f"tables/{base}_paired.csv", f"tables/{base}_paired.md", f"tables/{base}_paired.tex"]
    assert (tmp_path / "report" / "figures" / f"{base}_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "report" / "figures" / f"{base}_curves.svg").read_bytes()[:2000]
    md = (tmp_path / "report" / "tables" / f"{base}.md").read_text()
    assert "2/3 (1 failed)" in md and "2/3 (1 diverged)" in md and "0/3 (3 missing)" in md
    # the primary metric is test_top1 here, so the paired table has one metric
    assert [r.metric.key for r in rep.sections[0].paired.rows] == ["test_top1"] * 3


def test_html_is_self_contained_and_complete(tmp_path):
    rep = build_report(study_meta(), partial_study(), tmp_path / "report")
    text = render_html(rep)
    assert text.count("<table>") == 2 and text.count("<img ") == 1
    assert "data:image/png;base64," in text
    assert not EXTERNAL.search(text) and "<script" not in text and "<link" not in text
    assert "synthetic data" in text.lower()
    assert "7 completed, 1 failed of 12 (1 diverged, 3 missing)" in text
    for needle in ("Factor: model.attn_norm", "Method", "validation", "Test set", "bootstrap", "P(improve)"):
        assert needle in text


def test_real_dataset_is_not_called_synthetic(tmp_path):
    from test_report_data import make_run

    recs = [make_run(FACTOR, lab, i, s, 0.7, dataset="fashion_mnist")
            for i, lab in enumerate(["a", "b"]) for s in (0, 1)]
    meta = {"name": "fm", "kind": "study", "factors": {FACTOR: ["a", "b"]}, "reference": {FACTOR: "a"},
            "metrics": ["val_top1"], "seeds": [0, 1]}
    rep = build_report(meta, recs, tmp_path / "report")
    text = render_html(rep)
    assert "fashion_mnist" in text and "synthetic" not in text.lower()
    # val_top1 is the primary metric: the paired table shows test top-1 and val top-1
    assert [r.metric.key for r in rep.sections[0].paired.rows] == ["test_top1", "val_top1"]


def test_header_names_the_profile_beside_the_specs_description(tmp_path):
    """A profile may swap the dataset the description names (the fmnist profiles of CIFAR-100 specs)."""
    meta = {**study_meta(description="on CIFAR-100"), "profile": "fmnist"}
    text = render_html(build_report(meta, partial_study(), tmp_path / "report"))
    assert "<dt>Profile</dt><dd>fmnist</dd>" in text
    assert "<dt>Profile</dt>" not in render_html(build_report(study_meta(), partial_study(), tmp_path / "r2"))


def test_no_completed_runs_yet(tmp_path):
    recs = study_records(statuses={(lab, s): "running" for lab in ("softmax", "zscore", "cosine") for s in range(3)})
    rep = build_report(study_meta(), recs, tmp_path / "report")
    text = render_html(rep)
    assert "No completed run with curves yet." in text and text.count("<img ") == 0
    assert "0/3 (3 running)" in text


def make_search(study_dir: Path, n_trials: int) -> dict:
    """A real Optuna search in DIR/optuna.journal, on a cheap analytic objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / JOURNAL_FILE)))
    study = optuna.create_study(study_name="lr-search", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        depth = trial.suggest_int("model.depth", 2, 8)
        if trial.number == 2:
            raise optuna.TrialPruned()
        return 0.8 - 0.05 * (np.log10(lr) + 2.5) ** 2 + 0.001 * depth

    study.optimize(objective, n_trials=n_trials)
    return {"name": "lr-search", "kind": "search", "factors": {}, "reference": {}, "metrics": ["val_top1"],
            "objective": "val_top1"}


def test_search_report(tmp_path):
    meta = make_search(tmp_path, n_trials=12)
    sd = search_data(tmp_path, meta["name"])
    assert sd.maximize and len(sd.rows) == 12 and set(sd.importances) == {"optim.lr", "model.depth"}
    assert max(sd.importances, key=sd.importances.get) == "optim.lr"  # the objective hardly depends on depth
    rep = build_report(meta, [], tmp_path / "report", sd)
    text = render_html(rep)
    assert text.count("<table>") == 1 and text.count("<img ") == 2
    for name in ("tables/trials.md", "tables/trials.csv", "tables/trials.tex", "figures/history.png",
                 "figures/importances.svg"):
        assert (tmp_path / "report" / name).is_file(), name
    assert "1 pruned" in text and "11 complete" in text


def test_search_with_too_few_trials(tmp_path):
    meta = make_search(tmp_path, n_trials=MIN_TRIALS_FOR_IMPORTANCE - 1)
    sd = search_data(tmp_path, None)  # the only study in the journal
    assert sd.importances == {} and "at least" in sd.importance_note
    text = render_html(build_report(meta, [], tmp_path / "report", sd))
    assert text.count("<img ") == 1 and "at least" in text


def test_search_without_journal_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="optuna.journal"):
        search_data(tmp_path, "x")
    assert not (tmp_path / JOURNAL_FILE).exists()  # nothing created


def test_report_main_rejects_a_missing_directory(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        report_main(tmp_path / "nope")


# ---------------------------------------------------------------- headless Chromium


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("VITLAB_REQUIRE_CHROMIUM") == "1":  # CI installs it: a missing browser is a failure
            pytest.fail("VITLAB_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=True)


@pytest.mark.parametrize("kind", ["study", "search"])
def test_report_renders_in_chromium(tmp_path, kind):
    from PIL import Image

    if kind == "study":
        rep = build_report(study_meta(), partial_study(), tmp_path / "report")
        n_tables, n_images, heading = 2, 1, "Factor: model.attn_norm"
    else:
        meta = make_search(tmp_path, n_trials=8)
        rep = build_report(meta, [], tmp_path / "report", search_data(tmp_path, meta["name"]))
        n_tables, n_images, heading = 1, 2, "Search: lr-search"
    page = tmp_path / "report" / "report.html"
    page.write_text(render_html(rep), encoding="utf-8")

    shot = tmp_path / "shot.png"  # one launch: the DOM on stdout and the screenshot in a file
    dom = chromium(["--dump-dom", f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()], tmp_path).stdout
    assert dom.count("<table") == n_tables
    assert len(re.findall(r"<img\b", dom)) == n_images and len(re.findall(r"<svg\b", dom)) == 0
    assert heading in dom and "Method" in dom
    assert not EXTERNAL.search(dom)

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1200)
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    assert colours >= MIN_DISTINCT_COLOURS, colours
    assert img.mean(axis=2).std() >= MIN_PIXEL_STD
