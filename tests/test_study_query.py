"""`vitlab results`: the --where mini-language against Python's own evaluation, and the formats."""
from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import pytest

from vitlab.errors import UserError
from vitlab.study.index import IndexWriter, open_index
from vitlab.study.query import WhereExpr, flatten, format_rows

ENVS = [
    {"seed": 0, "status": "completed", "level": "4", "test_top1": 0.61, "model": {"num_heads": 4, "attn_norm": "softmax"}},
    {"seed": 1, "status": "failed", "level": "8", "test_top1": 0.42, "model": {"num_heads": 8, "attn_norm": "cosine"}},
    {"seed": 2, "status": "completed", "level": "16", "test_top1": 0.55, "model": {"num_heads": 16, "attn_norm": "lsa"}},
]
EXPRESSIONS = [
    "seed < 2",
    "model.num_heads == 4 and seed < 2",
    "status == 'completed' or model.num_heads >= 8",
    "not status == 'failed'",
    "model.attn_norm in ['cosine', 'lsa'] and test_top1 > 0.5",
    "model.attn_norm not in ('softmax',)",
    "0 < seed <= 1",
    "test_top1 > -1 and -seed < 0",
    "(seed == 0 or seed == 2) and not (model.num_heads > 10)",
    "status != 'completed'",
]


def _namespace(d: dict) -> dict:
    return {k: SimpleNamespace(**v) if isinstance(v, dict) else v for k, v in d.items()}


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_where_agrees_with_python(expr):
    for env in ENVS:
        # the naive reference: Python itself, on objects whose attributes are the dotted keys
        expected = bool(eval(expr, {"__builtins__": {}}, _namespace(env)))  # noqa: S307 - our own constants
        assert WhereExpr(expr)(flatten(env)) is expected, (expr, env)


@pytest.mark.parametrize("expr,problem", [
    ("__import__('os').system('x')", "not allowed"),
    ("seed.__class__", None),  # a dotted name that is no column: unknown, see below
    ("seed +", "cannot parse"),
    ("seed is None", "operator Is is not allowed"),
    ("[x for x in y]", "not allowed"),
    ("seed in [a]", "lists may hold only constants"),
    ("lambda: 1", "not allowed"),
])
def test_where_rejects_anything_but_the_mini_language(expr, problem):
    if problem is None:
        w = WhereExpr(expr)
        with pytest.raises(UserError, match="unknown name 'seed.__class__'"):
            w.check_names({"seed"})
        return
    with pytest.raises(UserError, match=problem) as e:
        WhereExpr(expr)
    assert "\n" not in str(e.value)


def test_missing_or_mismatched_values_never_match():
    assert WhereExpr("test_top1 > 0.5")({"test_top1": None}) is False
    assert WhereExpr("test_top1 > 0.5")({"test_top1": "n/a"}) is False
    assert WhereExpr("test_top1 == None")({"test_top1": None}) is True
    with pytest.raises(UserError, match=r"unknown name 'tset_top1' \(did you mean 'test_top1'\?\)"):
        WhereExpr("tset_top1 > 0").check_names({"test_top1", "seed"})


ROWS = [
    {"run_id": "a1", "level": "4", "seed": 0, "status": "completed", "test_top1": 0.612345, "params": 954234,
     "error": None},
    {"run_id": "b2", "level": "8|x", "seed": 1, "status": "failed", "test_top1": None, "params": None,
     "error": "boom, \"quoted\""},
]


def test_formats_round_trip_and_render():
    assert json.loads(format_rows(ROWS, "json")) == ROWS
    back = list(csv.DictReader(io.StringIO(format_rows(ROWS, "csv"))))
    assert [r["run_id"] for r in back] == ["a1", "b2"] and back[1]["error"] == ROWS[1]["error"]
    assert float(back[0]["test_top1"]) == ROWS[0]["test_top1"]  # csv keeps full precision
    md = format_rows(ROWS, "md").splitlines()
    assert md[0].startswith("| run_id |") and set(md[1]) <= {"|", "-"} and len(md) == 4
    assert "8\\|x" in md[3] and "61.23" in md[2] and "954,234" in md[2]  # accuracies in %, as in the report
    assert "| test_top1 % |" in md[0]
    table = format_rows(ROWS, "table")
    assert "a1" in table and "61.23" in table and "test_top1 %" in table and "954,234" in table and "failed" in table
    assert format_rows([], "table") == "(no runs match)"
    with pytest.raises(UserError, match="--format: must be one of table, csv, json, md"):
        format_rows(ROWS, "xlsx")


def test_open_index_needs_a_study_directory(tmp_path):
    with pytest.raises(UserError, match="not a vitlab study directory"):
        open_index(tmp_path)


def test_index_writer_keeps_one_row_per_run_and_factor(tmp_path):
    (tmp_path / "spec.yaml").write_text("name: x\n")
    with IndexWriter(tmp_path) as w:
        w.set_meta({"name": "x", "kind": "study", "factors": {"b": ["1"], "a": ["1", "2"]}})
        for factor, level, order in (("a", 1, 0), ("a", 2, 1), ("b", 1, 0)):
            rid = "shared" if level == 1 else "other"
            w.add_run(rid, factor, level, str(level), order, 0, {factor: level}, {"seed": 0})
        w.add_run("shared", "a", 1, "1", 0, 0, {"a": 1}, {"seed": 0})  # again: ignored
        w.set_status("shared", "completed", summary={"test_top1": 0.5}, add_attempt=True)
        w.add_epoch("shared", {"epoch": 1, "val_top1": 0.25})
        w.add_epoch("shared", {"epoch": 1, "val_top1": 0.3})  # replaced, not duplicated
    recs = open_index(tmp_path).runs()
    # ordered by factor in meta order (b first), then level order
    assert [(r.factor, r.run_id) for r in recs] == [("b", "shared"), ("a", "shared"), ("a", "other")]
    shared = [r for r in recs if r.run_id == "shared"]
    assert all(r.status == "completed" and r.attempts == 1 and r.summary == {"test_top1": 0.5} for r in shared)
    assert shared[0].epochs == [{"epoch": 1, "val_top1": 0.3}]
    assert open_index(tmp_path).runs(status="pending")[0].run_id == "other"
    assert [r.factor for r in open_index(tmp_path).runs(factor="a")] == ["a", "a"]


def test_summary_cells_stay_in_the_metric_range_and_flag_two_seeds():
    from vitlab.study.query import FEW_SEEDS_MARK, _cell

    cell = _cell([0.02, 0.50], "test_top1")  # raw t interval: 26.00 [-278.96, 330.96]
    assert cell == f"26.00 [0.00, 100.00]{FEW_SEEDS_MARK}"
    assert _cell([0.1, 2.5], "train_loss").split("[")[1].startswith("0.0000")
    assert FEW_SEEDS_MARK not in _cell([0.40, 0.42, 0.44], "test_top1")
