"""Study specs: parsing, profiles, expansion, run IDs, and one-line errors for malformed specs."""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import yaml

from vitlab.cli import main as cli_main
from vitlab.config import RunConfig
from vitlab.identity import config_hash
from vitlab.schema import build
from vitlab.errors import UserError
from vitlab.study import plan as planmod
from vitlab.study import spec as specmod
from vitlab.study.plan import expand
from vitlab.study.spec import load_spec, resolve

STUDIES = Path(__file__).resolve().parents[1] / "studies"

TINY_BASE = {
    "device": "cpu",
    "data": {"name": "synthetic", "synthetic_train": 400, "synthetic_test": 200},
    "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
    "train": {"epochs": 2, "batch_size": 64},
}


def write_spec(tmp_path: Path, data, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def spec_dict(**over) -> dict:
    d = {"name": "t", "base": TINY_BASE, "vary": {"model.attn_norm": ["softmax", "cosine"]}, "seeds": 2}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


# ---------------------------------------------------------------------------------------------- expansion


def test_vary_expands_one_factor_at_a_time_with_shared_base_runs(tmp_path):
    d = spec_dict(vary={"model.attn_norm": ["softmax", "cosine"], "model.num_heads": [1, 2, 4]}, seeds=[0, 5])
    runs = expand(write_spec(tmp_path, d))
    assert len(runs) == (2 + 3) * 2
    by = {(r.factor, r.level_label, r.seed): r for r in runs}
    # the base has softmax and 2 heads: (attn_norm=softmax) and (num_heads=2) are the same runs
    for seed in (0, 5):
        assert by[("model.attn_norm", "softmax", seed)].run_id == by[("model.num_heads", "2", seed)].run_id
    assert len({r.run_id for r in runs}) == (2 + 3 - 1) * 2
    r = by[("model.num_heads", "4", 5)]
    assert r.config.model.num_heads == 4 and r.config.model.attn_norm == "softmax" and r.config.seed == 5
    assert r.varied == {"model.num_heads": 4} and r.level_order == 2
    # run ID is the lead's config hash of the resolved config (seed included)
    assert r.run_id == config_hash(r.config) and len(r.run_id) == 12


def test_run_id_ignores_execution_only_fields_but_not_others():
    cfg = build(RunConfig, TINY_BASE)
    rid = planmod.run_id_of(cfg)
    assert planmod.run_id_of(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=3, progress=False))) == rid
    assert planmod.run_id_of(dataclasses.replace(cfg, seed=1)) != rid
    assert planmod.run_id_of(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))) != rid
    assert planmod.run_id_of(cfg, salt={"trial": 0}) != planmod.run_id_of(cfg, salt={"trial": 1})


def test_grid_is_the_cartesian_product(tmp_path):
    d = spec_dict(vary=None, grid={"model.num_heads": [1, 2], "optim.lr": [1e-3, 2e-3, 4e-3]}, seeds=1)
    runs = expand(write_spec(tmp_path, d))
    assert len(runs) == 6 and {r.factor for r in runs} == {"grid"}
    got = [(r.config.model.num_heads, r.config.optim.lr) for r in runs]
    assert got == list(itertools.product([1, 2], [1e-3, 2e-3, 4e-3]))
    assert runs[0].level_label == "num_heads=1, lr=0.001" and runs[5].level_order == 5
    study = resolve(load_spec(write_spec(tmp_path, d)))
    # the reference cell is the base (2 heads, lr 1e-3), not the first cell
    assert planmod.reference_labels(study) == {"grid": "num_heads=2, lr=0.001"}


def test_profiles_override_base_seeds_and_level_subsets(tmp_path):
    d = spec_dict(vary={"model.num_heads": [1, 2, 4]}, reference={"model.num_heads": 4},
                  profiles={"quick": {"overrides": {"train.epochs": 1, "data": {"synthetic_train": 300}},
                                      "seeds": 1, "vary": {"model.num_heads": [1, 2]}}})
    path = write_spec(tmp_path, d)
    full, quick = expand(path), expand(path, "quick")
    assert len(full) == 6 and len(quick) == 2
    assert all(r.config.train.epochs == 1 and r.config.data.synthetic_train == 300 for r in quick)
    assert all(r.config.data.synthetic_test == 200 for r in quick)  # nested override merges, not replaces
    rq = resolve(load_spec(path), "quick")
    # the reference level 4 is not in the quick subset: back to the default (base value 2)
    assert planmod.reference_labels(rq) == {"model.num_heads": "2"}
    assert planmod.reference_labels(resolve(load_spec(path))) == {"model.num_heads": "4"}


def test_integer_and_float_spellings_are_the_same_level(tmp_path):
    base = dict(TINY_BASE, model={"name": "mobilevit_xxs", "expansion": 2, "width_mult": 0.25})
    d = spec_dict(base=base, vary={"model.expansion": [1, 2, 4]}, seeds=1)
    study = resolve(load_spec(write_spec(tmp_path, d)))
    assert planmod.reference_labels(study) == {"model.expansion": "2"}  # base 2.0 matches level 2
    with pytest.raises(UserError, match="level 2.0 is listed twice"):
        load_spec(write_spec(tmp_path, spec_dict(base=base, vary={"model.expansion": [2, 2.0]})))


