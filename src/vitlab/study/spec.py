"""Study specs: one YAML file that names a base run config and what to vary around it.

A spec is either a *study* (`vary:` one factor at a time, or `grid:` a cartesian product, each over
several seeds) or a *search* (`space:` searched by Optuna). The file's schema is the typed dataclasses
of the first section (`SpecFile` and its parts), built by `config.build` like a run config, so unknown
keys, types and closed choices get the same one-line errors with did-you-mean; the rules that relate
values (levels distinct, the reference is a level, low < high, ...) are small checks beside them.
`load_spec` reads and checks a spec, `resolve` applies a profile, `count_runs` sizes a study without
expanding it, and `expand` turns it into validated `RunSpec`s, each with a run ID that is a hash of
its resolved config. Every problem is a `UserError` of one line that names the spec file and the key.

Seeds (`seeds:`, default 3):
- a count n (seeds 0 .. n-1) or a list of distinct seeds. Each is the run config's `seed`, which drives
  every source of randomness. Seeds must fit the RNGs: 0 <= seed < 2**32.
- adaptive, `{adaptive: true, min: 3, max: 10, target_delta: 1.0}`: the study expands to seeds
  0 .. min-1 (`spec.seeds`), and the runner adds seed k = min, min+1, ... (`runs_for_level`) to each level
  whose paired comparison with the reference on `metric` (default: the first of `metrics:`) is still
  undecided -- its interval contains 0 and is wider than `target_delta` (default `report.target_delta`)
  -- until the level has `max` seeds. `spec.adaptive` holds these settings.
- seed sources, factorial, `{init: 3, split: 3, order: 2}` (each a count or a list): every combination
  is one run, whose config sets `seed_init`, `seed_split`, `seed_order` for the sources named, while the
  base config's `seed` drives the others (`spec.seeds` is that one seed). `spec.seed_sources` maps each
  source to its seeds and `RunSpec.seed_sources` holds a run's combination ({"init": 1, "split": 0}).

Size: `count_runs` multiplies levels (a grid's cells) by seeds (an adaptive study's `max`) without
expanding anything, and `expand` refuses a study above `max_runs` (default 10,000).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import yaml

from ..config import (EXECUTION_ONLY, SEED_SOURCES, BoundedSafeLoader, build, canonical_json, check_key_path,
                      config_hash, identity_dict, knob, read_yaml, require, RunConfig, suggest, to_dict, yaml_load)
from ..analysis.metrics import SCALAR_METRICS, is_analysis_metric
from ..analysis.options import SECTIONS
from ..errors import ConfigError, UserError, short_repr
from .slurm_spec import SlurmSpec

#: Hex digits of a run ID (48 bits: a collision among a study's runs is negligible).
RUN_ID_HEX = 12
#: Dotted keys that change how a run executes, not what it computes (not in the run ID, not factors).
EXECUTION_ONLY_KEYS = tuple(sorted(f"{section}.{key}" for section, key in EXECUTION_ONLY))
#: Seeds when a spec gives none.
DEFAULT_SEED_COUNT = 3
#: Adaptive seeding: seeds every level starts with / may grow to, when the spec does not say.
ADAPTIVE_MIN_SEEDS, ADAPTIVE_MAX_SEEDS = 3, 10
#: Seeds must be below this to fit the RNGs (numpy's seeds are 32-bit).
SEED_LIMIT = 2**32
#: Runs a study may have unless the caller raises the limit (`--max-runs`).
DEFAULT_MAX_RUNS = 10_000
#: Sources of randomness a spec can vary factorially: `seeds: {init: 3}` sets the config's `seed_init`.
SEED_SOURCES = tuple(f.removeprefix("seed_") for f in SEED_SOURCES)
#: Columns a study tabulates when `metrics:` is not given.
DEFAULT_METRICS = ("test_top1", "test_top5", "val_top1", "test_f1_macro", "test_ece", "train_loss",
                   "params", "flops", "train_time_s")
#: Names `metrics:` and `objective:` may use: the numeric fields of RUN/summary.json.
SUMMARY_METRICS = (
    "test_top1", "test_top5", "test_loss", "test_precision_macro", "test_recall_macro", "test_f1_macro",
    "test_ece", "val_top1", "val_top5", "val_loss", "val_precision_macro", "val_recall_macro",
    "val_f1_macro", "val_ece", "train_loss", "train_top1", "params", "flops", "train_time_s",
    "throughput_img_s", "epochs_run", "best_epoch", "steps", "train_cpu_s", "train_flops",
)
#: Analyses a spec can ask for on every completed run (`analysis:`), owned by the analysis package.
ANALYSES = SECTIONS
#: Metrics the analyses add to a run's summary (plus per-layer ones such as `attn_entropy_norm_l<i>`).
ANALYSIS_METRICS = tuple(SCALAR_METRICS)
#: Validation metrics an Optuna search may optimise (test metrics must never select a configuration).
OBJECTIVE_METRICS = ("val_top1", "val_top5", "val_loss", "val_f1_macro", "val_precision_macro",
                     "val_recall_macro", "val_ece")
#: Objectives where smaller is better.
MINIMIZED_METRICS = ("val_loss", "val_ece")
#: Interval of a mean over seeds in reports: Student t, percentile bootstrap, BCa bootstrap.
CI_METHODS = ("t", "bootstrap", "bca")


# ----------------------------------------------------------------------------------------------
# checks the schema's types run (config.build calls each `check(value, path)` of an Annotated type)


def is_metric(name: str) -> bool:
    """Whether `name` is a metric a run reports (summary.json or an analysis)."""
    return name in SUMMARY_METRICS or is_analysis_metric(name)


def _metric(name: str, path: str) -> str:
    if not is_metric(name):
        raise ConfigError(path, f"unknown metric {short_repr(name)}" + suggest(name, SUMMARY_METRICS + ANALYSIS_METRICS))
    return name


def _metrics(names: list[str], path: str) -> list[str]:
    if not names:
        raise ConfigError(path, "must be a non-empty list of metric names")
    for name in names:
        _metric(name, path)
    return _distinct(names, path)


_distinct = require(lambda items: len(set(items)) == len(items), "an entry is listed twice")


def _seed_count(n: int, path: str) -> int:
    if n < 1:
        raise ConfigError(path, f"must be a count >= 1 or a list of seeds, got {n}")
    if n > SEED_LIMIT:
        raise ConfigError(path, f"a count of {n} seeds does not fit the RNGs (seeds must be < 2**32)")
    return n


def _seed_list(seeds: list[int], path: str) -> list[int]:
    if not seeds:
        raise ConfigError(path, "must be a count >= 1 or a non-empty list of seeds")
    if any(s < 0 for s in seeds):
        raise ConfigError(path, f"seeds must be integers >= 0, got {short_repr(seeds)}")
    if any(s >= SEED_LIMIT for s in seeds):
        raise ConfigError(path, f"seeds must be < 2**32 to fit the RNGs, got {max(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(path, f"seeds must be distinct, got {short_repr(seeds)}")
    return seeds


def _levels(levels: list, path: str) -> list:
    if not levels:
        raise ConfigError(path, "needs at least one level")
    seen = set()
    for v in levels:
        if isinstance(v, dict):
            raise ConfigError(path, f"a level must be a value or a list, got a mapping {short_repr(v)}")
        if value_key(v) in seen:
            raise ConfigError(path, f"level {brief_label(v)} is listed twice")
        seen.add(value_key(v))
    return levels


def _config_keys(mapping: dict, path: str) -> dict:
    """Keys of vary/grid/space: dotted RunConfig fields that change what a run computes, not nested."""
    for key in mapping:
        try:
            check_key_path(RunConfig, key.split("."))
        except UserError as e:
            raise ConfigError(path, str(e)) from None
        if dataclasses.is_dataclass(field_type(key)):
            raise ConfigError(f"{path}.{key}", "is a config section, not a field")
        if key in EXECUTION_ONLY_KEYS:
            raise ConfigError(f"{path}.{key}", "does not change what a run computes, so it cannot be a factor")
    for a, b in itertools.permutations(mapping, 2):
        if b.startswith(a + "."):
            raise ConfigError(path, f"{a} and {b} overlap (one contains the other)")
    return mapping


def _ranges(space: dict, path: str) -> dict:
    """A search range needs a numeric field, and whole ends for an integer one."""
    for key, p in space.items():
        if p.choices is not None:
            continue
        tp = field_type(key)
        if tp not in (int, float):
            raise ConfigError(f"{path}.{key}", f"a {getattr(tp, '__name__', tp)} field needs choices: [...], not low/high")
        for name in ("low", "high", "step"):
            v = getattr(p, name)
            if tp is int and v is not None and float(v) != int(v):
                raise ConfigError(f"{path}.{key}.{name}", f"must be an integer, got {v!r}")
    return space


_nonempty = require(bool, "must be a non-empty mapping of dotted config key -> levels (or search range)")
_validation_metric = require(lambda name: not name.startswith("test_"),
                             "must be a validation metric (a search must never select on the test set)")
Levels = Annotated[list[Any], _levels]
Metric = Annotated[str, _metric]
Metrics = Annotated[list[str], _metrics]
Analyses = Annotated[list[str], _distinct]


def _analysis_options(options: dict, path: str) -> dict:
    """`analysis_options:` are AnalysisOptions fields (not `sections`: that is `analysis:`)."""
    from ..analysis.options import AnalysisOptions

    if "sections" in options:
        raise ConfigError(f"{path}.sections", "list the analyses in analysis:, not here")
    build(AnalysisOptions, options, f"{path}.")
    return dict(options)
Finite = Annotated[float, require(math.isfinite, "must be a finite number")]
Positive = Annotated[float, require(lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")]
NonNegInt = Annotated[int, require(lambda v: v >= 0, "must be an integer >= 0")]
Seed = Annotated[int, require(lambda v: 0 <= v < SEED_LIMIT, "must be in [0, 2**32) to fit the RNGs")]
SeedCount = Annotated[int, _seed_count]
SeedList = Annotated[list[int], _seed_list]
Factors = Annotated[dict[str, Levels], _nonempty, _config_keys]


# ----------------------------------------------------------------------------------------------
# the schema of a spec file


@dataclass
class ParamFile:
    """One dimension of `space:`: a numeric range `{low, high[, log | step]}` or `{choices: [...]}`."""

    low: Union[int, Finite, None] = knob(None, "lower end of the range (inclusive)")
    high: Union[int, Finite, None] = knob(None, "upper end of the range (inclusive)")
    log: bool = knob(False, "sample on a log scale (needs low > 0)")
    step: Union[int, Finite, None] = knob(None, "sample on the grid low, low+step, ... (not with log)")
    choices: Optional[Levels] = knob(None, "values to choose from, instead of a range")

    def __post_init__(self):
        if self.choices is not None:
            if (self.low, self.high, self.step, self.log) != (None, None, None, False):
                raise ConfigError("", "choices cannot be combined with low/high/log/step")
            return
        if self.low is None or self.high is None:
            raise ConfigError("", "needs low and high (or choices)")
        if not self.low < self.high:
            raise ConfigError("", f"low must be < high, got low={self.low}, high={self.high}")
        if self.step is not None and self.step <= 0:
            raise ConfigError("step", f"must be > 0, got {self.step}")
        if self.log and self.low <= 0:
            raise ConfigError("", f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ConfigError("", "log and step cannot be combined")


@dataclass
class ObjectiveFile:
    """`objective:` of a search (a metric name alone means `{metric: NAME}`)."""

    metric: Annotated[str, _validation_metric] = knob("val_top1", "validation metric the search optimises",
                                                      choices=OBJECTIVE_METRICS)
    direction: Optional[str] = knob(None, "default: minimize for val_loss and val_ece, else maximize",
                                    choices=(None, "minimize", "maximize"))

    def __post_init__(self):
        if self.direction is None:
            self.direction = "minimize" if self.metric in MINIMIZED_METRICS else "maximize"


@dataclass
class PrunerFile:
    """`pruner:` of a search (Optuna's median pruner on the per-epoch objective); `none` disables it."""

    name: str = knob("median", "pruner", choices=("median", "none"))
    startup_trials: NonNegInt = knob(5, "no pruning before this many trials finished")
    warmup_epochs: NonNegInt = knob(1, "no pruning of a trial before this epoch")


@dataclass
class ReportSpec:
    """`report:` how reports summarise the study's seeds."""

    ci: str = knob("t", "interval of a mean over seeds: Student t, percentile bootstrap, or BCa bootstrap",
                   choices=CI_METHODS)
    target_delta: Positive = knob(1.0, "difference (in the metric's units, e.g. accuracy points) the report "
                                       "says how many seeds are needed to detect")


@dataclass
class SeedsFile:
    """`seeds:` as a mapping: adaptive seeding, or seed sources varied factorially (module docstring)."""

    adaptive: bool = knob(False, "add seeds to the levels whose comparison with the reference is undecided")
    min: Optional[SeedCount] = knob(None, f"adaptive: seeds every level gets (default {ADAPTIVE_MIN_SEEDS})")
    max: Optional[SeedCount] = knob(None, f"adaptive: most seeds a level gets (default {ADAPTIVE_MAX_SEEDS})")
    target_delta: Optional[Positive] = knob(None, "adaptive: a comparison is decided when its interval is "
                                                  "narrower than this (default report.target_delta)")
    metric: Optional[Metric] = knob(None, "adaptive: metric compared (default: the first of metrics:)")
    init: Union[SeedCount, SeedList, None] = knob(None, "seeds of the weight initialization (seed_init)")
    split: Union[SeedCount, SeedList, None] = knob(None, "seeds of the train/validation split (seed_split)")
    order: Union[SeedCount, SeedList, None] = knob(None, "seeds of the data order and augmentation (seed_order)")

    def __post_init__(self):
        sources = [k for k in SEED_SOURCES if getattr(self, k) is not None]
        adaptive_keys = [k for k in ("min", "max", "target_delta", "metric") if getattr(self, k) is not None]
        if self.adaptive:
            if sources:
                raise ConfigError(sources[0], "seed sources cannot be combined with adaptive: true")
            self.min = self.min or ADAPTIVE_MIN_SEEDS
            self.max = self.max or max(ADAPTIVE_MAX_SEEDS, self.min)
            if self.max < self.min:
                raise ConfigError("max", f"must be >= min ({self.min}), got {self.max}")
        elif adaptive_keys:
            raise ConfigError(adaptive_keys[0], "only used with adaptive: true")
        elif not sources:
            raise ConfigError("", f"a mapping needs adaptive: true or seed sources ({', '.join(SEED_SOURCES)})")


SeedsValue = Union[SeedCount, SeedList, SeedsFile]


@dataclass
class CompareFile:
    """`compare:` entry of one factor: the comparisons the study is about, its Holm family (study/compare.py).
    A factor without an entry compares each level with the reference."""

    reference: bool = knob(False, "each level against the reference level")
    pairs: Optional[list[list[Any]]] = knob(None, "named pairs [a, b] of levels, each compared as a minus b")
    trend: bool = knob(False, "a linear trend over the factor's levels, in their listed order")

    def __post_init__(self):
        for i, pair in enumerate(self.pairs or []):
            if len(pair) != 2 or value_key(pair[0]) == value_key(pair[1]):
                raise ConfigError(f"pairs[{i}]", f"must be two different levels [a, b], got {short_repr(pair)}")
        if not (self.reference or self.pairs or self.trend):
            raise ConfigError("", "declares nothing: set reference: true, pairs: [[a, b], ...] or trend: true")


@dataclass
class ProfileFile:
    """One entry of `profiles:`: a named variant of the spec (`--profile NAME`)."""

    overrides: Optional[dict[str, Any]] = knob(None, "run config keys (dotted or nested) merged into base")
    seeds: Optional[SeedsValue] = knob(None, "replaces the spec's seeds (any form of seeds:)")
    vary: Optional[dict[str, Levels]] = knob(None, "a subset of the levels of some factors")
    grid: Optional[dict[str, Levels]] = knob(None, "a subset of the levels of some grid factors")
    space: Optional[Annotated[dict[str, ParamFile], _config_keys, _ranges]] = knob(None, "search: dimensions replaced")
    analysis: Optional[Analyses] = knob(None, "replaces the spec's analysis:", choices=ANALYSES)
    analysis_options: Optional[Annotated[dict[str, Any], _analysis_options]] = knob(
        None, "replaces these keys of the spec's analysis_options:")
    report: Optional[dict[str, Any]] = knob(None, "replaces these keys of the spec's report:")


@dataclass
class OriginFile:
    """`origin:`, written by vitlab into a study's spec.yaml: where the resolved spec came from."""

    file: Optional[str] = knob(None, "the spec file")
    profile: Optional[str] = knob(None, "the profile applied")


@dataclass
class SpecFile:
    """A study or search spec file; exactly one of vary, grid (a study) or space (a search)."""

    name: Optional[str] = knob(None, "study name (default: the spec file's name)")
    description: str = knob("", "one line shown in reports")
    base_config: Optional[str] = knob(None, "run config YAML the base starts from (relative to the spec)")
    base: Optional[dict[str, Any]] = knob(None, "run config keys (dotted or nested), over base_config")
    vary: Optional[Factors] = knob(None, "study: dotted config key -> levels, varied one factor at a time")
    grid: Optional[Factors] = knob(None, "study: dotted config key -> levels, every combination")
    seeds: Optional[SeedsValue] = knob(None, f"study: a count (default {DEFAULT_SEED_COUNT}), a list, "
                                             "{adaptive: true, min, max, target_delta} or {init, split, order}")
    reference: Optional[dict[str, Any]] = knob(None, "study: factor -> the level comparisons are against")
    compare: Optional[dict[str, CompareFile]] = knob(None, "study: factor -> the declared comparisons "
                                                          "(default: each level vs the reference)")
    equivalence_margin: Optional[Positive] = knob(None, "study: +- margin (primary metric's unit, e.g. pp) "
                                                        "within which TOST can call a comparison equivalent")
    metrics: Optional[Metrics] = knob(None, "metrics the study tabulates, the first is the primary one")
    report: Optional[ReportSpec] = knob(None, "how reports compute intervals and seeds needed")
    analysis: Optional[Analyses] = knob(None, "analyses of every completed run", choices=ANALYSES)
    analysis_options: Optional[Annotated[dict[str, Any], _analysis_options]] = knob(
        None, "knobs of those analyses (`vitlab analyze` options, e.g. corruption_images: 2000)")
    space: Optional[Annotated[dict[str, ParamFile], _nonempty, _config_keys, _ranges]] = knob(
        None, "search: dotted config key -> {low, high[, log | step]} or {choices: [...]}")
    objective: Union[Annotated[str, _validation_metric], ObjectiveFile, None] = knob(
        None, "search: validation metric to optimise, or {metric, direction}")
    pruner: Union[PrunerFile, bool, str, None] = knob(None, "search: {name, startup_trials, warmup_epochs}, or none")
    sampler_seed: Optional[Seed] = knob(None, "search: seed of the TPE sampler (default 0)")
    profiles: Optional[dict[str, Optional[ProfileFile]]] = knob(None, "named variants, applied with --profile")
    origin: Optional[OriginFile] = knob(None, "written by vitlab in a study's spec.yaml")
    slurm: Optional[SlurmSpec] = knob(None, "study: resources of each task with --backend slurm (execution-only)")

    def __post_init__(self):
        if self.name is not None and (not self.name.strip() or "/" in self.name or not self.name.isprintable()):
            raise ConfigError("name", f"must be a non-empty string without '/' or control characters, got {short_repr(self.name)}")
        modes = [k for k in ("vary", "grid", "space") if getattr(self, k) is not None]
        if len(modes) != 1:
            what = " and ".join(modes) if modes else "none of them"
            raise ConfigError("vary", f"a spec needs exactly one of vary, grid (study) or space (search); got {what}")
        if self.space is None:
            for key in ("objective", "pruner", "sampler_seed"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, "only used in search mode (with space:)")
        else:
            for key in ("seeds", "reference", "compare", "equivalence_margin"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, "not used in search mode: each trial runs once with base seed")
            if self.slurm is not None:
                raise ConfigError("slurm", "only used by `vitlab study --backend slurm` (a search trains locally)")
        if isinstance(self.objective, str):
            self.objective = build(ObjectiveFile, {"metric": self.objective}, "objective.")
        if isinstance(self.pruner, (bool, str)):
            if self.pruner not in (False, "none"):
                raise ConfigError("pruner", f"must be a mapping {{name, startup_trials, warmup_epochs}} or none, got {short_repr(self.pruner)}")
            self.pruner = PrunerFile(name="none")


# ----------------------------------------------------------------------------------------------
# the checked spec


@dataclass
class SearchParam:
    """One dimension of a search space: a float/int range or a list of choices."""

    key: str
    kind: str  # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list | None = None

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        d = {"low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        return d


@dataclass(frozen=True)
class AdaptiveSeeds:
    """Adaptive seeding: every level starts with seeds 0..min-1; undecided ones get more, up to max.
    `target_delta` and `metric` are None until `resolve` fills in the defaults."""

    min: int
    max: int
    target_delta: float | None = None
    metric: str | None = None

    @property
    def extra_seeds(self) -> range:
        """The seeds the runner may add to a level, in the order it adds them."""
        return range(self.min, self.max)


@dataclass
class Profile:
    """A named variant of a spec (e.g. `quick` on a CPU): base overrides, seeds, level subsets, ..."""

    name: str
    overrides: dict = field(default_factory=dict)
    seeds: Sequence[int] | None = None  # with adaptive and seed_sources: replaces the spec's seeds
    levels: dict[str, list] = field(default_factory=dict)  # factor key -> subset of its levels
    space: dict[str, SearchParam] = field(default_factory=dict)  # search: replaced dimensions
    adaptive: AdaptiveSeeds | None = None
    seed_sources: dict[str, Sequence[int]] = field(default_factory=dict)
    analysis: list[str] | None = None
    analysis_options: dict | None = None  # keys of the spec's analysis_options replaced
    report: dict | None = None  # keys of ReportSpec replaced


@dataclass
class StudySpec:
    """A checked spec. `base` is a nested config dict (not yet built); `profiles` are not applied."""

    name: str
    source: str  # the spec file, for error messages
    kind: str  # "study" | "search"
    base: dict
    mode: str | None = None  # "vary" | "grid" (study), None (search)
    factors: dict[str, list] = field(default_factory=dict)  # dotted key -> levels
    seeds: Sequence[int] = field(default_factory=lambda: range(DEFAULT_SEED_COUNT))  # a range for a count
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    reference: dict[str, Any] = field(default_factory=dict)  # dotted key -> reference level
    compare: dict[str, CompareFile] = field(default_factory=dict)  # factor -> declared comparisons
    equivalence_margin: float | None = None  # TOST margin in the primary metric's printed unit
    profiles: dict[str, Profile] = field(default_factory=dict)
    space: dict[str, SearchParam] = field(default_factory=dict)
    objective: str = "val_top1"
    direction: str = "maximize"
    pruner: dict = field(default_factory=lambda: dataclasses.asdict(PrunerFile()))
    sampler_seed: int = 0
    description: str = ""
    profile: str | None = None  # the profile applied by `resolve`, if any
    adaptive: AdaptiveSeeds | None = None  # adaptive seeding (seeds is then range(adaptive.min))
    seed_sources: dict[str, Sequence[int]] = field(default_factory=dict)  # factorial seed sources
    report: ReportSpec = field(default_factory=ReportSpec)
    analysis: list[str] = field(default_factory=list)
    analysis_options: dict = field(default_factory=dict)  # AnalysisOptions fields for every run's analysis
    slurm: SlurmSpec | None = None  # `slurm:` (execution-only: not in spec.yaml, not part of the study's identity)


@dataclass
class RunSpec:
    """One training run of a study: a factor level at one seed, with its validated config."""

    run_id: str
    factor: str  # dotted key, "grid" or "search"
    level: Any  # the factor's value; a {key: value} dict for grid and search
    level_label: str
    level_order: int
    seed: int
    config: RunConfig
    varied: dict  # dotted key -> value that this run sets on top of the base
    seed_sources: dict = field(default_factory=dict)  # {"init": 1, "split": 0}: factorial seed sources

    def config_dict(self) -> dict:
        return to_dict(self.config)


# ----------------------------------------------------------------------------------------------
# helpers


def value_key(v: Any) -> str:
    """Identity of a level value: 2 and 2.0 are the same level (config fields coerce them alike)."""
    def norm(x):
        if isinstance(x, float) and x.is_integer():
            return int(x)
        if isinstance(x, (list, tuple)):
            return [norm(e) for e in x]
        if isinstance(x, dict):
            return {k: norm(e) for k, e in x.items()}
        return x
    return canonical_json(norm(v))


def run_id_of(config: RunConfig | dict, salt: dict | None = None) -> str:
    """The run ID: `config_hash` of the resolved config (execution-only fields left out). A search
    salts it with the trial number so that every trial has its own run directory."""
    cfg = config if isinstance(config, RunConfig) else build(RunConfig, config)
    if not salt:
        return config_hash(cfg, RUN_ID_HEX)
    text = canonical_json({"config": identity_dict(cfg), "salt": salt})
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_HEX]


def level_label(value: Any) -> str:
    """How a level is shown in tables: `4`, `0.5`, `softmax`, `none`, `[1, 2]`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(level_label(v) for v in value) + "]"
    return str(value)


def brief_label(value: Any) -> str:
    """`level_label` capped for an error message."""
    text = level_label(value)
    return text if len(text) <= 80 else text[:77] + "..."


def combo_label(combo: dict) -> str:
    """Label of a grid cell or search trial: `num_heads=4, dim=64` (full keys when short ones clash)."""
    short = [k.split(".")[-1] for k in combo]
    names = short if len(set(short)) == len(short) else list(combo)
    return ", ".join(f"{n}={level_label(v)}" for n, v in zip(names, combo.values()))


def set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = copy.deepcopy(value)


def get_dotted(tree: dict, key: str, default: Any = None) -> Any:
    node = tree
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def nest(data: dict) -> dict:
    """`{"train.epochs": 2, "model": {"dim": 64}}` -> nested dict (dotted keys expanded)."""
    out: dict = {}
    for key, value in data.items():
        value = nest(value) if isinstance(value, dict) else copy.deepcopy(value)
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = merge(node[leaf], value)
        else:
            node[leaf] = value
    return out


def merge(base: dict, over: dict) -> dict:
    """Deep merge: `over` wins; nested mappings merge key by key."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def field_type(key: str) -> Any:
    """The Python type of a RunConfig field from its dotted key (Optional stripped)."""
    tp: Any = RunConfig
    for p in key.split("."):
        tp = typing.get_type_hints(tp)[p]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) and args:
        tp = args[0]
    return tp


