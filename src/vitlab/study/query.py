"""`vitlab results`: a study's runs as rows, filtered by a small safe expression, in four formats;
and `summary_table`, the compact per-level table the CLI and the demo print after a study."""
from __future__ import annotations

import ast
import io
import json
import math
import operator
import shutil
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from .. import stats
from ..schema import flatten, suggest
from ..errors import UserError, short_repr
from ..io import csv_text
from ..metrics import PCT_DECIMALS, RANGE_NONNEGATIVE, RANGE_PERCENT, metric_info
from ..rundir import RunStatus
from ..stats import FEW_SEEDS_MARK
from .index import RunRecord, open_index

FORMATS = ("table", "csv", "json", "md")
#: Width of rendered tables when the output is not a terminal (files, pipes, CI logs).
TABLE_WIDTH = 200
#: Significant decimals of floats in the table and md formats (csv and json keep full precision).
FLOAT_DECIMALS = 4

#: Deepest nesting a --where expression may have (`not not ...`, `- - ...`, brackets), and its length:
#: the interpreter recurses over the tree, so both are bounded before it runs.
MAX_WHERE_DEPTH = 50
MAX_WHERE_CHARS = 10_000

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


# ----------------------------------------------------------------------------------------------
# --where


def _dotted(node: ast.AST) -> str | None:
    """`model.num_heads` (an Attribute chain on a Name) -> "model.num_heads"."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _depth(root: ast.AST) -> int:
    """Nesting depth of a syntax tree, computed without recursion."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


class WhereExpr:
    """A filter such as `model.num_heads == 4 and seed < 2` or `status in ['failed', 'diverged']`.

    Parsed with `ast` and interpreted by hand: only names (dotted config keys, columns, summary
    fields), constants, lists/tuples of constants, comparisons, and/or/not and unary minus.
    Nothing is ever passed to eval. A comparison that cannot be made (a missing value, a string
    against a number) is false.
    """

    def __init__(self, text: str):
        self.text = text
        if len(text) > MAX_WHERE_CHARS:
            raise UserError(f"--where: longer than {MAX_WHERE_CHARS:,} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as e:
            raise UserError(f"--where: cannot parse {short_repr(text)} ({e.msg})") from None
        except (RecursionError, MemoryError):  # Python's parser gives up on very deep nesting
            raise UserError(f"--where: nested deeper than {MAX_WHERE_DEPTH} levels") from None
        if _depth(tree.body) > MAX_WHERE_DEPTH:
            raise UserError(f"--where: nested deeper than {MAX_WHERE_DEPTH} levels")
        self.body = tree.body
        self.names: set[str] = set()
        self._check(self.body)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARE:
                    raise UserError(f"--where: operator {type(op).__name__} is not allowed in {short_repr(self.text)}")
            for v in [node.left, *node.comparators]:
                self._check(v)
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if name is None:
                raise UserError(f"--where: {short_repr(ast.unparse(node))} is not a column or config key")
            self.names.add(name)
        elif isinstance(node, ast.Constant):
            pass
        elif isinstance(node, (ast.List, ast.Tuple)):
            for v in node.elts:
                if not isinstance(v, ast.Constant):
                    raise UserError(f"--where: lists may hold only constants, got {short_repr(ast.unparse(v))}")
        else:
            raise UserError(f"--where: {short_repr(ast.unparse(node))} is not allowed (only names, constants, "
                            "comparisons, and/or/not)")

    def check_names(self, known: set[str]) -> None:
        for name in sorted(self.names):
            if name not in known:
                raise UserError(f"--where: unknown name {name!r}" + suggest(name, known))

    def __call__(self, env: dict) -> bool:
        return bool(self._eval(self.body, env))

    def _eval(self, node: ast.AST, env: dict) -> Any:
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self._eval(v, env) for v in node.values)
            return any(self._eval(v, env) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, env)
            if isinstance(node.op, ast.Not):
                return not v
            return -v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, env)
            for op, right_node in zip(node.ops, node.comparators):
                right = self._eval(right_node, env)
                try:
                    ok = _COMPARE[type(op)](left, right)
                except TypeError:  # None < 3, "a" < 3: no answer, so the row does not match
                    return False
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, (ast.Name, ast.Attribute)):
            return env.get(_dotted(node))
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [e.value for e in node.elts]
        raise AssertionError(node)  # _check rejected everything else



