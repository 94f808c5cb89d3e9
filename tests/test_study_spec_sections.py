"""Study spec sections beyond vary/grid: seeds (adaptive, seed sources, RNG range), report, analysis,
analysis metrics, the run count and its limit, and the config machinery the typed schema is built on."""
from __future__ import annotations

import dataclasses
import itertools
import tracemalloc
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import pytest
import yaml

from vitlab.cli import main as cli_main
from vitlab.config import MAX_SEED
from vitlab.errors import ConfigError, UserError
from vitlab.identity import identity_dict
from vitlab.schema import build, knob
from vitlab.study.slurm_spec import SlurmSpec
from vitlab.study import plan as planmod
from vitlab.study import spec as specmod
from vitlab.study.plan import count_runs, expand, runs_for_level
from vitlab.study.spec import load_spec, resolve

TINY_BASE = {
    "device": "cpu",
    "data": {"name": "synthetic", "synthetic_train": 400, "synthetic_test": 200},
    "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
    "train": {"epochs": 2, "batch_size": 64},
}
NORMS = ["softmax", "cosine"]


def write_spec(tmp_path: Path, data, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def spec_dict(**over) -> dict:
    d = {"name": "t", "base": TINY_BASE, "vary": {"model.attn_norm": NORMS}, "seeds": 2}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def round_trip(tmp_path: Path, study) -> specmod.StudySpec:
    """The resolved spec written as DIR/spec.yaml and read back."""
    return resolve(load_spec(write_spec(tmp_path, specmod.spec_to_dict(study), "again.yaml")))


# ---------------------------------------------------------------------------------------------- config machinery


def _even(value: int, path: str) -> int:
    if value % 2:
        raise ConfigError(path, f"must be even, got {value}")
    return value


@dataclasses.dataclass
class _Leaf:
    size: int = knob(1, "a size")
    kind: str = knob("a", "a kind", choices=("a", "b"))

    def __post_init__(self):
        if self.size > 10:
            raise ConfigError("size", f"must be <= 10, got {self.size}")


@dataclasses.dataclass
class _Tree:
    leaves: Optional[dict[str, _Leaf]] = knob(None, "named leaves")
    tags: list[str] = knob([], "tags", choices=("x", "y"))
    either: Union[int, list[int], _Leaf, None] = knob(None, "a count, a list or a leaf")
    even: Optional[Annotated[int, _even]] = knob(None, "an even number")
    anything: Any = knob(None, "taken as is")


def test_build_coerces_dicts_unions_annotated_checks_and_list_choices():
    t = build(_Tree, {"leaves": {"p": {"size": 2}, "q": None}, "tags": ["x", "y"], "either": [1, 2],
                      "even": 4.0, "anything": {"k": [1]}})
    assert t.leaves["p"] == _Leaf(2, "a") and t.leaves["q"] == _Leaf() and t.tags == ["x", "y"]
    assert t.either == [1, 2] and t.even == 4 and t.anything == {"k": [1]}
    assert build(_Tree, {"either": 3}).either == 3 and build(_Tree, {"either": {"kind": "b"}}).either == _Leaf(1, "b")
    cases = [
        ({"leaves": {"p": {"sise": 2}}}, "leaves.p.sise: unknown key (did you mean 'size'?)"),
        ({"leaves": {"p": {"size": 11}}}, "leaves.p.size: must be <= 10, got 11"),  # __post_init__, prefixed
        ({"leaves": {"p": {"kind": "c"}}}, "leaves.p.kind: must be one of a, b; got 'c'"),
        ({"leaves": [1]}, "leaves: must be a mapping, got [1]"),
        ({"leaves": {1: {}}}, "leaves: keys must be strings"),
        ({"tags": ["x", "z"]}, "tags[1]: must be one of x, y; got 'z'"),
        ({"either": "many"}, "either: must be an integer, a list or a mapping, got 'many'"),
        ({"either": {"size": 20}}, "either.size: must be <= 10"),
        ({"even": 3}, "even: must be even, got 3"),
        ({"even": "x" * 500}, "even: must be an integer, got 'xxxx"),
    ]
    for data, fragment in cases:
        with pytest.raises(ConfigError) as e:
            build(_Tree, data)
        assert fragment in str(e.value), str(e.value)
        assert len(str(e.value)) < 200  # a huge value is shown briefly


@pytest.mark.parametrize("cls", [specmod.StudySpec, specmod.Profile, specmod.Seeds, specmod.SearchParam,
                                 specmod.Objective, specmod.Pruner, specmod.ReportSpec, specmod.Origin])
def test_every_spec_key_is_a_documented_knob(cls):
    for fl in dataclasses.fields(cls):
        assert fl.metadata.get("doc"), f"{cls.__name__}.{fl.name} has no doc"


#: Where each section of the spec sits in the key reference.
SECTIONS_AT = [(specmod.StudySpec, ""), (specmod.Seeds, "seeds."), (specmod.ReportSpec, "report."),
               (specmod.SearchParam, "space.NAME."), (specmod.Objective, "objective."), (specmod.Pruner, "pruner."),
               (specmod.Profile, "profiles.NAME."), (specmod.Seeds, "profiles.NAME.seeds."),
               (specmod.SearchParam, "profiles.NAME.space.NAME."), (specmod.Origin, "origin."),
               (SlurmSpec, "slurm."), (specmod.Compare, "compare.NAME.")]


def test_the_spec_key_reference_has_every_field_of_every_section_with_its_doc(capsys):
    rows = specmod.describe_spec_keys()
    docs = {key: doc for key, _, doc in rows}
    assert len(docs) == len(rows)  # no key twice
    expected = {f"{at}{fl.name}": fl.metadata["doc"] for cls, at in SECTIONS_AT for fl in dataclasses.fields(cls)}
    assert set(docs) == set(expected)
    for key, doc in expected.items():
        assert doc and docs[key].startswith(doc), key  # the field's doc (closed choices appended)
    assert docs["report.ci"].endswith("{t|bootstrap|bca}")
    # `vitlab config keys --spec` prints the same, one key a line; --spec means nothing elsewhere
    assert cli_main(["config", "keys", "--spec"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [key for key, _, _ in rows]
    assert cli_main(["config", "show", "--spec"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


# ---------------------------------------------------------------------------------------------- size


def test_count_runs_matches_expand_and_the_limit_names_the_count(tmp_path):
    vary = spec_dict(vary={"model.attn_norm": NORMS, "model.num_heads": [1, 2, 4]}, seeds=[0, 5])
    grid = spec_dict(vary=None, grid={"model.num_heads": [1, 2], "optim.lr": [1e-3, 2e-3, 4e-3]}, seeds=1)
    for d, n in ((vary, (2 + 3) * 2), (grid, 2 * 3)):
        path = write_spec(tmp_path, d)
        assert count_runs(path) == n == len(expand(path, check_models=False))
        assert len(expand(path, check_models=False, max_runs=n)) == n
        with pytest.raises(UserError, match=rf"has {n} runs .* more than the limit of {n - 1} runs \(--max-runs\)"):
            expand(path, max_runs=n - 1)
        assert len(expand(path, check_models=False, max_runs=None)) == n


@pytest.mark.parametrize("over,fragment", [
    ({"seeds": 1_000_000_000}, "seeds: the study has 2,000,000,000 runs (2 levels x 1,000,000,000 seeds)"),
    ({"vary": None, "seeds": 1, "grid": {"optim.lr": [i / 1e4 + 1e-4 for i in range(100)],
                                         "optim.weight_decay": [i / 100 for i in range(100)],
                                         "train.epochs": list(range(1, 101))}},
     "grid: the study has 1,000,000 runs (1,000,000 cells x 1 seeds)"),
    ({"seeds": {"adaptive": True, "min": 3, "max": 4_000_000}}, "the study has up to 8,000,000 runs"),
    ({"seeds": {"init": 1000, "split": 1000}}, "seeds: the study has 2,000,000 runs (2 levels x 1,000,000 seeds)"),
])
def test_a_huge_study_is_refused_before_anything_is_expanded(tmp_path, capsys, over, fragment):
    path = write_spec(tmp_path, spec_dict(**over))
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as e:
            expand(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fragment in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert peak < 20e6  # counted, not expanded: no list of seeds or cells
    assert cli_main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err
    assert not (tmp_path / "out").exists()


def test_a_count_of_seeds_stays_a_range():
    spec = load_spec(spec_dict(seeds=1_000_000_000))
    assert spec.seed_list == range(1_000_000_000) and count_runs(spec) == 2_000_000_000


# ---------------------------------------------------------------------------------------------- seeds


def test_seed_sources_expand_factorially_with_the_base_seed_for_the_rest(tmp_path):
    base = dict(TINY_BASE, seed=7)
    path = write_spec(tmp_path, spec_dict(base=base, seeds={"init": 2, "split": [5, 9]}))
    runs = expand(path)
    assert len(runs) == count_runs(path) == 2 * 2 * 2
    want = [dict(zip(("init", "split"), c)) for c in itertools.product([0, 1], [5, 9])]
    for norm in NORMS:
        level = [r for r in runs if r.level == norm]
        assert [r.seed_sources for r in level] == want
        for r in level:
            assert r.seed == r.config.seed == 7 and r.config.seed_order is None
            assert (r.config.seed_init, r.config.seed_split) == (r.seed_sources["init"], r.seed_sources["split"])
    assert len({r.run_id for r in runs}) == 8
    study = resolve(load_spec(path))
    assert study.seed_list == [7] and study.seed_sources == {"init": range(2), "split": [5, 9]}
    assert specmod.spec_to_dict(study)["seeds"] == {"adaptive": False, "init": [0, 1], "split": [5, 9]}
    assert [r.run_id for r in expand(round_trip(tmp_path, study))] == [r.run_id for r in runs]


def test_plain_seeds_leave_the_seed_sources_unset_and_run_ids_unchanged(tmp_path):
    runs = expand(write_spec(tmp_path, spec_dict(seeds=[3])))
    cfg = runs[0].config
    assert runs[0].seed_sources == {} and (cfg.seed_init, cfg.seed_split, cfg.seed_order) == (None, None, None)
    # an unset source is not part of the run's identity: runs keep the IDs they had before these fields existed
    assert "seed_init" not in identity_dict(cfg)
    assert planmod.run_id_of(dataclasses.replace(cfg, seed_init=3)) != runs[0].run_id


def test_adaptive_seeds_expand_to_min_and_runs_for_level_adds_one_seed(tmp_path):
    d = spec_dict(vary={"model.attn_norm": NORMS, "model.num_heads": [1, 2]},
                  seeds={"adaptive": True, "min": 2, "max": 5}, metrics=["val_top1", "test_top1"],
                  report={"target_delta": 0.5})
    path = write_spec(tmp_path, d)
    study = resolve(load_spec(path))
    assert study.seed_list == range(2) and study.adaptive == specmod.Seeds(adaptive=True, min=2, max=5, target_delta=0.5, metric="val_top1")
    assert list(study.adaptive.extra_seeds) == [2, 3, 4]
    runs = expand(path)
    assert len(runs) == 4 * 2 and {r.seed for r in runs} == {0, 1}
    assert count_runs(path) == 4 * 5  # the most the study can grow to
    full = {(r.factor, r.level_label, r.seed): r for r in expand(path, seeds=range(5))}
    extra = runs_for_level(study, "model.num_heads", 2, [2])
    assert len(extra) == 1
    want = full[("model.num_heads", "2", 2)]
    assert (extra[0].run_id, extra[0].level_order, extra[0].level_label, extra[0].varied) == \
        (want.run_id, want.level_order, "2", {"model.num_heads": 2})
    assert runs_for_level(study, "model.num_heads", 2.0, [3, 4])[1].run_id == full[("model.num_heads", "2", 4)].run_id
    assert specmod.spec_to_dict(study)["seeds"] == {"adaptive": True, "min": 2, "max": 5, "target_delta": 0.5,
                                                    "metric": "val_top1"}
    again = round_trip(tmp_path, study)
    assert again.adaptive == study.adaptive and [r.run_id for r in expand(again)] == [r.run_id for r in runs]


def test_adaptive_defaults_and_runs_for_level_of_a_grid_cell_and_seed_sources(tmp_path):
    d = spec_dict(vary=None, grid={"model.num_heads": [1, 2], "optim.lr": [1e-3, 2e-3]}, seeds={"adaptive": True})
    study = resolve(load_spec(write_spec(tmp_path, d)))
    assert study.adaptive == specmod.Seeds(adaptive=True, min=3, max=10, target_delta=1.0, metric="test_top1") and study.seed_list == range(3)
    full = expand(study, seeds=[4])
    cell = {"model.num_heads": 2, "optim.lr": 1e-3}
    (run,) = runs_for_level(study, "grid", cell, [4])
    assert run.level_order == 2 and run.level == cell and run.run_id == full[2].run_id
    study2 = resolve(load_spec(write_spec(tmp_path, spec_dict(seeds={"init": 2}))))
    assert [r.seed_sources for r in runs_for_level(study2, "model.attn_norm", "cosine", [0])] == [{"init": 0}, {"init": 1}]
    for factor, level in (("model.attn_norm", "zscore"), ("model.dim", 32), ("grid", {"x": 1})):
        with pytest.raises(UserError, match="is not a level of this study"):
            runs_for_level(study2, factor, level, [1])
    with pytest.raises(UserError, match=f"seeds must be <= {MAX_SEED}"):
        runs_for_level(study2, "model.attn_norm", "cosine", [2**32])


def test_profiles_override_seeds_report_and_analysis(tmp_path):
    d = spec_dict(seeds={"adaptive": True, "max": 6}, report={"ci": "bca", "target_delta": 2.0},
                  analysis=["attention", "efficiency"],
                  profiles={"quick": {"seeds": 1, "report": {"ci": "bootstrap"}, "analysis": []},
                            "sources": {"seeds": {"order": 2}}})
    spec = load_spec(write_spec(tmp_path, d))
    full, quick, sources = resolve(spec), resolve(spec, "quick"), resolve(spec, "sources")
    assert full.report == specmod.ReportSpec("bca", 2.0) and full.analysis == ["attention", "efficiency"]
    assert full.adaptive.target_delta == 2.0  # from report.target_delta
    assert quick.adaptive is None and quick.seed_list == range(1) and quick.analysis == []
    assert quick.report == specmod.ReportSpec("bootstrap", 2.0)  # a profile replaces the keys it gives
    assert sources.adaptive is None and sources.seed_sources == {"order": range(2)} and sources.seed_list == [0]
    assert [r.config.seed_order for r in expand(spec, "sources")] == [0, 1, 0, 1]
    for study in (full, quick):
        again = round_trip(tmp_path, study)
        assert (again.report, again.analysis, again.profile) == (study.report, study.analysis, study.profile)


def test_analysis_metrics_are_accepted_and_defaults_are_empty(tmp_path):
    metrics = ["test_top1", "attn_entropy_norm_mean", "attn_entropy_norm_l0", "attn_entropy_norm_l11",
               "corruption_top1_mean", "corruption_clean_top1", "latency_ms_b1", "throughput_img_s_b256"]
    study = resolve(load_spec(write_spec(tmp_path, spec_dict(metrics=metrics))))
    assert study.metrics == metrics and study.analysis == [] and study.report == specmod.ReportSpec("t", 1.0)
    assert "analysis" not in specmod.spec_to_dict(study)
    for study_level_only in ("mce", "relative_mce"):  # need a reference level: the report computes them
        with pytest.raises(UserError, match=f"unknown metric '{study_level_only}'"):
            load_spec(write_spec(tmp_path, spec_dict(metrics=[study_level_only])))
    search = load_spec(write_spec(tmp_path, spec_dict(vary=None, seeds=None, analysis=["calibration"],
                                                      space={"optim.lr": {"low": 1e-4, "high": 1e-2}})))
    assert search.analysis == ["calibration"] and search.space["optim.lr"].low == 1e-4


# ---------------------------------------------------------------------------------------------- malformed

BAD = [
    (spec_dict(seeds=2**32 + 1), "seeds: a count of 4294967297 seeds does not fit the RNGs"),
    (spec_dict(seeds=[1, 2**32]), f"seeds: seeds must be <= {MAX_SEED} to fit the RNGs, got 4294967296"),
    (spec_dict(seeds="three"), "seeds: must be an integer, a list or a mapping, got 'three'"),
    (spec_dict(seeds={}), "seeds: a mapping needs adaptive: true or seed sources (init, split, order)"),
    (spec_dict(seeds={"adaptiv": True}), "seeds.adaptiv: unknown key (did you mean 'adaptive'?)"),
    (spec_dict(seeds={"adaptive": True, "init": 3}), "seeds.init: seed sources cannot be combined with adaptive"),
    (spec_dict(seeds={"min": 3, "max": 5}), "seeds.min: only used with adaptive: true"),
    (spec_dict(seeds={"adaptive": True, "min": 5, "max": 4}), "seeds.max: must be >= min (5), got 4"),
    (spec_dict(seeds={"adaptive": True, "min": 0}), "seeds.min: must be a count >= 1"),
    (spec_dict(seeds={"adaptive": True, "target_delta": -1}), "seeds.target_delta: must be a finite number > 0"),
    (spec_dict(seeds={"adaptive": True, "metric": "val_top"}), "seeds.metric: unknown metric 'val_top' (did you mean"),
    (spec_dict(seeds={"init": 0}), "seeds.init: must be a count >= 1"),
    (spec_dict(seeds={"split": [1, 1]}), "seeds.split: seeds must be distinct"),
    (spec_dict(seeds={"order": [-1]}), "seeds.order: seeds must be integers >= 0"),
    (spec_dict(seeds={"seed": 3}), "seeds.seed: unknown key"),
    (spec_dict(report={"ci": "bootstrapp"}), "report.ci: must be one of t, bootstrap, bca; got 'bootstrapp' (did you mean 'bootstrap'?)"),
    (spec_dict(report={"target_delta": 0}), "report.target_delta: must be a finite number > 0, got 0.0"),
    (spec_dict(report={"target_delta": float("nan")}), "report.target_delta: must be a finite number > 0, got nan"),
    (spec_dict(report={"alpha": 0.05}), "report.alpha: unknown key"),
    (spec_dict(report="t"), "report: must be a mapping"),
    (spec_dict(analysis=["atention"]), "analysis[0]: must be one of attention, robustness, calibration, efficiency; got 'atention' (did you mean 'attention'?)"),
    (spec_dict(analysis=["robustness", "robustness"]), "analysis: an entry is listed twice"),
    (spec_dict(analysis="attention"), "analysis: must be a list"),
    (spec_dict(metrics=["attn_entropy_norm_lx"]), "metrics: unknown metric 'attn_entropy_norm_lx'"),
    (spec_dict(metrics=["latency_ms"]), "metrics: unknown metric 'latency_ms' (did you mean 'latency_ms_b1'?)"),
    (spec_dict(profiles={"quick": {"report": {"cii": "t"}}}), "profiles.quick.report.cii: unknown key (did you mean 'ci'?)"),
    (spec_dict(profiles={"quick": {"analysis": ["speed"]}}), "profiles.quick.analysis[0]: must be one of"),
    (spec_dict(profiles={"quick": {"seeds": {"adaptive": True, "max": 2}}}), "profiles.quick.seeds.max: must be >= min (3)"),
    (spec_dict(vary=None, seeds=None, space={"optim.lr": {"low": 1e-4, "high": 1e-2}},
               profiles={"quick": {"seeds": 2}}), "profiles.quick.seeds: not used in search mode"),
    (spec_dict(vary=None, seeds=None, space={"train.epochs": {"low": 1, "high": 5.5}}), "space.train.epochs.high: must be an integer"),
    (spec_dict(vary=None, seeds=None, space={"optim.lr": {"low": 1e-4, "high": 1e-2}}, sampler_seed=2**32),
     f"sampler_seed: must be in [0, {MAX_SEED}]"),
    (spec_dict(vary=None, seeds=None, space={"optim.lr": {"low": 1e-4, "high": 1e-2}}, pruner="median"),
     "pruner: must be a mapping {name, startup_trials, warmup_epochs} or none"),
    (spec_dict(vary=None, seeds=None, space={"optim.lr": {"low": 1e-4, "high": 1e-2}}, pruner={"warmup_epochs": -1}),
     "pruner.warmup_epochs: must be an integer >= 0"),
    (spec_dict(vary=None, seeds=None, space={"optim.lr": {"low": float("-inf"), "high": 1e-2}}),
     "space.optim.lr.low: must be a finite number, got -inf"),
    (spec_dict(name="a\nb"), "name: must be a non-empty string"),
    (spec_dict(origin={"profile": "quick", "when": 1}), "origin.when: unknown key"),
]


@pytest.mark.parametrize("data,fragment", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_malformed_section_is_one_line_user_error_naming_file_and_key(tmp_path, data, fragment):
    path = write_spec(tmp_path, data)
    with pytest.raises(UserError) as e:
        expand(path) if "space" not in data else load_spec(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    assert fragment in msg, msg