def _error(source: str, key: str, problem: str) -> UserError:
    """The one-line error `SPEC: KEY: problem`."""
    text = f"{source}: {key}: {problem}" if key else f"{source}: {problem}"
    return UserError(" ".join(text.split()))


def _type_hint(value: Any, levels: list) -> str:
    """'' or why a value that prints like a level is not one: '4' quoted in YAML is a string, 4 a number."""
    twins = [v for v in levels if level_label(v) == level_label(value)]
    if not twins:
        return ""
    if isinstance(value, str):
        return f" — {value!r} is quoted, a string; the level {level_label(twins[0])} is not: write it unquoted"
    return f" — the level {level_label(twins[0])} is a string: write the reference quoted, {str(value)!r}"


def _is_level(value: Any, levels: list) -> bool:
    return value_key(value) in {value_key(v) for v in levels}


# ----------------------------------------------------------------------------------------------
# loading


def load_spec(spec: str | Path | dict | StudySpec, source: str | None = None) -> StudySpec:
    """Read and check a spec from a YAML path, a dict or a StudySpec (returned as is)."""
    if isinstance(spec, StudySpec):
        return spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        data = read_yaml(path)
        _check_duplicate_keys(path)
        return parse_spec(data, source or str(path), path.parent, default_name=path.stem)
    if isinstance(spec, dict):
        return parse_spec(spec, source or "<spec>", Path.cwd(), default_name="study")
    raise UserError(f"cannot read a study spec from {type(spec).__name__}")