def test_base_config_is_relative_to_the_spec_and_inline_base_wins(tmp_path):
    (tmp_path / "r").mkdir()
    write_spec(tmp_path / "r", {**TINY_BASE, "optim": {"lr": 0.005}}, "recipe.yaml")
    d = {"name": "x", "base_config": "r/recipe.yaml", "base": {"optim.weight_decay": 0.1},
         "vary": {"train.epochs": [1, 2]}, "seeds": 1}
    runs = expand(write_spec(tmp_path, d))
    assert runs[0].config.optim.lr == 0.005 and runs[0].config.optim.weight_decay == 0.1


def test_resolved_spec_round_trips_to_the_same_runs(tmp_path):
    path = STUDIES / "vit_attention_norm.yaml"
    study = resolve(load_spec(path), "quick")
    again = load_spec(write_spec(tmp_path, specmod.spec_to_dict(study)))
    a, b = expand(study), expand(again)
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert again.profile == "quick"
    assert specmod.same_study(specmod.spec_to_dict(study), specmod.spec_to_dict(resolve(again)))


@pytest.mark.parametrize("name", ["mobilevit_heads", "mobilevit_expansion", "mobilevit_complexity",
                                  "vit_attention_norm"])
def test_shipped_studies_expand_in_every_profile(name):
    spec = load_spec(STUDIES / f"{name}.yaml")
    assert set(spec.profiles) >= {"quick", "full"}
    full = expand(spec)
    quick = expand(spec, "quick")
    assert len({r.seed for r in full}) == 3 and len({r.seed for r in quick}) == 2
    assert full[0].config.data.name == "cifar100" and quick[0].config.data.name == "synthetic"
    assert all(r.config.train.label_smoothing == 0.1 for r in full)
    assert full[0].config.train.epochs >= 100


def test_mobilevit_heads_levels_all_divide_the_xxs_widths():
    from vitlab.models import create_model

    spec = load_spec(STUDIES / "mobilevit_heads.yaml")
    for heads in spec.factors["model.num_heads"]:
        m = create_model("mobilevit_xxs", num_classes=100, num_heads=heads)
        assert all(w % heads == 0 for w in m.resolved["transformer_widths"])


# ---------------------------------------------------------------------------------------------- malformed specs

BAD_SPECS = [
    # (spec dict or YAML text, profile, fragment the one-line message must contain)
    (spec_dict(varry={"model.dim": [32]}), None, "varry: unknown key (did you mean 'vary'?)"),
    (spec_dict(vary={"model.attn_norm": []}), None, "vary.model.attn_norm: needs at least one level"),
    (spec_dict(vary={"model.attn_norm": ["softmax", "softmaxx"]}), None, "model.attn_norm: must be one of"),
    (spec_dict(vary={"model.num_heads": [2, 3]}), None, "3 heads do not divide the transformer width 32"),
    ("name: t\nbase: {}\nvary:\n  model.num_heads: [1, 2]\n  model.num_heads: [4]\n", None,
     "line 5: duplicate key 'model.num_heads'"),
    ("name: t\nvary: {model.num_heads: [1, 2]\n", None, "invalid YAML"),
    (spec_dict(grid={"model.num_heads": [1, 2]}), None, "exactly one of vary, grid (study) or space (search); got vary and grid"),
    (spec_dict(seeds=0), None, "seeds: must be a count >= 1"),
    (spec_dict(seeds=[0, 0]), None, "seeds: seeds must be distinct"),
    (spec_dict(seeds=[-1]), None, "seeds must be integers >= 0"),
    (spec_dict(), "quik", "unknown profile 'quik'"),
    (spec_dict(vary=None, space={"optim.lr": {"low": 0.01, "high": 0.001}}), None, "space.optim.lr: low must be < high"),
    (spec_dict(vary=None, space={"optim.lr": {"low": 0.0, "high": 0.1, "log": True}}), None, "log scale needs low > 0"),
    (spec_dict(vary=None, space={"optim.lr": {"low": 0.001, "hi": 0.1}}), None, "space.optim.lr.hi: unknown key"),
    (spec_dict(vary=None, space={"model.attn_norm": {"low": 0, "high": 1}}), None, "a str field needs choices"),
    (spec_dict(vary=None, seeds=None), None, "got none of them"),
    (spec_dict(vary={"model.num_hedas": [1]}), None, "model.num_hedas: unknown key (did you mean 'num_heads'?)"),
    (spec_dict(vary={"model": [1]}), None, "vary.model: is a config section"),
    (spec_dict(vary={"train.threads": [1, 2]}), None, "does not change what a run computes"),
    (spec_dict(metrics=["test_acc"]), None, "unknown metric 'test_acc'"),
    (spec_dict(reference={"model.attn_norm": "zscore"}), None, "reference.model.attn_norm: zscore is not one of its levels"),
    (spec_dict(reference={"model.dim": 32}), None, "reference.model.dim: is not a factor"),
    (spec_dict(base={"trian": {"epochs": 2}}), None, "base: trian: unknown key (did you mean 'train'?)"),
    (spec_dict(base_config="nowhere.yaml"), None, "base_config: "),
    (spec_dict(profiles={"quick": {"overides": {}}}), None, "profiles.quick.overides: unknown key"),
    (spec_dict(profiles={"quick": {"vary": {"model.attn_norm": ["zscore"]}}}), None, "zscore is not a level"),
    (spec_dict(profiles={"quick": {"overrides": {"train.epochs": 0}}}), None, "train.epochs: must be > 0"),
    (spec_dict(vary=None, seeds=None, space={"optim.lr": {"low": 1e-4, "high": 1e-2}}, objective="test_top1"),
     None, "must never select on the test set"),
    ("- just\n- a list\n", None, "top level must be a mapping"),
    (spec_dict(name="a/b"), None, "name: must be a non-empty string"),
    (spec_dict(vary={"model.attn_norm": [{"x": 1}]}), None, "a level must be a value or a list"),
    (spec_dict(vary=None, space={"optim.lr": {"low": 1e-4, "high": 1e-2}}), None, "seeds: not used in search mode"),
    (spec_dict(vary={"model.expansion": [2.0]}), None, "model.expansion: not a knob of vit_nano"),
    (spec_dict(grid=None, vary={"train.epochs": [0, 1]}), None, "train.epochs: must be > 0"),
]


