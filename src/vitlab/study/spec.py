"""Study specs: one YAML file that names a base run config and what to vary around it.

A spec is either a *study* (`vary:` one factor at a time, or `grid:` a cartesian product, each over
several seeds) or a *search* (`space:` searched by Optuna). Its schema is one dataclass, `StudySpec`
(with its sections `Seeds`, `SearchParam`, `Objective`, `Pruner`, `ReportSpec`, `Profile`, `Origin`),
built by `config.build` like a run config: unknown keys, types, closed choices and ranges are checked
with the field they belong to, and each form a key may take is normalised there (a seed count becomes a
range, an objective's metric name an `Objective`); `__post_init__` holds only the rules that relate
fields (exactly one of vary/grid/space, the reference is a level, a profile's levels are the spec's).
`load_spec` reads and checks a spec, `resolve` applies a profile and fills in what depends on the
base config, `spec_to_dict` writes it back as a plain dict (DIR/spec.yaml), `describe_spec_keys` lists
every key with its doc. Turning a spec into runs is `plan.py`. Every problem is a `UserError` of one
line that names the spec file and the key.

Seeds (`seeds:`, default 3):
- a count n (seeds 0 .. n-1) or a list of distinct seeds. Each is the run config's `seed`, which drives
  every source of randomness. Seeds must fit the RNGs: 0 <= seed <= config.MAX_SEED (2**32 - 1).
- adaptive, `{adaptive: true, min: 3, max: 10, target_delta: 1.0}`: the study expands to seeds
  0 .. min-1 (`spec.seed_list`), and the runner adds seed k = min, min+1, ... (`plan.runs_for_level`) to
  each level whose paired comparison with the reference on `metric` (default: the first of `metrics:`)
  is still undecided -- its interval contains 0 and is wider than `target_delta` (default
  `report.target_delta`) -- until the level has `max` seeds. `spec.adaptive` holds these settings.
- seed sources, factorial, `{init: 3, split: 3, order: 2}` (each a count or a list): every combination
  is one run, whose config sets `seed_init`, `seed_split`, `seed_order` for the sources named, while the
  base config's `seed` drives the others (`spec.seed_list` is that one seed). `spec.seed_sources` maps
  each source to its seeds and `RunSpec.seed_sources` holds a run's combination ({"init": 1, "split": 0}).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Optional, Union

import yaml

from ..config import MAX_SEED, RunConfig, SEED_SOURCES
from ..identity import EXECUTION_ONLY, canonical_json
from ..schema import build, check_key_path, describe_keys, key_type, knob, require, suggest, to_dict
from ..yamlsafe import BoundedSafeLoader, read_yaml, yaml_load
from ..analysis.metrics import SCALAR_METRICS, is_analysis_metric
from ..analysis.options import SECTIONS, AnalysisOptions
from ..errors import ConfigError, UserError, short_repr
from ..metrics import DEFAULT_COLUMNS, METRICS, OBJECTIVE_METRICS, optimize_direction
from ..stats import CI_METHODS
from .levels import brief_label, level_label, value_key
from .slurm_spec import SlurmSpec

#: Dotted keys that change how a run executes, not what it computes (not in the run ID, not factors).
EXECUTION_ONLY_KEYS = tuple(sorted(f"{section}.{key}" for section, key in EXECUTION_ONLY))
#: Seeds when a spec gives none.
DEFAULT_SEED_COUNT = 3
#: Adaptive seeding: seeds every level starts with / may grow to, when the spec does not say.
ADAPTIVE_MIN_SEEDS, ADAPTIVE_MAX_SEEDS = 3, 10
#: Sources of randomness a spec can vary factorially: `seeds: {init: 3}` sets the config's `seed_init`.
SEED_SOURCES = tuple(f.removeprefix("seed_") for f in SEED_SOURCES)
#: Analyses a spec can ask for on every completed run (`analysis:`), owned by the analysis package.
ANALYSES = SECTIONS
#: Spec keys that change how a study executes, not what it computes: not in spec.yaml, not the study's identity.
EXECUTION_ONLY_SPEC_KEYS = ("slurm",)


# ----------------------------------------------------------------------------------------------
# checks the schema's types run (config.build calls each `check(value, path)` of an Annotated type;
# what a check returns is the field's value, so a check may also normalise the form)


def is_metric(name: str) -> bool:
    """Whether `name` is a metric a run reports (summary.json or an analysis)."""
    return name in METRICS or is_analysis_metric(name)


def _metric(name: str, path: str) -> str:
    if not is_metric(name):
        raise ConfigError(path, f"unknown metric {short_repr(name)}" + suggest(name, (*METRICS, *SCALAR_METRICS)))
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
    if n > MAX_SEED + 1:
        raise ConfigError(path, f"a count of {n} seeds does not fit the RNGs (seeds must be <= {MAX_SEED})")
    return n


def _seed_range(n: int, path: str) -> range:
    """A count n of seeds is seeds 0 .. n-1, kept as a range (a huge count allocates nothing)."""
    return range(n)


def _seed_list(seeds: list[int], path: str) -> list[int]:
    if not seeds:
        raise ConfigError(path, "must be a count >= 1 or a non-empty list of seeds")
    if any(s < 0 for s in seeds):
        raise ConfigError(path, f"seeds must be integers >= 0, got {short_repr(seeds)}")
    if any(s > MAX_SEED for s in seeds):
        raise ConfigError(path, f"seeds must be <= {MAX_SEED} to fit the RNGs, got {max(seeds)}")
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
    """A search range needs a numeric field, and whole ends for an integer one; its ends take the
    field's type (so `SearchParam.kind` is the field's)."""
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
            if v is not None:
                setattr(p, name, tp(v))
    return space


def _analysis_options(options: dict, path: str) -> dict:
    """`analysis_options:` are AnalysisOptions fields (not `sections`: that is `analysis:`)."""
    if "sections" in options:
        raise ConfigError(f"{path}.sections", "list the analyses in analysis:, not here")
    build(AnalysisOptions, options, f"{path}.")
    return dict(options)


def _report_keys(keys: dict, path: str) -> dict:
    """A profile's `report:` gives some keys of ReportSpec (each checked as there)."""
    build(ReportSpec, keys, f"{path}.")
    return keys


