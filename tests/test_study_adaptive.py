"""Adaptive seeding: seeds are added only to the levels whose comparison is undecided."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from vitlab.io import atomic_write_json, atomic_write_text
from vitlab.study import open_index, run_study
from vitlab.study.query import results_rows

# A fake trainer's accuracy per level: "cosine" is far from the reference (softmax) with little seed
# noise, "zscore" is as good as the reference with a lot of it.
EFFECT = {"softmax": 0.70, "cosine": 0.80, "zscore": 0.70}
NOISE = {"softmax": 0.002, "cosine": 0.002, "zscore": 0.03}

SPEC = {
    "name": "adaptive",
    "base": {"device": "cpu", "data": {"name": "synthetic"}, "model": {"name": "vit_nano"},
             "train": {"epochs": 1}},
    "vary": {"model.attn_norm": ["softmax", "cosine", "zscore"]},
    "seeds": {"adaptive": True, "min": 3, "max": 9, "target_delta": 1.0},
    "metrics": ["test_top1"],
}


def fake_trainer(cfg, out_dir, resume=True, on_epoch=None, progress=None, context=None):
    """Writes a finished run directory whose test_top1 depends on the level and the seed."""
    norm, seed = cfg.model.attn_norm, cfg.seed
    rng = np.random.default_rng([seed, sorted(EFFECT).index(norm)])
    value = EFFECT[norm] + NOISE[norm] * float(rng.standard_normal())
    if os.environ.get("VITLAB_TEST_KILL_AT") and norm == "zscore" and seed == int(os.environ["VITLAB_TEST_KILL_AT"]):
        os.kill(os.getppid(), signal.SIGKILL)  # the coordinator dies while the study is adding seeds
    out = Path(out_dir)
    atomic_write_text(out / "metrics.jsonl", json.dumps({"epoch": 1, "val_top1": value}) + "\n")
    summary = {"status": "completed", "epochs_run": 1, "best_epoch": 1, "val_top1": value, "test_top1": value}
    atomic_write_json(out / "summary.json", summary)
    return summary


def seeds_by_level(out: Path) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    for r in open_index(out).runs():
        got.setdefault(r.level_label, []).append(r.seed)
    return {k: sorted(v) for k, v in got.items()}


def test_adaptive_study_stops_a_clear_level_and_adds_seeds_to_a_close_one(tmp_path):
    out = tmp_path / "study"
    result = run_study(SPEC, out, workers=1, progress=False, trainer=fake_trainer)
    assert result.ok, result.errors
    seeds = seeds_by_level(out)
    meta = open_index(out).meta()["adaptive"]["model.attn_norm"]
    # cosine is 10 points better with tiny noise: the paired t-test decides it at the first 3 seeds
    # (a' = 0.05 / 2 comparisons; the exact sign-flip test would have needed 7)
    assert seeds["cosine"] == list(range(3)) and meta["cosine"]["stopped"].startswith("stopped at n = 3: difference")
    # zscore is as good as softmax with 3 points of seed noise: undecided until max
    assert seeds["zscore"] == list(range(9)) and meta["zscore"]["stopped"].startswith("reached max = 9")
    assert seeds["softmax"] == list(range(9)) and meta["softmax"]["stopped"] == "reference"
    # rerunning does nothing
    again = run_study(SPEC, out, workers=1, progress=False, trainer=fake_trainer)
    assert again.trained == [] and seeds_by_level(out) == seeds


def test_adaptive_study_killed_mid_way_ends_with_the_same_seeds_and_table(tmp_path):
    ref = tmp_path / "ref"
    run_study(SPEC, ref, workers=1, progress=False, trainer=fake_trainer)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "killed"
    code = (f"from test_study_adaptive import fake_trainer as t; from vitlab.study import run_study; "
            f"run_study({str(spec)!r}, {str(out)!r}, workers=1, progress=False, trainer=t)")
    env = dict(os.environ, VITLAB_TEST_KILL_AT="5",
               PYTHONPATH=str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    result = run_study(spec, out, workers=1, progress=False, trainer=fake_trainer)
    assert result.ok
    assert seeds_by_level(out) == seeds_by_level(ref)

    def rows(d):
        return sorted((r["level"], r["seed"], r["test_top1"]) for r in results_rows(d))

    assert rows(out) == rows(ref)


def test_rebuilt_index_keeps_the_seeds_adaptive_seeding_added(tmp_path):
    from vitlab.study import rebuild_index

    out = tmp_path / "study"
    run_study(dict(SPEC, seeds={"adaptive": True, "min": 2, "max": 4, "target_delta": 1.0}), out, workers=1,
              progress=False, trainer=fake_trainer)
    before = seeds_by_level(out)
    assert before["zscore"] == [0, 1, 2, 3]
    (out / "index.sqlite").unlink()
    rebuild_index(out)
    assert seeds_by_level(out) == before