@pytest.mark.parametrize("data,profile,fragment", BAD_SPECS, ids=[f"bad{i}" for i in range(len(BAD_SPECS))])
def test_malformed_spec_is_one_line_user_error_naming_file_and_key(tmp_path, data, profile, fragment):
    path = write_spec(tmp_path, data)
    with pytest.raises(UserError) as e:
        expand(path, profile)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg, msg
    assert fragment in msg, msg


def test_search_spec_is_refused_by_expand_and_checked_by_load(tmp_path):
    d = spec_dict(vary=None, seeds=None, space={"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                "model.attn_norm": {"choices": ["softmax", "cosine"]},
                                                "train.batch_size": {"low": 32, "high": 128, "step": 32}})
    spec = load_spec(write_spec(tmp_path, d))
    assert spec.kind == "search" and spec.space["train.batch_size"].kind == "int"
    assert spec.space["optim.lr"].kind == "float" and spec.objective == specmod.Objective("val_top1", "maximize")
    with pytest.raises(UserError, match="search spec"):
        expand(spec)


# ---------------------------------------------------------------------------------------------- CLI path


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("i", [0, 3, 5, 7, 10, 16])
def test_cli_malformed_spec_exits_2_with_one_line_and_leaves_dir_alone(tmp_path, capsys, i):
    data, profile, fragment = BAD_SPECS[i]
    path = write_spec(tmp_path, data)
    out = tmp_path / "study"
    out.mkdir()
    (out / "spec.yaml").write_text("name: previous\n")
    (out / "notes.txt").write_text("keep me")
    before = _snapshot(out)
    argv = ["study", str(path), "--out", str(out)] + (["--profile", profile] if profile else [])
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert _snapshot(out) == before


def test_cli_refuses_a_directory_of_another_study_or_other_files(tmp_path, capsys):
    path = write_spec(tmp_path, spec_dict())
    other = tmp_path / "other"
    other.mkdir()
    (other / "spec.yaml").write_text(yaml.safe_dump({"name": "other", "base": {}, "vary": {"train.epochs": [1]}}))
    before = _snapshot(other)
    assert cli_main(["study", str(path), "--out", str(other)]) == 2
    assert "holds a different study ('other'" in capsys.readouterr().err
    after = _snapshot(other)
    after.pop(".lock", None)  # the (empty) lock file of the refused coordinator
    assert after == before

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "data.csv").write_text("1,2\n")
    assert cli_main(["study", str(path), "--out", str(junk)]) == 2
    assert "not empty and not a vitlab study" in capsys.readouterr().err
    assert not (junk / "spec.yaml").exists()
    assert cli_main(["study", str(path), "--out", str(tmp_path / "x"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_shipped_search_spec_checks_in_every_profile():
    from vitlab.study.search import check_space

    spec = load_spec(STUDIES / "search_vit.yaml")
    assert spec.kind == "search" and spec.objective == specmod.Objective("val_top1", "maximize")
    for profile in (None, "quick"):
        study = resolve(spec, profile)
        check_space(study)  # every end of every dimension builds a valid config and model
        assert set(study.space) == {"optim.lr", "optim.weight_decay", "model.attn_norm"}
    assert resolve(spec, "quick").base["data"]["name"] == "synthetic"