def _nested(tree: dict, path: str) -> dict:
    """Run config keys given dotted or nested, as one nested dict."""
    return nest(tree)


def _profiles(profiles: dict, path: str) -> dict:
    """`profiles: {quick: }` (an empty entry) is a profile that changes nothing."""
    return {name: p if p is not None else Profile() for name, p in profiles.items()}


_positive_step = require(lambda v: v > 0, "must be > 0")
_nonempty = require(bool, "must be a non-empty mapping of dotted config key -> levels (or search range)")
_validation_metric = require(lambda name: not name.startswith("test_"),
                             "must be a validation metric (a search must never select on the test set)")
Levels = Annotated[list[Any], _levels]
MetricName = Annotated[str, _metric]
MetricNames = Annotated[list[str], _metrics]
Analyses = Annotated[list[str], _distinct]
AnalysisOptionKeys = Annotated[dict[str, Any], _analysis_options]
ConfigTree = Annotated[dict[str, Any], _nested]
Finite = Annotated[float, require(math.isfinite, "must be a finite number")]
Positive = Annotated[float, require(lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")]
NonNegInt = Annotated[int, require(lambda v: v >= 0, "must be an integer >= 0")]
Seed = Annotated[int, require(lambda v: 0 <= v <= MAX_SEED, f"must be in [0, {MAX_SEED}] to fit the RNGs")]
StudyName = Annotated[str, require(lambda n: bool(n.strip()) and "/" not in n and n.isprintable(),
                                   "must be a non-empty string without '/' or control characters")]
Step = Union[Annotated[int, _positive_step], Annotated[Finite, _positive_step], None]
SeedCount = Annotated[int, _seed_count]
SeedRange = Annotated[int, _seed_count, _seed_range]
SeedList = Annotated[list[int], _seed_list]
Factors = Annotated[dict[str, Levels], _nonempty, _config_keys]


# ----------------------------------------------------------------------------------------------
# the schema: one dataclass per section, the spec last


@dataclass
class SearchParam:
    """One dimension of `space:`: a numeric range `{low, high[, log | step]}` or `{choices: [...]}`."""

    low: Union[int, Finite, None] = knob(None, "lower end of the range (inclusive)")
    high: Union[int, Finite, None] = knob(None, "upper end of the range (inclusive)")
    log: bool = knob(False, "sample on a log scale (needs low > 0)")
    step: Step = knob(None, "sample on the grid low, low+step, ... (not with log)")
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
        if self.log and self.low <= 0:
            raise ConfigError("", f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ConfigError("", "log and step cannot be combined")

    @property
    def kind(self) -> str:
        """"categorical", or the type of the searched field: "int" or "float" (the ends take it)."""
        return "categorical" if self.choices is not None else type(self.low).__name__


@dataclass
class Objective:
    """`objective:` of a search (a metric name alone means `{metric: NAME}`)."""

    metric: Annotated[str, _validation_metric] = knob("val_top1", "validation metric the search optimises",
                                                      choices=OBJECTIVE_METRICS)
    direction: Optional[str] = knob(None, "default: minimize for val_loss and val_ece, else maximize",
                                    choices=(None, "minimize", "maximize"))

    def __post_init__(self):
        if self.direction is None:
            self.direction = optimize_direction(self.metric)


def _objective(metric: str, path: str) -> Objective:
    return build(Objective, {"metric": metric}, f"{path}.")


@dataclass
class Pruner:
    """`pruner:` of a search (Optuna's median pruner on the per-epoch objective); `none` disables it."""

    name: str = knob("median", "pruner", choices=("median", "none"))
    startup_trials: NonNegInt = knob(5, "no pruning before this many trials finished")
    warmup_epochs: NonNegInt = knob(1, "no pruning of a trial before this epoch")


def _no_pruner(value: bool | str, path: str) -> Pruner:
    """`pruner: none` (or false) is the pruner that never prunes."""
    if value not in (False, "none"):
        raise ConfigError(path, f"must be a mapping {{name, startup_trials, warmup_epochs}} or none, got {short_repr(value)}")
    return Pruner(name="none")


@dataclass
class ReportSpec:
    """`report:` how reports summarise the study's seeds."""

    ci: str = knob("t", "interval of a mean over seeds: Student t, percentile bootstrap, or BCa bootstrap",
                   choices=CI_METHODS)
    target_delta: Positive = knob(1.0, "difference (in the metric's units, e.g. accuracy points) the report "
                                       "says how many seeds are needed to detect")


@dataclass
class Seeds:
    """`seeds:` as a mapping: adaptive seeding, or seed sources varied factorially (module docstring)."""

    adaptive: bool = knob(False, "add seeds to the levels whose comparison with the reference is undecided")
    min: Optional[SeedCount] = knob(None, f"adaptive: seeds every level gets (default {ADAPTIVE_MIN_SEEDS})")
    max: Optional[SeedCount] = knob(None, f"adaptive: most seeds a level gets (default {ADAPTIVE_MAX_SEEDS})")
    target_delta: Optional[Positive] = knob(None, "adaptive: a comparison is decided when its interval is "
                                                  "narrower than this (default report.target_delta)")
    metric: Optional[MetricName] = knob(None, "adaptive: metric compared (default: the first of metrics:)")
    init: Union[SeedRange, SeedList, None] = knob(None, "seeds of the weight initialization (seed_init): a count or a list")
    split: Union[SeedRange, SeedList, None] = knob(None, "seeds of the train/validation split (seed_split): a count or a list")
    order: Union[SeedRange, SeedList, None] = knob(None, "seeds of the data order and augmentation (seed_order): a count or a list")

    def __post_init__(self):
        adaptive_keys = [k for k in ("min", "max", "target_delta", "metric") if getattr(self, k) is not None]
        if self.adaptive:
            if self.sources:
                raise ConfigError(next(iter(self.sources)), "seed sources cannot be combined with adaptive: true")
            self.min = self.min or ADAPTIVE_MIN_SEEDS
            self.max = self.max or max(ADAPTIVE_MAX_SEEDS, self.min)
            if self.max < self.min:
                raise ConfigError("max", f"must be >= min ({self.min}), got {self.max}")
        elif adaptive_keys:
            raise ConfigError(adaptive_keys[0], "only used with adaptive: true")
        elif not self.sources:
            raise ConfigError("", f"a mapping needs adaptive: true or seed sources ({', '.join(SEED_SOURCES)})")

    @property
    def sources(self) -> dict[str, Sequence[int]]:
        """{source: its seeds} of the seed sources given ({} when adaptive)."""
        return {k: getattr(self, k) for k in SEED_SOURCES if getattr(self, k) is not None}

    @property
    def extra_seeds(self) -> range:
        """Adaptive: the seeds the runner may add to a level, in the order it adds them."""
        return range(self.min, self.max)


#: What `seeds:` holds once built: a count's range, a list of seeds, or a `Seeds` mapping.
SeedsValue = Union[SeedRange, SeedList, Seeds]


@dataclass
class Compare:
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
class Profile:
    """One entry of `profiles:`: a named variant of the spec (`--profile NAME`)."""

    overrides: Optional[ConfigTree] = knob(None, "run config keys (dotted or nested) merged into base")
    seeds: Optional[SeedsValue] = knob(None, "replaces the spec's seeds (any form of seeds:)")
    vary: Optional[dict[str, Levels]] = knob(None, "a subset of the levels of some factors")
    grid: Optional[dict[str, Levels]] = knob(None, "a subset of the levels of some grid factors")
    space: Optional[Annotated[dict[str, SearchParam], _config_keys, _ranges]] = knob(None, "search: dimensions replaced")
    analysis: Optional[Analyses] = knob(None, "replaces the spec's analysis:", choices=ANALYSES)
    analysis_options: Optional[AnalysisOptionKeys] = knob(None, "replaces these keys of the spec's analysis_options:")
    report: Optional[Annotated[dict[str, Any], _report_keys]] = knob(None, "replaces these keys of the spec's report:")

    @property
    def levels(self) -> dict[str, list]:
        """{factor: subset of its levels} (from vary: or grid:, whichever the spec uses)."""
        return self.vary or self.grid or {}


@dataclass
class Origin:
    """`origin:`, written by vitlab into a study's spec.yaml: where the resolved spec came from."""

    file: Optional[str] = knob(None, "the spec file")
    profile: Optional[str] = knob(None, "the profile applied")


@dataclass
class StudySpec:
    """A study or search spec; exactly one of vary, grid (a study) or space (a search).

    Built from the file by `load_spec` (base_config folded into base, the name defaulted to the file's),
    then `resolve`d: a profile applied, base a complete run config. `source` names the file in errors."""

    name: Optional[StudyName] = knob(None, "study name (default: the spec file's name)")
    description: str = knob("", "one line shown in reports")
    base_config: Optional[str] = knob(None, "run config YAML the base starts from (relative to the spec); "
                                            "load_spec folds it into base")
    base: ConfigTree = knob({}, "run config keys (dotted or nested), over base_config")
    vary: Optional[Factors] = knob(None, "study: dotted config key -> levels, varied one factor at a time")
    grid: Optional[Factors] = knob(None, "study: dotted config key -> levels, every combination")
    seeds: Optional[SeedsValue] = knob(None, f"study: a count (default {DEFAULT_SEED_COUNT}), a list, "
                                             "{adaptive: true, min, max, target_delta} or {init, split, order}")
    reference: dict[str, Any] = knob({}, "study: factor -> the level comparisons are against (default: the "
                                         "base value when it is a level, else the first level)")
    compare: dict[str, Compare] = knob({}, "study: factor -> the declared comparisons, the Holm family "
                                           "(default: each level vs the reference)")
    equivalence_margin: Optional[Positive] = knob(None, "study: +- margin (primary metric's unit, e.g. pp) "
                                                        "within which TOST can call a comparison equivalent")
    metrics: MetricNames = knob(list(DEFAULT_COLUMNS), "metrics the study tabulates, the first is the primary one")
    report: ReportSpec = field(default_factory=ReportSpec,
                               metadata={"doc": "how reports compute intervals and seeds needed"})
    analysis: Analyses = knob([], "analyses of every completed run", choices=ANALYSES)
    analysis_options: AnalysisOptionKeys = knob(
        {}, "knobs of those analyses (`vitlab analyze` options, e.g. corruption_images: 2000)")
    space: Optional[Annotated[dict[str, SearchParam], _nonempty, _config_keys, _ranges]] = knob(
        None, "search: dotted config key -> {low, high[, log | step]} or {choices: [...]}")
    objective: Union[Annotated[str, _validation_metric, _objective], Objective, None] = knob(
        None, "search: validation metric to optimise, or {metric, direction} (default val_top1)")
    pruner: Union[Pruner, Annotated[bool, _no_pruner], Annotated[str, _no_pruner], None] = knob(
        None, "search: {name, startup_trials, warmup_epochs}, or none")
    sampler_seed: Optional[Seed] = knob(None, "search: seed of the TPE sampler (default 0)")
    profiles: Annotated[dict[str, Optional[Profile]], _profiles] = knob({}, "named variants, applied with --profile")
    origin: Optional[Origin] = knob(None, "written by vitlab in a study's spec.yaml")
    slurm: Optional[SlurmSpec] = knob(None, "study: resources of each task with --backend slurm (execution-only)")

    #: The spec file, for error messages (not a key of the file: `load_spec` sets it).
    source: ClassVar[str] = "<spec>"

    def __post_init__(self):
        modes = [k for k in ("vary", "grid", "space") if getattr(self, k) is not None]
        if len(modes) != 1:
            what = " and ".join(modes) if modes else "none of them"
            raise ConfigError("vary", f"a spec needs exactly one of vary, grid (study) or space (search); got {what}")
        if self.space is None:
            for key in ("objective", "pruner", "sampler_seed"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, "only used in search mode (with space:)")
            if self.seeds is None:
                self.seeds = range(DEFAULT_SEED_COUNT)
        else:
            for key in ("seeds", "reference", "compare", "equivalence_margin"):
                if getattr(self, key):
                    raise ConfigError(key, "not used in search mode: each trial runs once with base seed")
            if self.slurm is not None:
                raise ConfigError("slurm", "only used by `vitlab study --backend slurm` (a search trains locally)")
            self.objective = self.objective or Objective()
            self.pruner = self.pruner or Pruner()
            self.sampler_seed = self.sampler_seed or 0
        for key, level in self.reference.items():
            if key not in self.factors:
                raise ConfigError(f"reference.{key}", "is not a factor of this spec" + suggest(key, self.factors))
            if not _is_level(level, self.factors[key]):
                shown = short_repr(", ".join(level_label(v) for v in self.factors[key])).strip("'")
                raise ConfigError(f"reference.{key}", f"{brief_label(level)} is not one of its levels ({shown})"
                                  + _type_hint(level, self.factors[key]))
        for key, entry in self.compare.items():
            if key not in self.factors or self.mode != "vary":
                raise ConfigError(f"compare.{key}", "is not a factor of this spec's vary:" + suggest(key, self.factors))
            for i, pair in enumerate(entry.pairs or []):
                for v in pair:
                    if not _is_level(v, self.factors[key]):
                        raise ConfigError(f"compare.{key}.pairs[{i}]", f"{brief_label(v)} is not one of its levels"
                                          + _type_hint(v, self.factors[key]))
        for name, prof in self.profiles.items():
            self._check_profile(f"profiles.{name}", prof)

    def _check_profile(self, at: str, prof: Profile) -> None:
        """A profile's seeds, levels and space fit the spec (its overrides: `check_profile_overrides`)."""
        if prof.seeds is not None and self.kind == "search":
            raise ConfigError(f"{at}.seeds", "not used in search mode")
        for mode in ("vary", "grid"):
            subset = getattr(prof, mode)
            if subset is not None and mode != self.mode:
                raise ConfigError(f"{at}.{mode}", f"the spec uses {self.mode or 'space'}:, not {mode}:")
            for key, levels in (subset or {}).items():
                if key not in self.factors:
                    raise ConfigError(f"{at}.{mode}.{key}", "is not a factor of this spec" + suggest(key, self.factors))
                for v in levels:
                    if not _is_level(v, self.factors[key]):
                        raise ConfigError(f"{at}.{mode}.{key}", f"{brief_label(v)} is not a level of the spec's {mode}")
        if prof.space is not None and self.kind != "search":
            raise ConfigError(f"{at}.space", "only used in search mode")

    @property
    def kind(self) -> str:
        """"study" (vary: or grid:) or "search" (space:)."""
        return "study" if self.space is None else "search"

    @property
    def mode(self) -> str | None:
        """"vary" or "grid" for a study, None for a search."""
        return "vary" if self.vary is not None else "grid" if self.grid is not None else None

    @property
    def factors(self) -> dict[str, list]:
        """Dotted config key -> levels, of vary: or grid: ({} for a search)."""
        return self.vary if self.vary is not None else self.grid if self.grid is not None else {}

    @property
    def adaptive(self) -> Seeds | None:
        """The adaptive seeding settings, when `seeds:` asks for it."""
        return self.seeds if isinstance(self.seeds, Seeds) and self.seeds.adaptive else None

    @property
    def seed_sources(self) -> dict[str, Sequence[int]]:
        """{source: seeds} of the seed sources varied factorially ({} when there are none)."""
        return self.seeds.sources if isinstance(self.seeds, Seeds) else {}

    @property
    def seed_list(self) -> Sequence[int]:
        """The seeds every level runs at: a count's range, a list, adaptive seeding's first `min`, or
        the base config's one `seed` when seed sources vary the rest (a search: none)."""
        if isinstance(self.seeds, Seeds):
            return range(self.seeds.min) if self.seeds.adaptive else [get_dotted(self.base, "seed", 0)]
        return self.seeds if self.seeds is not None else []

    @property
    def profile(self) -> str | None:
        """The profile applied (by `resolve`, or recorded in spec.yaml's origin:), if any."""
        return self.origin.profile if self.origin is not None else None


# ----------------------------------------------------------------------------------------------
# helpers


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
    tp = key_type(RunConfig, key)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and args:
        tp = args[0]
    return tp


def spec_error(source: str, key: str, problem: str) -> UserError:
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
    """Check a spec's dict (as read from `source`) and return the StudySpec; profiles not applied.

    A top-level key set to null is as if absent (its default); base_config, relative to `root`, is
    read and folded into base, which every profile's overrides must then build with."""
    if not isinstance(data, dict):
        raise spec_error(source, "", "top level must be a mapping")
    try:
        spec = build(StudySpec, {k: copy.deepcopy(v) for k, v in data.items() if v is not None})
        spec.source = source
        spec.name = default_name if spec.name is None else spec.name
        spec.base = merge(_read_base_config(spec.base_config, Path(root)), spec.base)
        spec.base_config = None
        for name, prof in spec.profiles.items():
            try:
                build(RunConfig, merge(spec.base, prof.overrides or {}))
            except UserError as e:
                raise ConfigError(f"profiles.{name}.overrides", str(e)) from None
        return spec
    except UserError as e:
        raise spec_error(source, "", str(e)) from None


def _read_base_config(path: str | None, root: Path) -> dict:
    """The run config YAML `base_config:` names (relative to the spec's folder), as a nested dict."""
    if path is None:
        return {}
    try:
        return nest(read_yaml(Path(path) if Path(path).is_absolute() else root / path))
    except UserError as e:
        raise ConfigError("base_config", str(e)) from None


def resolve(spec: StudySpec, profile: str | None = None) -> StudySpec:
    """The spec with `profile` applied: its overrides merged into base, its seeds, level subsets,
    analysis and report keys. The result carries no profiles (its origin names the one applied), a
    fully resolved base, and the defaults of adaptive seeding filled in."""
    out = copy.deepcopy(spec)
    if profile is not None:
        if profile not in spec.profiles:
            known = ", ".join(spec.profiles) or "none defined"
            raise spec_error(spec.source, "profiles", f"unknown profile {profile!r} (profiles: {known})" + suggest(profile, spec.profiles))
        prof = spec.profiles[profile]
        out.base = merge(spec.base, prof.overrides or {})
        if prof.seeds is not None:
            out.seeds = copy.deepcopy(prof.seeds)
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
        if prof.space is not None:
            out.space.update(copy.deepcopy(prof.space))
        if prof.analysis is not None:
            out.analysis = list(prof.analysis)
        if prof.analysis_options is not None:
            out.analysis_options = {**out.analysis_options, **prof.analysis_options}
        if prof.report is not None:
            out.report = build(ReportSpec, merge(dataclasses.asdict(out.report), prof.report))
    out.origin = Origin(file=spec.source, profile=profile if profile is not None else spec.profile)
    out.profiles = {}
    try:
        out.base = to_dict(build(RunConfig, out.base))
    except UserError as e:
        raise spec_error(spec.source, "base", str(e)) from None
    if out.adaptive is not None:
        out.seeds = dataclasses.replace(out.adaptive, target_delta=out.adaptive.target_delta or out.report.target_delta,
                                        metric=out.adaptive.metric or out.metrics[0])
    return out


# ----------------------------------------------------------------------------------------------
# serialisation and reference


def spec_to_dict(spec: StudySpec) -> dict:
    """A spec as the plain dict `parse_spec` reads back to the same runs (DIR/spec.yaml): every key
    but the execution-only ones; keys left unset (None, empty) are left out."""
    return {k: v for k, v in _plain(spec).items() if k not in EXECUTION_ONLY_SPEC_KEYS}


def _plain(value: Any) -> Any:
    """A spec (or a section, or a value in one) as plain YAML-able data; a range as its list."""
    if dataclasses.is_dataclass(value):
        fields = ((fl.name, getattr(value, fl.name)) for fl in dataclasses.fields(value))
        return {k: _plain(v) for k, v in fields if v is not None and v != "" and v != {} and v != []}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, range)):
        return [_plain(v) for v in value]
    return value


def same_study(a: dict, b: dict) -> bool:
    """Whether two spec dicts (as written to spec.yaml) describe the same runs: the origin, the
    description, the declared comparisons and margin (`compare:`, `equivalence_margin`: they decide
    the verdicts, so a study can be re-decided from its runs) and execution-only fields of the base
    (threads, progress, tracking) may differ."""
    def strip(d: dict) -> dict:
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


def describe_spec_keys(cls: type = StudySpec, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) of every spec key, each section's keys after it (`KEY.NAME.` where a
    section is a mapping's value), for `vitlab config keys --spec` and the docs' key reference."""
    hints = typing.get_type_hints(cls)
    leaves = {key: (key, default, doc) for key, default, doc in describe_keys(cls, prefix)}
    rows = []
    for fl in dataclasses.fields(cls):
        key = prefix + fl.name
        rows.append(leaves.get(key) or (key, "", fl.metadata.get("doc", "")))  # a section: no default of its own
        inner, suffix = _section(hints[fl.name])
        if inner is not None:
            rows += describe_spec_keys(inner, f"{key}{suffix}.")
    return rows


def _section(tp: Any) -> tuple[type | None, str]:
    """The dataclass a field holds as one of its forms (or as a mapping's values: suffix `.NAME`)."""
    forms = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    for form in forms:
        if dataclasses.is_dataclass(form):
            return form, ""
        if typing.get_origin(form) is dict:
            inner, _ = _section(typing.get_args(form)[1])
            if inner is not None:
                return inner, ".NAME"
    return None, ""
