"""The re-run specs of findings/ (issue 18), checked before anything runs: each declares its
comparisons and equivalence margin, its FLOP budget trains the reference level >= 2 epochs of the
54,000 Fashion-MNIST training images, its header states the estimate, every level builds; and each
runs end to end on its smoke profile (slow)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from vitlab.study import compare, open_index, run_study
from vitlab.study.plan import expand, reference_labels
from vitlab.study.spec import load_spec, resolve
from vitlab.training.flops import run_step_flops

FINDINGS = Path(__file__).resolve().parent.parent / "findings"
SPECS = ["mobilevit_heads", "mobilevit_complexity", "vit_attention_norm", "mobilevit_expansion"]
TRAIN_IMAGES = 54_000
"""Fashion-MNIST's 60,000 training images less the 10% held out for validation."""
MIN_EPOCHS = 2
"""The issue's floor: the reference level trains at least this many epochs."""
MAX_HOURS = 2.5
"""Each study must fit about this much wall clock on the 2-core machine (its header's estimate)."""


@pytest.mark.parametrize("name", SPECS)
def test_rerun_spec_declares_its_family_margin_budget_and_estimate(name):
    path = FINDINGS / f"{name}.yaml"
    spec = resolve(load_spec(path))
    factor = next(iter(spec.factors))
    assert spec.compare.get(factor) is not None and spec.equivalence_margin and spec.equivalence_margin > 0
    family = compare.declared(spec)[factor]
    assert 1 <= len(family) <= 6  # a small declared family: Holm is not diluted
    assert "Fashion-MNIST" in spec.description and "CIFAR" not in spec.description
    assert spec.adaptive is not None and spec.adaptive.min == 3 and spec.adaptive.metric == spec.metrics[0]
    runs = expand(path)  # builds every level's model on the meta device
    ref = reference_labels(spec)[factor]
    cfg = next(r.config for r in runs if r.level_label == ref)
    assert cfg.data.name == "fashion_mnist" and cfg.train.budget_flops is not None
    steps = int(cfg.train.budget_flops // run_step_flops(cfg.model, 10, 1, cfg.model.image_size, cfg.train.batch_size))
    epochs = steps / (TRAIN_IMAGES // cfg.train.batch_size)
    assert epochs >= MIN_EPOCHS
    header = re.sub(r"\n#\s*", " ", path.read_text(encoding="utf-8").split("\nname:")[0])  # one line
    assert f"{steps:,} steps" in header  # the header's step count is the one the budget buys
    worst = max(float(m) for m in re.findall(r"at most (?:\d+ runs = )?(\d+) min", header))
    assert worst <= MAX_HOURS * 60


def test_heads_equal_time_profile_budgets_cpu_time():
    spec = resolve(load_spec(FINDINGS / "mobilevit_heads.yaml"), "equal_time")
    train = spec.base["train"]
    assert train["budget_flops"] is None and train["budget_minutes"] == 7 and train["budget_clock"] == "cpu"
    assert [c.label for c in compare.declared(spec)["model.num_heads"]] == \
        [c.label for c in compare.declared(resolve(load_spec(FINDINGS / "mobilevit_heads.yaml")))["model.num_heads"]]


def test_attention_study_runs_the_literal_standard_normalization():
    spec = resolve(load_spec(FINDINGS / "vit_attention_norm.yaml"))
    assert "zscore_qkv" in spec.factors["model.attn_norm"]
    labels = [c.label for c in compare.declared(spec)["model.attn_norm"]]
    assert "zscore_qkv − softmax" in labels and "zscore_qkv − zscore" in labels


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_rerun_spec_smoke(name, tmp_path):
    """The smoke profile end to end: real training of a few steps on synthetic images, adaptive seeds."""
    result = run_study(FINDINGS / f"{name}.yaml", tmp_path / name, profile="smoke", workers=1, progress=False)
    assert result.ok, result.errors
    meta = open_index(tmp_path / name).meta()
    assert meta["compare"] and meta["equivalence_margin"] and meta["adaptive"]
    assert not math.isnan(meta["adaptive_settings"]["equivalence_margin"])
