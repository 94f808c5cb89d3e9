"""`--where` bounds the nesting it interprets: 1,000 nested `not` or unary minus, or brackets, are a
one-line error (exit 2), never a RecursionError or MemoryError."""
from __future__ import annotations

import pytest

from test_report_data import study_meta, study_records
from test_report_study import write_index
from vitlab.cli import main
from vitlab.errors import UserError
from vitlab.study.query import MAX_WHERE_CHARS, MAX_WHERE_DEPTH, WhereExpr

DEEP = [
    "not " * 1000 + "seed == 1",
    "-" * 1000 + "1 == seed",
    "- " * 1000 + "1 == seed",
    "not " * 20000 + "seed == 1",              # past what Python's parser itself can hold
    "(" * 1000 + "seed" + ")" * 1000 + " == 1",
    "seed == " + "[" * 500 + "1" + "]" * 500,
    ".".join(["model"] * 2000) + " == 1",       # an attribute chain
]


@pytest.mark.parametrize("expr", DEEP, ids=["not", "minus", "spaced-minus", "20000-not", "parens", "lists", "dots"])
def test_deep_where_is_one_line(expr, tmp_path, capsys):
    with pytest.raises(UserError) as e:
        WhereExpr(expr)
    msg = str(e.value)
    assert msg.startswith("--where: ") and "\n" not in msg and len(msg) < 300, msg[:300]
    write_index(tmp_path, study_records(), study_meta())
    assert main(["results", str(tmp_path), "--where", expr]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err


def test_reasonable_nesting_still_works():
    expr = "not " * (MAX_WHERE_DEPTH - 10) + "seed == 1"
    assert WhereExpr(expr)({"seed": 1}) is True  # an even number of nots
    assert WhereExpr("- - seed == 1")({"seed": 1})
    wide = " or ".join(f"seed == {i}" for i in range(500))  # wide is fine: it is not deep
    assert WhereExpr(wide)({"seed": 499})


def test_overlong_where_is_refused():
    with pytest.raises(UserError, match="longer than"):
        WhereExpr("seed == 1 or " * (MAX_WHERE_CHARS // 12 + 1) + "seed == 2")