# ----------------------------------------------------------------------------------------------
# rows


def _row(rec: RunRecord, metrics: list[str], varied_cols: list[str]) -> dict:
    s = rec.summary or {}
    row = {"run_id": rec.run_id, "factor": rec.factor, "level": rec.level_label, "seed": rec.seed}
    for key in varied_cols:
        row[key] = rec.varied.get(key)
    row.update(status=rec.status, attempts=rec.attempts, epochs=s.get("epochs_run"))
    for m in metrics:
        row[m] = s.get(m)
    if rec.status == RunStatus.FAILED:
        row["error"] = s.get("error")
    return row


def results_rows(study_dir: str | Path, where: str | None = None) -> list[dict]:
    """One dict per index row (run x factor): ids, level, seed, status, the spec's metrics; for a
    grid or a search also the varied keys. `where` filters on any column, summary field or
    dotted config key."""
    expr = WhereExpr(where) if where else None
    with open_index(study_dir) as index:
        meta = index.meta()
        records = index.runs()
    metrics = list(meta.get("metrics", []))
    varied_cols: list[str] = []
    if meta.get("mode") == "grid" or meta.get("kind") == "search":
        for rec in records:
            varied_cols += [k for k in rec.varied if k not in varied_cols]
    rows, envs = [], []
    for rec in records:
        row = _row(rec, metrics, varied_cols)
        env = {**flatten(rec.config), **{k: v for k, v in (rec.summary or {}).items() if not isinstance(v, dict)},
               **row}
        rows.append(row)
        envs.append(env)
    if expr is None:
        return rows
    known = set().union(*(e.keys() for e in envs)) if envs else set()
    known |= {"run_id", "factor", "level", "seed", "status", "attempts", "epochs"}
    expr.check_names(known)
    return [row for row, env in zip(rows, envs) if expr(env)]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:,.0f}" if abs(v) >= 10_000 else f"{v:.{FLOAT_DECIMALS}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def format_rows(rows: list[dict], fmt: str = "table") -> str:
    """Render rows as a rich table, CSV, JSON (list of objects) or a Markdown table."""
    if fmt not in FORMATS:
        raise UserError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}" + suggest(str(fmt), FORMATS))
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    if fmt == "csv":
        body = [[json.dumps(v) if isinstance(v, (list, dict)) else v for v in (r.get(k) for k in cols)] for r in rows]
        return csv_text(cols, body).rstrip("\n")
    if not rows:
        return "(no runs match)"
    # for reading, accuracies in % as in the report's tables (CSV and JSON keep the stored fractions,
    # which --where compares against)
    title = {c: c + " %" if _percent(c) else c for c in cols}
    if fmt == "md":
        lines = ["| " + " | ".join(title[c] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(_shown(c, r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in rows]
        return "\n".join(lines)

    t = Table(show_edge=False, pad_edge=False)
    for c in cols:
        t.add_column(title[c], justify="right" if any(isinstance(r.get(c), (int, float)) for r in rows) else "left")
    for r in rows:
        t.add_row(*(_shown(c, r.get(c)) for c in cols))
    return _render(t)


def _percent(column: str) -> bool:
    """Whether a column is a metric stored as a fraction and printed in % (`vitlab.metrics`)."""
    return metric_info(column).unit == "%"


def _shown(column: str, v: Any) -> str:
    """A cell as `results` prints it for reading: percentage metrics (a fraction stored) in %."""
    if isinstance(v, float) and math.isfinite(v) and _percent(column):
        return f"{100 * v:.{PCT_DECIMALS}f}"
    return _fmt(v)


def _render(renderable) -> str:
    """Plain text of a rich renderable, as wide as the terminal (or TABLE_WIDTH when not a terminal)."""
    buf = io.StringIO()
    width = shutil.get_terminal_size((TABLE_WIDTH, 24)).columns
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(renderable)
    return buf.getvalue().rstrip("\n")


# ----------------------------------------------------------------------------------------------
# summary table


def _cell(values: list[float], metric: str) -> str:
    """`mean [lo, hi]` of one metric over seeds (just the mean for one seed): the Student-t interval."""
    if not values:
        return "-"
    pct = _percent(metric)
    ci = stats.mean_ci([v * 100.0 if pct else v for v in values])
    num = (lambda x: f"{x:.{PCT_DECIMALS}f}") if pct else _fmt
    if math.isnan(ci.lo) or ci.lo == ci.hi:  # one seed, or the same value for every seed (params, flops)
        return num(ci.mean)
    # summary metrics are accuracies in [0, 100]% or losses, times, counts >= 0: a mean cannot leave that
    lo, hi = stats.clip_interval(ci.lo, ci.hi, RANGE_PERCENT if pct else RANGE_NONNEGATIVE)
    few = FEW_SEEDS_MARK if len(values) < stats.MIN_SEEDS_TO_BOUND else ""
    return f"{num(ci.mean)} [{num(lo)}, {num(hi)}]{few}"


def summary_table(study_dir: str | Path, warn_damaged: bool = True) -> str:
    """Per factor and level: completed seeds and the mean [95% t interval] over seeds of each of
    the spec's metrics (accuracies, macro scores and ECE in %). A search lists its best trials.
    `warn_damaged` False: the caller (a coordinator) has warned about damaged runs already."""
    with open_index(study_dir, warn_damaged=warn_damaged) as index:
        meta = index.meta()
        records = index.runs()

    if meta.get("kind") == "search":
        return _search_table(meta, records)
    metrics = [m for m in meta.get("metrics", []) if m not in ("flops", "train_time_s")]
    parts = []
    for factor, labels in meta.get("factors", {}).items():
        ref = meta.get("reference", {}).get(factor)
        t = Table(title=f"{meta['name']}: {factor}" + ("  (synthetic data)" if _synthetic(records) else ""),
                  show_edge=False, pad_edge=False)
        t.add_column("level")
        t.add_column("runs", justify="right")
        for m in metrics:
            t.add_column(m + (" %" if _percent(m) else ""), justify="right")
        for label in labels:
            recs = [r for r in records if r.factor == factor and r.level_label == label]
            done = [r for r in recs if r.status == RunStatus.COMPLETED]
            other = sorted({r.status for r in recs} - {RunStatus.COMPLETED.value})
            # planned runs of the level: its index rows (seeds x seed-source combinations; an adaptive
            # study's rows grow with its seeds)
            seeds = f"{len(done)}/{len(recs)}" + (f" ({', '.join(other)})" if other else "")
            cells = []
            for m in metrics:
                vals = [float(r.summary[m]) for r in done if isinstance(r.summary.get(m), (int, float))
                        and math.isfinite(float(r.summary[m]))]
                cells.append(_cell(vals, m))
            t.add_row(label + (" (ref)" if label == ref else ""), seeds, *cells)
        parts.append(_render(t))
    note = ("cells: mean [95% Student-t interval] over completed seeds, cut to the metric's valid range "
            "(0-100% for accuracies, >= 0 otherwise)")
    if any(FEW_SEEDS_MARK in p for p in parts):
        note += f"; {FEW_SEEDS_MARK} {stats.MIN_SEEDS_TO_BOUND - 1} seeds: too few to bound the mean"
    parts.append(note)
    return "\n\n".join(parts)


def _synthetic(records: list[RunRecord]) -> bool:
    return any(r.summary.get("synthetic") for r in records)


def _search_table(meta: dict, records: list[RunRecord]) -> str:
    obj, maximize = meta.get("objective", "val_top1"), meta.get("direction", "maximize") == "maximize"
    done = [r for r in records if r.status == RunStatus.COMPLETED and isinstance(r.summary.get(obj), (int, float))]
    done.sort(key=lambda r: r.summary[obj], reverse=maximize)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    t = Table(title=f"{meta['name']}: best trials by {obj} ({'max' if maximize else 'min'}); "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), show_edge=False, pad_edge=False)
    keys = list(meta.get("space", {}))
    for c in ["trial", *keys, obj, "test_top1"]:
        t.add_column(c, justify="left" if c == "trial" else "right")
    for r in done[:10]:
        t.add_row(r.level_label, *(_fmt(r.varied.get(k)) for k in keys), _fmt(r.summary.get(obj)),
                  _fmt(r.summary.get("test_top1")))
    return _render(t)
