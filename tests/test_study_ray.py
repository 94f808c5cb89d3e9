"""The Ray backend: a local Ray instance trains a 2-run study (each run a Ray task)."""
from __future__ import annotations

import pytest
import yaml

from vitlab.io import read_jsonl
from vitlab.study import open_index, run_study

ray = pytest.importorskip("ray")

SPEC = {
    "name": "tiny_ray",
    "base": {
        "device": "cpu",
        "data": {"name": "synthetic", "synthetic_train": 400, "synthetic_test": 200, "val_fraction": 0.2},
        "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
        "train": {"epochs": 2, "batch_size": 64, "eval_batch_size": 200},
    },
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": [0],
}


def test_local_ray_instance_runs_a_two_run_study(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "study"
    result = run_study(spec, out, workers=2, backend="ray", progress=False)
    assert result.ok and result.counts == {"completed": 2}
    assert not ray.is_initialized()  # the instance it started is shut down
    recs = open_index(out).runs()
    assert [r.level_label for r in recs] == ["softmax", "cosine"]
    for r in recs:
        assert r.status == "completed" and r.attempts == 1
        assert [e["epoch"] for e in r.epochs] == [1, 2]
        assert len(read_jsonl(out / "runs" / r.run_id / "metrics.jsonl")) == 2
        # the run config the Ray task trained with: threads from the per-task CPU share
        cfg = yaml.safe_load((out / "runs" / r.run_id / "config.yaml").read_text())
        assert cfg["train"]["threads"] >= 1 and cfg["train"]["progress"] is False
    # a rerun finds everything done and starts no Ray instance
    again = run_study(spec, out, workers=2, backend="ray", progress=False)
    assert again.ok and again.trained == []
