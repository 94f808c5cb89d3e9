"""The study engine's structure and failure paths: one-way imports, damaged index, bad output paths."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import yaml

from vitlab.cli import main as cli_main
from vitlab.study import open_index, results_rows, run_study

SRC = Path(__file__).resolve().parents[1] / "src" / "vitlab"

TINY = {
    "name": "tiny",
    "base": {"device": "cpu",
             "data": {"name": "synthetic", "synthetic_train": 300, "synthetic_test": 100, "val_fraction": 0.2},
             "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
             "train": {"epochs": 1, "batch_size": 64, "threads": 1}},
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": 1,
}


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` that `path` imports, at any depth (lazy imports inside functions count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [f"{mod}.{a.name}" for a in node.names] if not node.module else [mod]
            out.update(names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vitlab"):
            out.add(node.module)
    return out


def _graph(pkg_dir: Path, package: str) -> dict[str, set[str]]:
    mods = {f"{package}.{p.stem}": p for p in pkg_dir.glob("*.py") if p.stem != "__init__"}
    return {m: {i for i in _imports(p, package) if i in mods and i != m} for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_study_engine_imports_flow_one_way():
    graph = _graph(SRC / "study", "vitlab.study")
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert "vitlab.study.optuna_glue" not in graph["vitlab.study.worker"]
    assert not any("optuna" in line for line in (SRC / "study" / "worker.py").read_text().splitlines()
                   if "import" in line)
    # the engine never imports the report layer above it
    for mod, path in ((m, SRC / "study" / f"{m.rsplit('.', 1)[1]}.py") for m in graph):
        assert not any(i.startswith("vitlab.report") for i in _imports(path, "vitlab.study")), mod


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.fixture(scope="module")
def done_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "study"
    result = run_study(TINY, out, workers=1, progress=False)
    assert result.ok, result.errors
    return out


def test_truncated_index_is_rebuilt_from_run_directories(done_study, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(done_study, out)
    data = (out / "index.sqlite").read_bytes()
    (out / "index.sqlite").write_bytes(data[: len(data) // 3])
    rows = results_rows(out)
    assert "rebuilding it from the run directories" in capsys.readouterr().err
    assert sorted(r["status"] for r in rows) == ["completed", "completed"]
    # the CLI too, and a coordinator rerun: nothing retrains
    (out / "index.sqlite").write_bytes(b"garbage, not sqlite" * 10)
    assert cli_main(["results", str(out), "--format", "csv"]) == 0
    (out / "index.sqlite").write_bytes(data[:100])
    again = run_study(TINY, out, workers=1, progress=False)
    assert again.trained == [] and again.ok
    assert len(open_index(out).runs()) == 2


def test_bad_study_out_paths_are_one_line_errors_and_leave_nothing(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    assert cli_main(["study", str(spec), "--out", str(loop / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "symlink loop" in err, err

    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli_main(["study", str(spec), "--out", str(a_file)]) == 2
    assert "not a directory" in capsys.readouterr().err

    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert cli_main(["study", str(spec), "--out", str(ro / "s")]) == 2
        assert "cannot use as a study directory" in capsys.readouterr().err

    # a directory refused after it was created and locked: neither it nor its lock stays behind
    bad = dict(TINY, vary={"model.attn_norm": ["softmax"]}, name="other")
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(bad))
    target = tmp_path / "taken"
    assert cli_main(["study", str(other), "--out", str(target), "--workers", "1"]) in (0, 1)
    before = sorted(p.name for p in target.iterdir())
    assert cli_main(["study", str(spec), "--out", str(target)]) == 2
    assert sorted(p.name for p in target.iterdir()) == before
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("keep")
    assert cli_main(["study", str(spec), "--out", str(junk)]) == 2
    assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]


def test_oversized_study_is_refused_fast_with_its_count(tmp_path, capsys):
    import time

    huge = dict(TINY, vary=None, grid={"optim.lr": [i / 1e6 + 1e-4 for i in range(1000)],
                                       "optim.weight_decay": [i / 1e4 for i in range(1000)]})
    huge = {k: v for k, v in huge.items() if v is not None}
    spec = tmp_path / "huge.yaml"
    spec.write_text(yaml.safe_dump(huge))
    t0 = time.monotonic()
    assert cli_main(["study", str(spec), "--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err
    assert "1000000 runs" in err.replace(",", "") and len(err.strip().splitlines()) == 1, err
    assert time.monotonic() - t0 < 30  # counted, not expanded (generous bound: a shared CI machine)
    assert not (tmp_path / "h").exists()
    many_seeds = dict(TINY, seeds=1_000_000_000)
    spec.write_text(yaml.safe_dump(many_seeds))
    assert cli_main(["study", str(spec), "--out", str(tmp_path / "h"), "--max-runs", "100"]) == 2
    assert "2000000000" in capsys.readouterr().err.replace(",", "")


def test_a_study_analyzes_its_runs_resumably(tmp_path):
    from vitlab.analysis import read_analysis

    spec = dict(TINY, analysis=["calibration", "efficiency"],
                analysis_options={"latency_calls": 3, "warmup_calls": 1, "throughput_batch": 16,
                                  "throughput_calls": 1, "compile": False},
                metrics=["test_top1", "latency_ms_b1"])
    out = tmp_path / "study"
    result = run_study(spec, out, workers=1, progress=False)
    assert result.ok, result.errors
    runs = sorted((out / "runs").iterdir())
    for run in runs:
        assert set(read_analysis(run)) >= {"calibration", "efficiency"}
    rows = results_rows(out)
    assert all(r["latency_ms_b1"] > 0 for r in rows)
    stamp = (runs[1] / "checkpoints" / "best.pt").stat().st_mtime_ns
    (runs[0] / "analysis" / "analysis.json").unlink()  # e.g. killed during its analysis
    again = run_study(spec, out, workers=1, progress=False)
    assert again.trained == [runs[0].name] and again.ok
    assert set(read_analysis(runs[0])) >= {"calibration", "efficiency"}
    assert (runs[1] / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp  # nothing retrained
    assert run_study(spec, out, workers=1, progress=False).trained == []


def test_analysis_options_in_a_spec_are_checked(tmp_path):
    from vitlab.errors import UserError

    with pytest.raises(UserError, match="analysis_options.latency_cals: unknown key"):
        run_study(dict(TINY, analysis=["efficiency"], analysis_options={"latency_cals": 3}), tmp_path / "s")
    assert not (tmp_path / "s").exists()
