"""Recipes under studies/recipes/: each parses and validates as a run config (training them is a benchmark)."""
from pathlib import Path

from vitlab.config import load_config
from vitlab.models import build_model, count_params
from vitlab.study.plan import expand

RECIPES = Path(__file__).resolve().parents[1] / "studies" / "recipes"

FASHION_MNIST_SHAPE = dict(num_classes=10, in_chans=1, data_image_size=28)
MAX_PARAMS = 1_000_000
"""The 10-minute recipe's model limit (issue 17)."""
SECONDS_PER_STEP = 0.22
"""The recipe's training step on the quiet 2-core machine, the slower of two measurements (benchmarks/RESULTS.md)."""
OVERHEAD_MINUTES = 0.7
"""Process start-up, data loading and the test evaluation, measured (process wall clock minus training)."""
WALL_LIMIT_MINUTES = 10.0


def test_fashion_mnist_10min_recipe_validates():
    cfg = load_config(RECIPES / "fashion_mnist_10min.yaml")
    assert cfg.data.name == "fashion_mnist" and cfg.data.root is None  # VITLAB_DATA_ROOT or data.root=
    assert cfg.train.steps * SECONDS_PER_STEP / 60 + OVERHEAD_MINUTES < WALL_LIMIT_MINUTES  # same steps anywhere
    assert cfg.train.budget_minutes is None and cfg.train.eval_hflip
    assert cfg.train.amp == "auto" and cfg.train.monitor.startswith("val_")
    model = build_model(cfg.model, **FASHION_MNIST_SHAPE)
    assert count_params(model) <= MAX_PARAMS


def test_recipe_overrides_validate_like_any_config():
    cfg = load_config(RECIPES / "fashion_mnist_10min.yaml", ["data.root=/data", "train.steps=100"])
    assert cfg.data.root == "/data" and cfg.train.steps == 100


def test_amp_paired_spec_pairs_precisions_by_seed():
    """benchmarks/amp_paired.yaml: per model, the same seeds and steps in float32 and bf16."""
    spec = Path(__file__).resolve().parents[1] / "benchmarks" / "amp_paired.yaml"
    for profile, model, steps in (("vit_study_b", "vit_study_b", 300), ("mobilevit_xxs", "mobilevit_xxs", 300),
                                  ("vit_study_b_2ep", "vit_study_b", 1692)):
        runs = expand(spec, profile)
        assert {r.config.model.name for r in runs} == {model}
        by_amp = {amp: sorted(r.seed for r in runs if r.config.train.amp == amp) for amp in ("none", "bf16")}
        assert by_amp == {"none": [0, 1, 2], "bf16": [0, 1, 2]}
        assert {r.config.train.steps for r in runs} == {steps} and {r.config.data.name for r in runs} == {"fashion_mnist"}
