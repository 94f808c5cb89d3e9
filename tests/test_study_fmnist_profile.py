"""The shipped studies' `fmnist` profiles: the Fashion-MNIST recipe of studies/base/fashion_mnist.yaml
under one FLOP budget per study (`fmnist`), or under one time budget per run (`fmnist_time`, which the
committed findings ran), sized to about half an hour of training per study on 2 CPU cores with 2
workers, so all four fit one working session."""
import dataclasses
import math
from pathlib import Path

import pytest

from vitlab.config import load_config
from vitlab.schema import to_dict
from vitlab.study.plan import data_shape, expand
from vitlab.training import run_training
from vitlab.training.flops import run_step_flops, steps_for_flops

from realdata import real_data_root

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SPECS = ["mobilevit_heads", "mobilevit_expansion", "mobilevit_complexity", "vit_attention_norm"]
WORKERS = 2
STUDY_MINUTES = 30  # training time per study; analysis adds about a minute per run
MIN_STEPS = 100  # every level of a FLOP-budgeted profile trains at least this many steps


def recipe_part(cfg) -> dict:
    """The config without what a study varies or a profile budgets: model, seed, train.budget_*."""
    d = to_dict(cfg)
    d.pop("model"), d.pop("seed")
    for key in ("budget_minutes", "budget_clock", "budget_flops"):
        d["train"].pop(key)
    return d


@pytest.mark.parametrize("name", SPECS)
def test_fmnist_profile_is_the_recipe_under_one_flop_budget(name):
    """Every run of a study gets the same training FLOPs; the steps that buys are the same for every
    seed of a level (counted, not timed) and enough to learn something at every level."""
    runs = expand(STUDIES / f"{name}.yaml", "fmnist")
    recipe = load_config(STUDIES / "base" / "fashion_mnist.yaml")
    budgets = {r.config.train.budget_flops for r in runs}
    assert len(budgets) == 1 and None not in budgets
    steps: dict[str, set] = {}
    for r in runs:
        c = r.config
        assert c.train.budget_minutes is None and c.train.steps is None
        assert recipe_part(c) == recipe_part(recipe), r.level_label
        in_chans, size = data_shape(c)
        per_step = run_step_flops(c.model, 10, in_chans, size, c.train.batch_size)
        steps.setdefault(r.level_label, set()).add(steps_for_flops(c.train.budget_flops, per_step))
    assert all(len(s) == 1 and s.pop() >= MIN_STEPS for s in steps.values()), steps
    assert {r.seed for r in runs} == {0, 1, 2}
    time_levels = {r.level_label for r in expand(STUDIES / f"{name}.yaml", "fmnist_time")}
    assert set(steps) == time_levels  # the two profiles compare the same levels


@pytest.mark.parametrize("name", SPECS)
def test_fmnist_time_profile_is_the_recipe_under_a_budget_that_fits_half_an_hour(name):
    runs = expand(STUDIES / f"{name}.yaml", "fmnist_time")
    recipe = load_config(STUDIES / "base" / "fashion_mnist.yaml")
    budgets = {r.config.train.budget_minutes for r in runs}
    assert len(budgets) == 1 and None not in budgets  # equal compute: one budget for every run ...
    assert {r.config.train.budget_clock for r in runs} == {"cpu"}  # ... however busy the machine
    for r in runs:
        assert recipe_part(r.config) == recipe_part(recipe), r.level_label
        assert r.config.model.image_size == 32 and r.config.data.name == "fashion_mnist"
    assert {r.seed for r in runs} == {0, 1, 2}
    trained = len({r.run_id for r in runs})  # a run shared between factors trains once
    assert math.ceil(trained / WORKERS) * budgets.pop() <= STUDY_MINUTES


@pytest.mark.parametrize("name", SPECS)
def test_fmnist_profile_run_trains_on_real_data(name, tmp_path):
    """A few steps of the reference run of each study on a slice of the real data (the full runs are
    minutes each; see benchmarks/RESULTS.md)."""
    root = str(real_data_root("fashion-mnist"))
    run = expand(STUDIES / f"{name}.yaml", "fmnist")[0]
    cfg = dataclasses.replace(run.config, data=dataclasses.replace(run.config.data, root=root,
                                                                   val_fraction=0.005, train_subset=320, test_subset=200),
                              train=dataclasses.replace(run.config.train, budget_flops=None, steps=5,
                                                        progress=False, threads=1))
    summary = run_training(cfg, tmp_path / "r")
    assert summary["status"] == "completed" and summary["dataset"] == "fashion_mnist"
    assert not summary["synthetic"] and summary["steps"] == 5 and summary["image_size"] == 32
    assert summary["train_loss"] < math.log(10) + 0.5 and 0.0 <= summary["test_top1"] <= 1.0


def test_expansion_small_data_profile_trains_every_level_the_same_epochs():
    """The overfitting claim needs equal training, not equal compute: every expansion rate (16
    included) trains the same epochs on the same seeded 1,000-image subset, with the recipe otherwise
    unchanged, and selects its epoch on validation images held out of the training set."""
    changed = {"data": ["val_fraction", "train_subset"], "train": ["epochs", "eval_batch_size"]}

    def shared(cfg) -> dict:
        d = recipe_part(cfg)
        for section, keys in changed.items():
            for k in keys:
                d[section].pop(k)
        return d

    runs = expand(STUDIES / "mobilevit_expansion.yaml", "fmnist_small_data")
    recipe = shared(load_config(STUDIES / "base" / "fashion_mnist.yaml"))
    assert sorted({r.config.model.expansion for r in runs}) == [1, 2, 4, 8, 16]
    assert {r.seed for r in runs} == {0, 1, 2} and len(runs) == 15
    for r in runs:
        c = r.config
        assert c.train.budget_minutes is None and c.train.steps is None and c.train.epochs == 30
        assert c.data.train_subset == 1000 and 0 < c.data.val_fraction and c.train.monitor == "val_top1"
        assert shared(c) == recipe, r.level_label
