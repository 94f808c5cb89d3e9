"""findings/: the committed real-data studies are complete, small, and their SUMMARY.md (which
findings/README.md quotes) is what findings/summarize.py computes from the committed run files."""
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from vitlab.study.plan import expand

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "findings"
MAX_FILE_BYTES = 2 * 2**20  # reports and run summaries only: no checkpoints in git
IGNORED = shutil.ignore_patterns("index.sqlite*", ".lock", "checkpoints", "*.png", "*.svg", "report")


def _summarize_module():
    spec = importlib.util.spec_from_file_location("findings_summarize", FINDINGS / "summarize.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


SUMMARIZE = _summarize_module()
BY_NAME = {s.name: s for s in SUMMARIZE.STUDIES}
STUDIES = [name for name in BY_NAME if (FINDINGS / name).is_dir()]


def test_findings_hold_studies():
    assert STUDIES, "no study under findings/"


@pytest.mark.parametrize("name", STUDIES)
def test_committed_study_is_complete(name):
    """Every run the spec's profile plans has completed and been analyzed."""
    d = FINDINGS / name
    runs = expand(BY_NAME[name].spec_path, BY_NAME[name].profile)
    for r in runs:
        run = d / "runs" / r.run_id
        assert (run / "summary.json").is_file(), f"{name}: run {r.run_id} ({r.level_label}, seed {r.seed}) missing"
        assert '"status": "completed"' in (run / "summary.json").read_text(), r.run_id
        assert (run / "analysis" / "analysis.json").is_file(), r.run_id
    assert (d / "report" / "report.html").is_file()


@pytest.mark.parametrize("name", STUDIES)
def test_no_large_files(name):
    big = [p for p in (FINDINGS / name).rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES
           and "checkpoints" not in p.parts]  # checkpoints are git-ignored; a local study has them
    assert not big, big


def test_summary_is_reproducible_from_the_committed_runs(tmp_path):
    """Copy the studies as a fresh clone has them (no index, no checkpoints, no images) and
    recompute: the numbers README quotes must come out again."""
    for name in STUDIES:
        shutil.copytree(FINDINGS / name, tmp_path / name, ignore=IGNORED)
    assert SUMMARIZE.summarize(tmp_path) + "\n" == (FINDINGS / "SUMMARY.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", STUDIES)
def test_each_study_is_linked_and_reproducible_from_the_readmes(name):
    """findings/README.md links the study's committed report and gives its reproduce command, and the
    project README links the report too."""
    assert (FINDINGS / name / "report" / "report.html").is_file(), f"{name}: no committed report"
    findings_readme = (FINDINGS / "README.md").read_text(encoding="utf-8")
    assert f"]({name}/report/report.html)" in findings_readme
    study = BY_NAME[name]
    assert study.command in findings_readme, study.command
    assert f"](findings/{name}/report/report.html)" in (ROOT / "README.md").read_text(encoding="utf-8")