class _UniqueKeyLoader(BoundedSafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {short_repr(key)}", key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key: the normal constructor reports it
                pass
        return super().construct_mapping(node, deep)


def _check_duplicate_keys(path: Path) -> None:
    try:
        yaml_load(path.read_text(encoding="utf-8"), _UniqueKeyLoader)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise UserError(f"{path}: line {mark.line + 1}: {e.problem}") from None


def parse_spec(data: dict, source: str, root: Path, default_name: str = "study") -> StudySpec:
    """Check a spec's dict (as read from `source`) and return the StudySpec; profiles not applied."""
    if not isinstance(data, dict):
        raise _error(source, "", "top level must be a mapping")
    try:
        return _study_spec(build(SpecFile, copy.deepcopy(data)), source, Path(root), default_name)
    except UserError as e:
        raise _error(source, "", str(e)) from None


def _study_spec(f: SpecFile, source: str, root: Path, default_name: str) -> StudySpec:
    """The StudySpec of a built SpecFile: the checks that relate its sections to each other."""
    spec = StudySpec(name=default_name if f.name is None else f.name, source=source,
                     kind="study" if f.space is None else "search", base=_base(f, root), description=f.description)
    if spec.kind == "study":
        spec.mode = "vary" if f.vary is not None else "grid"
        spec.factors = getattr(f, spec.mode)
        if f.seeds is not None:
            spec.seeds, spec.adaptive, spec.seed_sources = _seed_plan(f.seeds, spec.base)
        for key, level in (f.reference or {}).items():
            if key not in spec.factors:
                raise ConfigError(f"reference.{key}", "is not a factor of this spec" + suggest(key, spec.factors))
            if not _is_level(level, spec.factors[key]):
                shown = short_repr(", ".join(level_label(v) for v in spec.factors[key])).strip("'")
                raise ConfigError(f"reference.{key}", f"{brief_label(level)} is not one of its levels ({shown})"
                                  + _type_hint(level, spec.factors[key]))
        spec.reference = dict(f.reference or {})
        for key, entry in (f.compare or {}).items():
            if key not in spec.factors or spec.mode != "vary":
                raise ConfigError(f"compare.{key}", "is not a factor of this spec's vary:" + suggest(key, spec.factors))
            for i, pair in enumerate(entry.pairs or []):
                for v in pair:
                    if not _is_level(v, spec.factors[key]):
                        raise ConfigError(f"compare.{key}.pairs[{i}]", f"{brief_label(v)} is not one of its levels"
                                          + _type_hint(v, spec.factors[key]))
        spec.compare = dict(f.compare or {})
        spec.equivalence_margin = f.equivalence_margin
    else:
        spec.space = _space(f.space)
        objective = f.objective or ObjectiveFile()
        spec.objective, spec.direction = objective.metric, objective.direction
        spec.pruner = dataclasses.asdict(f.pruner or PrunerFile())
        spec.sampler_seed = f.sampler_seed or 0
    spec.metrics = f.metrics or list(DEFAULT_METRICS)
    spec.report = f.report or ReportSpec()
    spec.analysis = f.analysis or []
    spec.analysis_options = dict(f.analysis_options or {})
    spec.profiles = {name: _profile(name, p or ProfileFile(), spec) for name, p in (f.profiles or {}).items()}
    spec.profile = f.origin.profile if f.origin else None
    spec.slurm = f.slurm
    return spec


def _base(f: SpecFile, root: Path) -> dict:
    """base_config (a run config YAML relative to the spec) with the inline base over it."""
    base: dict = {}
    if f.base_config is not None:
        path = Path(f.base_config) if Path(f.base_config).is_absolute() else root / f.base_config
        try:
            base = nest(read_yaml(path))
        except UserError as e:
            raise ConfigError("base_config", str(e)) from None
    return merge(base, nest(f.base or {}))


def _seed_plan(value: int | list | SeedsFile, base: dict) -> tuple[Sequence[int], AdaptiveSeeds | None, dict]:
    """(seeds, adaptive, seed sources) of a `seeds:` value; a count stays a range (no allocation)."""
    if isinstance(value, int):
        return range(value), None, {}
    if isinstance(value, list):
        return list(value), None, {}
    if value.adaptive:
        return range(value.min), AdaptiveSeeds(value.min, value.max, value.target_delta, value.metric), {}
    sources = {k: getattr(value, k) for k in SEED_SOURCES if getattr(value, k) is not None}
    return [get_dotted(base, "seed", 0)], None, {k: range(v) if isinstance(v, int) else v for k, v in sources.items()}


def _space(block: dict[str, ParamFile]) -> dict[str, SearchParam]:
    return {key: _search_param(key, p) for key, p in block.items()}


def _search_param(key: str, p: ParamFile) -> SearchParam:
    """A dimension; a range's ends take the type of the config field it searches (see `_ranges`)."""
    if p.choices is not None:
        return SearchParam(key, "categorical", choices=p.choices)
    tp = field_type(key)
    low, high, step = (None if v is None else tp(v) for v in (p.low, p.high, p.step))
    return SearchParam(key, tp.__name__, low, high, p.log, step)


def _profile(name: str, pf: ProfileFile, spec: StudySpec) -> Profile:
    """A checked profile: its overrides build with the base, its levels are levels of the spec."""
    at = f"profiles.{name}"
    prof = Profile(name=name, overrides=nest(pf.overrides or {}), analysis=pf.analysis,
                   analysis_options=pf.analysis_options, report=pf.report)
    try:
        build(RunConfig, merge(spec.base, prof.overrides))
    except UserError as e:
        raise ConfigError(f"{at}.overrides", str(e)) from None
    if pf.seeds is not None:
        if spec.kind == "search":
            raise ConfigError(f"{at}.seeds", "not used in search mode")
        prof.seeds, prof.adaptive, prof.seed_sources = _seed_plan(pf.seeds, merge(spec.base, prof.overrides))
    for mode in ("vary", "grid"):
        subset = getattr(pf, mode)
        if subset is not None and mode != spec.mode:
            raise ConfigError(f"{at}.{mode}", f"the spec uses {spec.mode or 'space'}:, not {mode}:")
        for key, levels in (subset or {}).items():
            if key not in spec.factors:
                raise ConfigError(f"{at}.{mode}.{key}", "is not a factor of this spec" + suggest(key, spec.factors))
            for v in levels:
                if not _is_level(v, spec.factors[key]):
                    raise ConfigError(f"{at}.{mode}.{key}", f"{brief_label(v)} is not a level of the spec's {mode}")
            prof.levels[key] = levels
    if pf.space is not None:
        if spec.kind != "search":
            raise ConfigError(f"{at}.space", "only used in search mode")
        prof.space = _space(pf.space)
    if pf.report is not None:
        build(ReportSpec, merge(dataclasses.asdict(spec.report), pf.report), f"{at}.report.")
    return prof


# ----------------------------------------------------------------------------------------------
# profiles, size, expansion


def resolve(spec: StudySpec, profile: str | None = None) -> StudySpec:
    """The spec with `profile` applied: its overrides merged into base, its seeds, level subsets,
    analysis and report keys. The result carries no profiles (only the name of the one applied), a
    fully resolved base, and the defaults of adaptive seeding filled in."""
    out = copy.deepcopy(spec)
    if profile is not None:
        if profile not in spec.profiles:
            known = ", ".join(spec.profiles) or "none defined"
            raise _error(spec.source, "profiles", f"unknown profile {profile!r} (profiles: {known})" + suggest(profile, spec.profiles))
        prof = spec.profiles[profile]
        out.base = merge(spec.base, prof.overrides)
        if prof.seeds is not None:
            out.seeds, out.adaptive, out.seed_sources = prof.seeds, prof.adaptive, dict(prof.seed_sources)
        for key, levels in prof.levels.items():
            out.factors[key] = list(levels)
            if key in out.reference and not _is_level(out.reference[key], levels):
                del out.reference[key]  # the reference level is not in this profile: fall back to the default
            if key in out.compare and out.compare[key].pairs:  # pairs of levels this profile runs
                c = out.compare[key]
                kept = [p for p in c.pairs if all(_is_level(v, levels) for v in p)]
                if kept or c.reference or c.trend:
                    out.compare[key] = dataclasses.replace(c, pairs=kept or None)
                else:  # none of its pairs runs here: the default family (each level vs the reference)
                    del out.compare[key]
        out.space.update(copy.deepcopy(prof.space))
        if prof.analysis is not None:
            out.analysis = list(prof.analysis)
        if prof.analysis_options is not None:
            out.analysis_options = {**out.analysis_options, **prof.analysis_options}
        if prof.report is not None:
            out.report = build(ReportSpec, merge(dataclasses.asdict(out.report), prof.report))
        out.profile = profile
    out.profiles = {}
    try:
        out.base = to_dict(build(RunConfig, out.base))
    except UserError as e:
        raise _error(spec.source, "base", str(e)) from None
    if out.seed_sources:
        out.seeds = [out.base["seed"]]
    if out.adaptive is not None:
        out.adaptive = dataclasses.replace(out.adaptive, target_delta=out.adaptive.target_delta or out.report.target_delta,
                                           metric=out.adaptive.metric or out.metrics[0])
    return out


def reference_levels(spec: StudySpec) -> dict[str, Any]:
    """Reference level per factor: the spec's `reference`, else the base value when it is a level,
    else the first level. For a grid, the reference is one cell (a {key: value} dict) under "grid"."""
    base = spec.base
    refs = {}
    for key, levels in spec.factors.items():
        wanted = spec.reference[key] if key in spec.reference else get_dotted(base, key)
        match = [v for v in levels if value_key(v) == value_key(wanted)]  # the level as spelled in the list
        refs[key] = match[0] if match else levels[0]
    if spec.mode == "grid":
        return {"grid": refs}
    return refs


def _factor_levels(spec: StudySpec) -> Iterator[tuple[str, Iterable[tuple[Any, dict]]]]:
    """(factor name, iterable of (level, varied dict)) in spec order; a grid's cells are generated lazily."""
    if spec.mode == "vary":
        for key, levels in spec.factors.items():
            yield key, [(v, {key: v}) for v in levels]
        return
    keys = list(spec.factors)
    cells = (dict(zip(keys, combo)) for combo in itertools.product(*spec.factors.values()))
    yield "grid", ((cell, dict(cell)) for cell in cells)


def factor_labels(spec: StudySpec) -> dict[str, list[str]]:
    """{factor: [level_label, ...]} in level order (what the index's meta lists)."""
    out = {}
    for factor, levels in _factor_levels(spec):
        out[factor] = [combo_label(lv) if factor == "grid" else level_label(lv) for lv, _ in levels]
    return out


def reference_labels(spec: StudySpec) -> dict[str, str]:
    return {f: combo_label(v) if f == "grid" else level_label(v) for f, v in reference_levels(spec).items()}


def _study_only(spec: StudySpec) -> StudySpec:
    if spec.kind != "study":
        raise UserError(f"{spec.source}: space: this is a search spec; run it with `vitlab search`")
    return spec


def level_count(spec: StudySpec) -> int:
    """Levels of a study: the sum over factors of `vary`, the product (cells) of a `grid`."""
    sizes = [len(levels) for levels in spec.factors.values()]
    return sum(sizes) if spec.mode == "vary" else math.prod(sizes)


def seeds_per_level(spec: StudySpec) -> int:
    """Runs per level: seeds (an adaptive study's max) times the combinations of the seed sources."""
    seeds = spec.adaptive.max if spec.adaptive else len(spec.seeds)
    return seeds * math.prod(len(s) for s in spec.seed_sources.values())


def count_runs(spec: StudySpec | str | Path | dict, profile: str | None = None) -> int:
    """Runs `expand` would return (an adaptive study: at most), counted without expanding anything."""
    spec = _study_only(load_spec(spec))
    if profile is not None:
        spec = resolve(spec, profile)
    return level_count(spec) * seeds_per_level(spec)


def check_size(spec: StudySpec, max_runs: int | None = DEFAULT_MAX_RUNS) -> int:
    """The run count, or a one-line error naming it when it is above `max_runs` (None: no limit)."""
    n = count_runs(spec)
    if max_runs is not None and n > max_runs:
        levels, per = level_count(spec), seeds_per_level(spec)
        key = "seeds" if per > max_runs else spec.mode
        what = "cells" if spec.mode == "grid" else "levels"
        raise _error(spec.source, key, f"the study has {'up to ' if spec.adaptive else ''}{n:,} runs "
                     f"({levels:,} {what} x {per:,} seeds), more than the limit of {max_runs:,} runs (--max-runs)")
    return n


def build_run_config(spec: StudySpec, varied: dict, seed: int | None, where: str) -> RunConfig:
    """Base + varied values (+ seed), built and checked; errors name the spec and the level."""
    tree = copy.deepcopy(spec.base)
    for key, value in varied.items():
        set_dotted(tree, key, value)
    if seed is not None:
        tree["seed"] = seed
    try:
        return build(RunConfig, tree)
    except UserError as e:
        raise _error(spec.source, where, str(e)) from None


def _seed_override(seeds: Iterable[int], source: str) -> list[int]:
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    try:
        if bad:
            raise ConfigError("seeds", f"must be integers, got {short_repr(bad[0])}")
        return _seed_list(seeds, "seeds")
    except ConfigError as e:
        raise _error(source, "", str(e)) from None


def _level_runs(spec: StudySpec, factor: str, order: int, level: Any, varied: dict, seeds: Iterable[int],
                check_models: bool, checked: set[str]) -> Iterator[RunSpec]:
    """The runs of one level: one per seed and combination of the seed sources."""
    label = combo_label(level) if factor == "grid" else level_label(level)
    where = f"{spec.mode}.{factor}={label}" if factor != "grid" else f"grid[{label}]"
    cfg0 = build_run_config(spec, varied, None, where)
    if check_models:
        key = canonical_json([to_dict(cfg0.model), data_shape(cfg0)])
        if key not in checked:
            check_model(cfg0, spec.source, where)
            checked.add(key)
    names = list(spec.seed_sources)
    for seed in seeds:
        for combo in itertools.product(*spec.seed_sources.values()):
            sources = dict(zip(names, combo))
            cfg = dataclasses.replace(cfg0, seed=seed, **{f"seed_{k}": v for k, v in sources.items()})
            yield RunSpec(run_id=run_id_of(cfg), factor=factor, level=copy.deepcopy(level), level_label=label,
                          level_order=order, seed=seed, config=cfg, varied=copy.deepcopy(varied),
                          seed_sources=sources)


def iter_runs(spec: StudySpec, check_models: bool = True) -> Iterator[RunSpec]:
    """The runs of a resolved study, lazily, in expansion order (no size check: see `expand`)."""
    checked: set[str] = set()
    for factor, levels in _factor_levels(_study_only(spec)):
        for order, (level, varied) in enumerate(levels):
            yield from _level_runs(spec, factor, order, level, varied, spec.seeds, check_models, checked)


def expand(spec: StudySpec | str | Path | dict, profile: str | None = None, check_models: bool = True, *,
           seeds: Iterable[int] | None = None, max_runs: int | None = DEFAULT_MAX_RUNS) -> list[RunSpec]:
    """Every run of a study (one per factor, level and seed), each config validated.

    A run shared between factors (a `vary` level equal to the base value) appears once per factor
    with the same run ID; the runner trains it once. Models are checked by construction on the meta
    device, so a level the architecture rejects (heads not dividing the width) fails here. `seeds`
    replaces the spec's seeds (an adaptive study's included) for every level. A study of more than
    `max_runs` runs is refused before anything is expanded (None: no limit).
    """
    spec = resolve(_study_only(load_spec(spec)), profile)
    if seeds is not None:
        spec.seeds, spec.adaptive = _seed_override(seeds, spec.source), None
    check_size(spec, max_runs)
    return list(iter_runs(spec, check_models))


def runs_for_level(spec: StudySpec, factor: str, level: Any, seeds: Iterable[int],
                   check_models: bool = False) -> list[RunSpec]:
    """The runs of one level of a resolved study at `seeds` (adaptive seeding adds seeds this way).

    `factor` and `level` are as in a RunSpec (a grid: "grid" and a {key: value} cell); each seed gives
    one run per combination of the seed sources. The model is not checked again unless asked:
    `expand` checked every level already.
    """
    spec = _study_only(spec)
    order, level, varied = _locate(spec, factor, level)
    return list(_level_runs(spec, factor, order, level, varied, _seed_override(seeds, spec.source),
                            check_models, set()))


def _locate(spec: StudySpec, factor: str, level: Any) -> tuple[int, Any, dict]:
    """(level order, the level as spelled in the spec, varied dict) of a factor's level."""
    if spec.mode == "vary" and factor in spec.factors:
        for order, v in enumerate(spec.factors[factor]):
            if value_key(v) == value_key(level):
                return order, v, {factor: v}
    elif spec.mode == "grid" and factor == "grid" and isinstance(level, dict) and list(level) == list(spec.factors):
        order, cell = 0, {}
        for key, levels in spec.factors.items():
            found = [i for i, v in enumerate(levels) if value_key(v) == value_key(level[key])]
            if not found:
                break
            order, cell[key] = order * len(levels) + found[0], levels[found[0]]
        else:
            return order, cell, dict(cell)
    raise _error(spec.source, factor, f"{short_repr(level)} is not a level of this study")


# ----------------------------------------------------------------------------------------------
# model check


def data_shape(cfg: RunConfig) -> tuple[int, int]:
    """(channels, image size) of a run's dataset, known without reading it."""
    from ..data import cifar, fashion_mnist, synthetic

    name = cfg.data.name
    if name == "synthetic":
        return 3, synthetic.IMAGE_SIZE
    if name == "fashion_mnist":
        return fashion_mnist.IMAGE_SHAPE[0], fashion_mnist.IMAGE_SHAPE[-1]
    if name == "folder":
        return 3, cfg.data.folder_image_size
    return cifar.IMAGE_SHAPE[0], cifar.IMAGE_SHAPE[-1]


#: Classes used to construct a model for checking: the class count never makes an architecture invalid.
CHECK_CLASSES = 10


def check_model(cfg: RunConfig, source: str, where: str) -> None:
    """Construct the run's model on the meta device (no memory, no compute), so that a level the
    architecture rejects (heads not dividing a width, a knob the model lacks) fails at expansion."""
    import torch

    from ..models import build_model

    in_chans, image_size = data_shape(cfg)
    try:
        with torch.device("meta"):
            build_model(cfg.model, CHECK_CLASSES, in_chans, image_size)
    except UserError as e:
        raise _error(source, where, str(e)) from None
    except (ValueError, AssertionError, RuntimeError, TypeError) as e:
        raise _error(source, where, f"model {cfg.model.name} cannot be built: {e}") from None


# ----------------------------------------------------------------------------------------------
# serialisation


def _seeds_to_dict(spec: StudySpec) -> int | list | dict:
    if spec.adaptive is not None:
        a = dataclasses.asdict(spec.adaptive)
        return {"adaptive": True, **{k: v for k, v in a.items() if v is not None}}
    if spec.seed_sources:
        return {k: list(v) for k, v in spec.seed_sources.items()}
    return list(spec.seeds)


def spec_to_dict(spec: StudySpec) -> dict:
    """A resolved spec as a dict that `parse_spec` reads back to the same runs (DIR/spec.yaml)."""
    d: dict = {"name": spec.name}
    if spec.description:
        d["description"] = spec.description
    d["base"] = copy.deepcopy(spec.base)
    if spec.kind == "study":
        d[spec.mode] = copy.deepcopy(spec.factors)
        d["seeds"] = _seeds_to_dict(spec)
        if spec.reference:
            d["reference"] = copy.deepcopy(spec.reference)
        if spec.compare:
            d["compare"] = {k: {f: v for f, v in dataclasses.asdict(c).items() if v not in (None, False)}
                            for k, c in spec.compare.items()}
        if spec.equivalence_margin is not None:
            d["equivalence_margin"] = spec.equivalence_margin
    else:
        d["space"] = {k: p.to_dict() for k, p in spec.space.items()}
        d["objective"] = {"metric": spec.objective, "direction": spec.direction}
        d["pruner"] = dict(spec.pruner)
        d["sampler_seed"] = spec.sampler_seed
    d["metrics"] = list(spec.metrics)
    d["report"] = dataclasses.asdict(spec.report)
    if spec.analysis:
        d["analysis"] = list(spec.analysis)
    if spec.analysis_options:
        d["analysis_options"] = dict(spec.analysis_options)
    d["origin"] = {"file": spec.source, "profile": spec.profile}
    return d


def same_study(a: dict, b: dict) -> bool:
    """Whether two spec dicts (as written to spec.yaml) describe the same runs: the origin, the
    description, the declared comparisons and margin (`compare:`, `equivalence_margin`: they decide
    the verdicts, so a study can be re-decided from its runs) and execution-only fields of the base
    (threads, progress, tracking) may differ."""
    def strip(d: dict) -> dict:  # declared comparisons decide verdicts, not what any run computes
        out = {k: v for k, v in d.items() if k not in ("origin", "description", "compare", "equivalence_margin")}
        base = copy.deepcopy(out.get("base") or {})
        for section, key in EXECUTION_ONLY:
            if isinstance(base.get(section), dict):
                base[section].pop(key, None)
                if not base[section]:
                    base.pop(section)
        out["base"] = base
        return out
    return canonical_json(strip(a)) == canonical_json(strip(b))
