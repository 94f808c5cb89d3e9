"""Files read back are untrusted (issue 21, item 4): one malformed run file never blocks a study.

Each kind of damage a hostile collaborator or a careless user can leave in a run file (summary.json,
metrics.jsonl, analysis.json, trial.json, the rows of index.sqlite) is read by one bounded, typed reader;
`vitlab study` (rerun), `results`, `report`, `track`, `load_results` and `analyze` finish with one warning
line naming the file, and the run is reported as damaged and skipped (re-trained with --retrain-damaged).
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from vitlab import rundir
from vitlab.cli import main as cli_main
from vitlab.jsonread import MAX_JSON_DEPTH, MAX_STRING_CHARS, MalformedFile, parse_json, read_capped
from vitlab.notebook import load_results, run_data
from vitlab.report import build_report, render_html
from vitlab.study import open_index, run_study

TINY = {
    "name": "tiny_reads",
    "base": {"device": "cpu",
             "data": {"name": "synthetic", "synthetic_train": 200, "synthetic_test": 64, "val_fraction": 0.2},
             "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
             "train": {"epochs": 1, "batch_size": 64, "threads": 1}},
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": 1,
}
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def done_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("reads")
    spec = base / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    result = run_study(spec, base / "study", workers=1, progress=False)
    assert result.ok, result.errors
    return base / "study", spec


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _set_summary(run: Path, text: str) -> None:
    (run / "summary.json").write_text(text)


def _metrics_line(run: Path, line: str) -> None:
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([line, *rows[1:]]) + "\n")


def _first_row(run: Path, **changes) -> str:
    return json.dumps({**_metrics(run)[0], **changes})


# name -> (file damaged, how)
DAMAGE = {
    "metrics epoch as a string": ("metrics.jsonl", lambda r: _metrics_line(r, _first_row(r, epoch="1"))),
    "metrics Infinity": ("metrics.jsonl", lambda r: _metrics_line(r, _first_row(r).replace('"lr": ', '"lr": Infinity, "x": '))),
    "metrics NaN": ("metrics.jsonl", lambda r: _metrics_line(r, _first_row(r).replace('"lr": ', '"lr": NaN, "x": '))),
    "metrics huge integer": ("metrics.jsonl", lambda r: _metrics_line(r, _first_row(r, val_top1=10 ** 400))),
    "metrics 1e400": ("metrics.jsonl", lambda r: _metrics_line(r, _first_row(r).replace('"lr": ', '"lr": 1e400, "x": '))),
    "metrics non-object line": ("metrics.jsonl", lambda r: _metrics_line(r, "[1, 2, 3]")),
    "metrics deep nesting": ("metrics.jsonl", lambda r: _metrics_line(r, '{"epoch": 1, "x": ' + DEEP + "}")),
    "metrics nested value": ("metrics.jsonl", lambda r: _metrics_line(r, _first_row(r, val_top1={"a": [1]}))),
    "summary deep nesting": ("summary.json", lambda r: _set_summary(r, '{"status": "completed", "x": ' + DEEP + "}")),
    "summary not JSON": ("summary.json", lambda r: _set_summary(r, '{"status": "compl')),
    "summary not an object": ("summary.json", lambda r: _set_summary(r, "[]")),
    "summary epochs as a string": ("summary.json", lambda r: _set_summary(r, json.dumps({**_summary(r), "epochs_run": "1"}))),
    "summary metric as a string": ("summary.json", lambda r: _set_summary(r, json.dumps({**_summary(r), "test_top1": "high"}))),
    "summary nested value": ("summary.json", lambda r: _set_summary(r, json.dumps({**_summary(r), "test_top1": [0.5]}))),
    "summary huge integer": ("summary.json", lambda r: _set_summary(r, json.dumps({**_summary(r), "params": 10 ** 400}))),
    "summary huge string": ("summary.json", lambda r: _set_summary(
        r, json.dumps({**_summary(r), "model": "x" * (MAX_STRING_CHARS + 1)}))),
    "summary unknown status": ("summary.json", lambda r: _set_summary(r, json.dumps({**_summary(r), "status": "done"}))),
    "summary HTML key": ("summary.json", lambda r: _set_summary(
        r, json.dumps({**_summary(r), "<img src=x onerror=alert(1)>": 1.0}))),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_malformed_run_file_is_one_warning_and_a_skipped_run_everywhere(kind, done_study, tmp_path, capsys):
    study, spec = done_study
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    runs = sorted((copy / "runs").iterdir())
    bad, good = runs[0], runs[1]
    name, damage = DAMAGE[kind]
    damage(bad)
    before = {p: p.read_bytes() for p in (bad, good) for p in p.rglob("*") if p.is_file()}

    def one_warning(err: str) -> None:
        warnings = [line for line in err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, err
        assert f"{bad.name}/{name}" in warnings[0] and "damaged" in warnings[0]
        assert "Traceback" not in err

    # the study rerun: reports the run as damaged, trains nothing, finishes the others
    assert cli_main(["study", str(spec), "--out", str(copy)]) == 1  # not every run is usable
    one_warning(capsys.readouterr().err)
    with open_index(copy) as index:
        status = {r.run_id: r.status for r in index.runs()}
    capsys.readouterr()
    assert status == {bad.name: "damaged", good.name: "completed"}
    assert {p: p.read_bytes() for p in before} == before  # nothing rewritten, nothing retrained

    # readers of the study: each finishes with the one warning
    assert cli_main(["results", str(copy), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    one_warning(err)
    assert "damaged" in out and "completed" in out
    assert cli_main(["report", str(copy)]) == 0
    one_warning(capsys.readouterr().err)
    assert (copy / "report" / "report.html").is_file()
    frame = load_results(copy)
    one_warning(capsys.readouterr().err)
    assert dict(zip(frame["run_id"], frame["status"])) == {bad.name: "damaged", good.name: "completed"}
    runs_read, _ = run_data(copy)  # what `vitlab track` exports
    one_warning(capsys.readouterr().err)
    assert [r.run_id for r in runs_read] == [good.name]
    assert cli_main(["track", str(copy), "--to", "tensorboard", "--uri", str(tmp_path / "tb")]) == 0
    one_warning(capsys.readouterr().err)
    assert [p.name for p in (tmp_path / "tb").iterdir()] == [good.name]

    # a rebuilt index (a handed-over study without one) reads the run files and warns the same
    (copy / "index.sqlite").unlink()
    assert cli_main(["results", str(copy)]) == 0
    one_warning(capsys.readouterr().err)

    # the run alone: one line naming the file, exit 2 (nothing else to report)
    if name == "summary.json":
        assert cli_main(["report", str(bad)]) == 2
        assert f"{bad.name}/{name}" in capsys.readouterr().err
    assert cli_main(["track", str(bad), "--to", "tensorboard", "--uri", str(tmp_path / "tb1")]) == 2
    err = capsys.readouterr().err
    assert f"{bad.name}/{name}" in err.splitlines()[-1] and "Traceback" not in err


def test_retrain_damaged_resumes_the_run_from_its_checkpoint(done_study, tmp_path, capsys):
    study, spec = done_study
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    bad = sorted((copy / "runs").iterdir())[0]
    good_summary = _summary(bad)
    _metrics_line(bad, "not json at all")
    assert cli_main(["study", str(spec), "--out", str(copy)]) == 1
    assert "damaged" in capsys.readouterr().err
    assert cli_main(["study", str(spec), "--out", str(copy), "--retrain-damaged"]) == 0
    assert "warning:" in capsys.readouterr().err
    assert _metrics(bad) == _metrics(study / "runs" / bad.name)  # rewritten from the checkpoint's history
    assert _summary(bad)["test_top1"] == good_summary["test_top1"]
    with open_index(copy) as index:
        assert {r.status for r in index.runs()} == {"completed"}
    assert "warning" not in capsys.readouterr().err


def test_a_huge_file_is_refused_by_its_size_unread(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "summary.json", "wb") as f:  # 200 MB, sparse: nothing is written to disk
        f.truncate(200 * 2 ** 20)
    with open(run / "metrics.jsonl", "wb") as f:
        f.truncate(138 * 2 ** 20)
    reads = []
    real_open = open

    def watching_open(path, mode="r", *a, **k):
        reads.append(Path(path).name)
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", watching_open)
    with pytest.raises(MalformedFile, match=r"summary.json: 209,715,200 bytes, more than the 4,194,304"):
        rundir.read_summary(run)
    with pytest.raises(MalformedFile, match=r"metrics.jsonl: 144,703,488 bytes, more than"):
        rundir.read_metrics(run)
    assert reads == []  # refused by the size in its inode: never opened
    monkeypatch.undo()
    # a file that grows past the cap after the size check is cut at cap + 1 bytes
    (tmp_path / "small").write_bytes(b"x" * 10)
    assert read_capped(tmp_path / "small", 10) == b"x" * 10
    with pytest.raises(MalformedFile, match="more than the 9"):
        read_capped(tmp_path / "small", 9)


def test_the_parser_bounds_depth_numbers_and_strings():
    for text in (DEEP, "[" * 50 + "]" * 50, '{"a": ' + "[" * MAX_JSON_DEPTH + "1" + "]" * MAX_JSON_DEPTH + "}",
                 '{"a": ' * 5000 + "1" + "}" * 5000):
        with pytest.raises(MalformedFile, match="nested deeper"):
            parse_json(text, "f")
    ok = json.dumps({"a": [[[[[1]]]]]})
    assert parse_json(ok, "f") == {"a": [[[[[1]]]]]}
    for text, why in (("[Infinity]", "finite"), ("[-Infinity]", "finite"), ("[NaN]", "finite"),
                      ("[1e400]", "finite"), (f"[{10 ** 400}]", "out of range"), ("[" + "9" * 5000 + "]", "not valid"),
                      (json.dumps(["x" * (MAX_STRING_CHARS + 1)]), "string of"), (b"\xff\xfe", "UTF-8")):
        with pytest.raises(MalformedFile, match=why):
            parse_json(text, "f")
    assert parse_json("[NaN]", "f", allow_nan=True)[0] != parse_json("[NaN]", "f", allow_nan=True)[0]
    assert MAX_JSON_DEPTH >= 8  # run files nest a few levels; analysis.json the most, 5


def test_a_torn_last_metrics_line_is_ignored_but_a_bad_middle_line_is_damage(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "val_top1": 0.5}\n{"epoch": 2, "val_to')
    assert rundir.read_metrics(run) == [{"epoch": 1, "val_top1": 0.5}]
    (run / "metrics.jsonl").write_text('{"epoch": 1, "val_to\n{"epoch": 2, "val_top1": 0.5}\n')
    with pytest.raises(MalformedFile, match="metrics.jsonl: line 1: not valid JSON"):
        rundir.read_metrics(run)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    with pytest.raises(MalformedFile, match="not a regular file"):
        rundir.read_metrics(run)


@pytest.mark.parametrize("column, value", [
    ("summary_json", '{"status": "completed", "x": ' + DEEP + "}"),
    ("summary_json", '{"status": "completed", "test_top1": Infinity}'),
    ("summary_json", '{"status": "completed", "test_top1": "high"}'),
    ("summary_json", "[1, 2]"),
    ("summary_json", "not json"),
    ("config_json", '"a string"'),
    ("varied_json", "{"),
    ("level_json", str(10 ** 400)),
    ("status", "'no such status'"),
    ("seed", "'zero'"),
    ("attempts", "1.5"),
    ("metrics_json", '{"val_top1": {"nested": 1}}'),
    ("metrics_json", '"x"'),
    ("epoch", "'one'"),
    ("meta", '{"a": ' + "[" * 40 + "]" * 40 + "}"),
])
def test_a_valid_sqlite_index_with_bad_rows_is_rebuilt(column, value, done_study, tmp_path, capsys):
    study, spec = done_study
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    con = sqlite3.connect(copy / "index.sqlite")
    with con:
        if column == "meta":
            con.execute("UPDATE meta SET value = ? WHERE key = 'factors'", (value,))
        elif column in ("metrics_json", "epoch"):
            con.execute(f"UPDATE epochs SET {column} = {value if column == 'epoch' else '?'}",
                        () if column == "epoch" else (value,))
        elif column in ("status", "seed", "attempts"):
            con.execute(f"UPDATE runs SET {column} = {value}")
        else:
            con.execute(f"UPDATE runs SET {column} = ?", (value,))
    con.close()
    assert cli_main(["results", str(copy), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and "rebuilding it from the run directories" in err and "index.sqlite" in err
    assert out.count("completed") == 2
    # the coordinator too (the index was rebuilt above: damage it again)
    con = sqlite3.connect(copy / "index.sqlite")
    with con:
        con.execute("UPDATE runs SET summary_json = ?", ('{"x": ' + DEEP + "}",))
    con.close()
    again = run_study(spec, copy, workers=1, progress=False)
    assert again.ok and again.trained == []
    assert "rebuilding" in capsys.readouterr().err


def test_damaged_analysis_json_is_one_line_and_force_recomputes(done_study, tmp_path, capsys):
    study, _ = done_study
    run = tmp_path / "run"
    shutil.copytree(sorted((study / "runs").iterdir())[0], run)
    (run / "analysis").mkdir()
    for text in ('{"format": 1, "calibration": "x"}', '{"format": 1, "calibration": {"images": "many"}}',
                 '{"format": 1, "attention": {"samples": 4, "layers": [{"name": []}]}}',
                 '{"format": 1, "x": ' + DEEP + "}", '{"format": 1, "efficiency": {"params": 1e400}}'):
        (run / "analysis" / "analysis.json").write_text(text)
        assert cli_main(["report", str(run)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "analysis.json" in err and "Traceback" not in err
        assert cli_main(["analyze", str(run), "--sections", "calibration"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "analysis.json" in err and "--force" in err
    assert cli_main(["analyze", str(run), "--sections", "calibration", "--force"]) == 0
    assert json.loads((run / "analysis" / "analysis.json").read_text())["calibration"]["images"] > 0


def test_html_in_summary_keys_never_reaches_the_report_raw(tmp_path):
    from test_report_data import FACTOR, make_run

    hostile = "<img src=x onerror=alert(1)>"
    recs = [make_run(FACTOR, lab, i, s, 0.6 + 0.01 * i) for i, lab in enumerate(["a", "b"]) for s in (0, 1)]
    for r in recs:
        r.summary[hostile] = 0.5
    meta = {"name": "keys", "kind": "study", "factors": {FACTOR: ["a", "b"]}, "reference": {FACTOR: "a"},
            "metrics": ["test_top1", hostile], "seeds": [0, 1]}
    html = render_html(build_report(meta, recs, tmp_path / "report"))
    assert hostile not in html  # left out, or escaped where shown
    # and the reader refuses such a key in a run's summary.json outright
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "completed", hostile: 1.0}))
    with pytest.raises(MalformedFile, match="is not a metric name"):
        rundir.read_summary(run)


def test_damaged_trial_json_is_left_out_of_a_rebuilt_search_index(tmp_path, capsys):
    from vitlab.study.index import search_rows_from_dirs

    good, bad = tmp_path / "runs" / "good", tmp_path / "runs" / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    (good / "trial.json").write_text(json.dumps({"number": 0, "params": {"optim.lr": 0.1}, "config": {"seed": 0}}))
    (bad / "trial.json").write_text(json.dumps({"number": "0", "params": {"optim.lr": 0.1}}))
    rows = search_rows_from_dirs(tmp_path)
    assert [r[0] for r in rows] == ["good"]
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "bad/trial.json" in err


def test_rundir_is_a_leaf_and_owns_the_readers():
    import ast

    src = Path(rundir.__file__).read_text()
    imported = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.level}
    assert imported == {"jsonread"}, imported  # no study/report/train
    root = Path(rundir.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for dup in ("def read_summary", "def read_metrics", "def is_run_dir", "def read_epochs"):
            assert path == Path(rundir.__file__) or dup not in text, f"{path}: {dup}"
