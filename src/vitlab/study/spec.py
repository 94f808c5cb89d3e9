"""Study specs: one YAML file that names a base run config and what to vary around it.

A spec is either a *study* (`vary:` one factor at a time, or `grid:` a cartesian product, each over
several seeds) or a *search* (`space:` searched by Optuna). `load_spec` checks the structure,
`resolve` applies a profile, `expand` turns a resolved spec into validated `RunSpec`s, each with a
run ID that is a hash of its resolved config. Every problem is a `UserError` of one line that names
the spec file and the key.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import (EXECUTION_ONLY, BoundedSafeLoader, build, canonical_json, check_key_path, config_hash,
                      identity_dict, read_yaml, RunConfig, suggest, to_dict, yaml_load)
from ..errors import UserError, one_line, short_repr

#: Hex digits of a run ID (48 bits: a collision among a study's runs is negligible).
RUN_ID_HEX = 12
#: Dotted keys that change how a run executes, not what it computes (not in the run ID, not factors).
EXECUTION_ONLY_KEYS = tuple(sorted(f"{section}.{key}" for section, key in EXECUTION_ONLY))
#: Seeds when a spec gives none.
DEFAULT_SEED_COUNT = 3
#: Columns a study tabulates when `metrics:` is not given.
DEFAULT_METRICS = ("test_top1", "test_top5", "val_top1", "test_f1_macro", "test_ece", "train_loss",
                   "params", "flops", "train_time_s")
#: Names `metrics:` and `objective:` may use: the numeric fields of RUN/summary.json.
SUMMARY_METRICS = (
    "test_top1", "test_top5", "test_loss", "test_precision_macro", "test_recall_macro", "test_f1_macro",
    "test_ece", "val_top1", "val_top5", "val_loss", "val_precision_macro", "val_recall_macro",
    "val_f1_macro", "val_ece", "train_loss", "train_top1", "params", "flops", "train_time_s",
    "throughput_img_s", "epochs_run", "best_epoch",
)
#: Validation metrics an Optuna search may optimise (test metrics must never select a configuration).
OBJECTIVE_METRICS = ("val_top1", "val_top5", "val_loss", "val_f1_macro", "val_precision_macro",
                     "val_recall_macro", "val_ece")
#: Objectives where smaller is better.
MINIMIZED_METRICS = ("val_loss", "val_ece")

SPEC_KEYS = ("name", "description", "base", "base_config", "vary", "grid", "seeds", "metrics",
             "reference", "profiles", "space", "objective", "pruner", "sampler_seed", "origin")
PROFILE_KEYS = ("overrides", "seeds", "vary", "grid", "space")
PARAM_KEYS = ("low", "high", "log", "step", "choices")
PRUNER_KEYS = ("name", "startup_trials", "warmup_epochs")
OBJECTIVE_KEYS = ("metric", "direction")


# ----------------------------------------------------------------------------------------------
# the spec


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


@dataclass
class Profile:
    """A named variant of a spec (e.g. `quick` on a CPU): base overrides, seeds, level subsets."""

    name: str
    overrides: dict = field(default_factory=dict)
    seeds: list[int] | None = None
    levels: dict[str, list] = field(default_factory=dict)  # factor key -> subset of its levels
    space: dict[str, SearchParam] = field(default_factory=dict)  # search: replaced dimensions


@dataclass
class StudySpec:
    """A checked spec. `base` is a nested config dict (not yet built); `profiles` are not applied."""

    name: str
    source: str  # the spec file, for error messages
    kind: str  # "study" | "search"
    base: dict
    mode: str | None = None  # "vary" | "grid" (study), None (search)
    factors: dict[str, list] = field(default_factory=dict)  # dotted key -> levels
    seeds: list[int] = field(default_factory=lambda: list(range(DEFAULT_SEED_COUNT)))
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    reference: dict[str, Any] = field(default_factory=dict)  # dotted key -> reference level
    profiles: dict[str, Profile] = field(default_factory=dict)
    space: dict[str, SearchParam] = field(default_factory=dict)
    objective: str = "val_top1"
    direction: str = "maximize"
    pruner: dict = field(default_factory=lambda: {"name": "median", "startup_trials": 5, "warmup_epochs": 1})
    sampler_seed: int = 0
    description: str = ""
    profile: str | None = None  # the profile applied by `resolve`, if any


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


def _one_line(text: str) -> str:
    return one_line(text, 500)


class _Where:
    """Builds one-line errors `SPEC: KEY: problem`."""

    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, problem: str) -> UserError:
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        return UserError(_one_line(where + problem))


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
    w = _Where(source)
    if not isinstance(data, dict):
        raise w.error("", "top level must be a mapping")
    for key in data:
        if key not in SPEC_KEYS:
            raise w.error(str(key), "unknown key" + suggest(str(key), SPEC_KEYS))

    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise w.error("name", f"must be a non-empty string without '/', got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise w.error("description", "must be a string")

    base = _read_base(data, w, root)

    modes = [k for k in ("vary", "grid", "space") if data.get(k) is not None]
    if len(modes) != 1:
        what = " and ".join(modes) if modes else "none of them"
        raise w.error("vary", f"a spec needs exactly one of vary, grid (study) or space (search); got {what}")
    mode = modes[0]
    kind = "search" if mode == "space" else "study"

    spec = StudySpec(name=name, source=source, kind=kind, base=base, description=description)
    if kind == "study":
        spec.mode = mode
        spec.factors = _read_factors(data[mode], mode, w)
        if "seeds" in data:
            spec.seeds = _read_seeds(data["seeds"], "seeds", w)
        spec.reference = _read_reference(data.get("reference"), spec, w)
        for key in ("objective", "pruner", "sampler_seed"):
            if key in data:
                raise w.error(key, "only used in search mode (with space:)")
    else:
        spec.space = _read_space(data["space"], "space", w)
        for key in ("seeds", "reference"):
            if key in data:
                raise w.error(key, "not used in search mode: each trial runs once with base seed")
        spec.objective, spec.direction = _read_objective(data.get("objective"), w)
        spec.pruner = _read_pruner(data.get("pruner"), spec.pruner, w)
        seed = data.get("sampler_seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise w.error("sampler_seed", f"must be an integer >= 0, got {seed!r}")
        spec.sampler_seed = seed

    if "metrics" in data:
        spec.metrics = _read_metrics(data["metrics"], w)
    spec.profiles = _read_profiles(data.get("profiles"), spec, w)
    origin = data.get("origin")
    if origin is not None:
        if not isinstance(origin, dict):
            raise w.error("origin", "must be a mapping (written by vitlab in a study's spec.yaml)")
        spec.profile = origin.get("profile")
    return spec


def _read_base(data: dict, w: _Where, root: Path) -> dict:
    base: dict = {}
    if data.get("base_config") is not None:
        ref = data["base_config"]
        if not isinstance(ref, str):
            raise w.error("base_config", f"must be a path to a run config YAML, got {ref!r}")
        path = Path(ref) if Path(ref).is_absolute() else root / ref
        try:
            base = nest(read_yaml(path))
        except UserError as e:
            raise w.error("base_config", str(e)) from None
    inline = data.get("base")
    if inline is not None:
        if not isinstance(inline, dict):
            raise w.error("base", f"must be a mapping of run config keys, got {type(inline).__name__}")
        base = merge(base, nest(inline))
    try:
        build(RunConfig, base)
    except UserError as e:
        raise w.error("base", str(e)) from None
    return base


def _check_key(key: Any, where: str, w: _Where) -> str:
    if not isinstance(key, str) or not key:
        raise w.error(where, f"factor names are dotted config keys, got {key!r}")
    try:
        check_key_path(RunConfig, key.split("."))
    except UserError as e:
        raise w.error(where, str(e)) from None
    if dataclasses.is_dataclass(field_type(key)):
        raise w.error(f"{where}.{key}", "is a config section, not a field")
    if key in EXECUTION_ONLY_KEYS:
        raise w.error(f"{where}.{key}", "does not change what a run computes, so it cannot be a factor")
    return key


def _read_levels(levels: Any, where: str, w: _Where) -> list:
    if not isinstance(levels, list):
        raise w.error(where, f"must be a list of levels, got {levels!r}")
    if not levels:
        raise w.error(where, "needs at least one level")
    seen = set()
    for v in levels:
        if isinstance(v, dict):
            raise w.error(where, f"a level must be a value or a list, got a mapping {v!r}")
        c = value_key(v)
        if c in seen:
            raise w.error(where, f"level {level_label(v)} is listed twice")
        seen.add(c)
    return copy.deepcopy(levels)


def _read_factors(block: Any, mode: str, w: _Where) -> dict[str, list]:
    if not isinstance(block, dict) or not block:
        raise w.error(mode, "must be a non-empty mapping of dotted config key -> list of levels")
    factors: dict[str, list] = {}
    for key, levels in block.items():
        key = _check_key(key, mode, w)
        factors[key] = _read_levels(levels, f"{mode}.{key}", w)
    overlap = _overlapping(list(factors))
    if overlap:
        raise w.error(mode, f"factors {overlap[0]} and {overlap[1]} overlap (one contains the other)")
    return factors


def _overlapping(keys: list[str]):
    for a, b in itertools.permutations(keys, 2):
        if b.startswith(a + "."):
            return a, b
    return None


def _read_seeds(value: Any, where: str, w: _Where) -> list[int]:
    if isinstance(value, bool):
        raise w.error(where, f"must be a count >= 1 or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise w.error(where, f"must be a count >= 1 or a list of seeds, got {value}")
        return list(range(value))
    if isinstance(value, list) and value:
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
            raise w.error(where, f"seeds must be integers >= 0, got {value!r}")
        if len(set(value)) != len(value):
            raise w.error(where, f"seeds must be distinct, got {value!r}")
        return list(value)
    raise w.error(where, f"must be a count >= 1 or a non-empty list of seeds, got {value!r}")


def _read_metrics(value: Any, w: _Where) -> list[str]:
    if not isinstance(value, list) or not value:
        raise w.error("metrics", "must be a non-empty list of metric names")
    for m in value:
        if m not in SUMMARY_METRICS:
            raise w.error("metrics", f"unknown metric {m!r}" + suggest(str(m), SUMMARY_METRICS))
    if len(set(value)) != len(value):
        raise w.error("metrics", "a metric is listed twice")
    return list(value)


def _read_reference(value: Any, spec: StudySpec, w: _Where) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise w.error("reference", "must be a mapping factor -> reference level")
    ref = {}
    for key, level in value.items():
        if key not in spec.factors:
            raise w.error(f"reference.{key}", "is not a factor of this spec" + suggest(str(key), spec.factors))
        if value_key(level) not in {value_key(v) for v in spec.factors[key]}:
            shown = ", ".join(level_label(v) for v in spec.factors[key])
            raise w.error(f"reference.{key}", f"{level_label(level)} is not one of its levels ({shown})")
        ref[key] = level
    return ref


def _read_space(block: Any, where: str, w: _Where, partial: bool = False) -> dict[str, SearchParam]:
    if not isinstance(block, dict) or (not block and not partial):
        raise w.error(where, "must be a non-empty mapping of dotted config key -> {low, high[, log]} or {choices}")
    space = {}
    for key, p in block.items():
        key = _check_key(key, where, w)
        at = f"{where}.{key}"
        if not isinstance(p, dict):
            raise w.error(at, f"must be a mapping {{low, high[, log, step]}} or {{choices: [...]}}, got {p!r}")
        for k in p:
            if k not in PARAM_KEYS:
                raise w.error(f"{at}.{k}", "unknown key" + suggest(str(k), PARAM_KEYS))
        if "choices" in p:
            if set(p) != {"choices"}:
                raise w.error(at, "choices cannot be combined with low/high/log/step")
            space[key] = SearchParam(key, "categorical", choices=_read_levels(p["choices"], f"{at}.choices", w))
            continue
        tp = field_type(key)
        if tp not in (int, float):
            raise w.error(at, f"a {getattr(tp, '__name__', tp)} field needs choices: [...], not low/high")
        if "low" not in p or "high" not in p:
            raise w.error(at, "needs low and high (or choices)")
        low, high, log, step = p["low"], p["high"], p.get("log", False), p.get("step")
        low, high = _number(low, tp, f"{at}.low", w), _number(high, tp, f"{at}.high", w)
        if step is not None:
            step = _number(step, tp, f"{at}.step", w)
            if step <= 0:
                raise w.error(f"{at}.step", f"must be > 0, got {step}")
        if not low < high:
            raise w.error(at, f"low must be < high, got low={low}, high={high}")
        if not isinstance(log, bool):
            raise w.error(f"{at}.log", f"must be true or false, got {log!r}")
        if log and low <= 0:
            raise w.error(at, f"log scale needs low > 0, got {low}")
        if log and step is not None:
            raise w.error(at, "log and step cannot be combined")
        space[key] = SearchParam(key, "int" if tp is int else "float", low, high, log, step)
    overlap = _overlapping(list(space))
    if overlap:
        raise w.error(where, f"dimensions {overlap[0]} and {overlap[1]} overlap")
    return space


def _number(v: Any, tp: type, where: str, w: _Where):
    if isinstance(v, str):
        try:
            v = float(v)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise w.error(where, f"must be a number, got {v!r}")
    if tp is int:
        if float(v) != int(v):
            raise w.error(where, f"must be an integer, got {v!r}")
        return int(v)
    return float(v)


def _read_objective(value: Any, w: _Where) -> tuple[str, str]:
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"metric": value}
    if not isinstance(value, dict):
        raise w.error("objective", f"must be a metric name or {{metric, direction}}, got {value!r}")
    for k in value:
        if k not in OBJECTIVE_KEYS:
            raise w.error(f"objective.{k}", "unknown key" + suggest(str(k), OBJECTIVE_KEYS))
    metric = value.get("metric", "val_top1")
    if metric not in OBJECTIVE_METRICS:
        why = " (a search must never select on the test set)" if str(metric).startswith("test_") else ""
        raise w.error("objective.metric", f"must be one of {', '.join(OBJECTIVE_METRICS)}; got {metric!r}{why}"
                      + suggest(str(metric), OBJECTIVE_METRICS))
    direction = value.get("direction", "minimize" if metric in MINIMIZED_METRICS else "maximize")
    if direction not in ("minimize", "maximize"):
        raise w.error("objective.direction", f"must be minimize or maximize, got {direction!r}")
    return metric, direction


def _read_pruner(value: Any, default: dict, w: _Where) -> dict:
    out = dict(default)
    if value is None:
        return out
    if value is False or value == "none":
        return {**out, "name": "none"}
    if not isinstance(value, dict):
        raise w.error("pruner", f"must be a mapping {{name, startup_trials, warmup_epochs}} or none, got {value!r}")
    for k, v in value.items():
        if k not in PRUNER_KEYS:
            raise w.error(f"pruner.{k}", "unknown key" + suggest(str(k), PRUNER_KEYS))
        if k == "name":
            if v not in ("median", "none"):
                raise w.error("pruner.name", f"must be median or none, got {v!r}")
        elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise w.error(f"pruner.{k}", f"must be an integer >= 0, got {v!r}")
        out[k] = v
    return out


def _read_profiles(block: Any, spec: StudySpec, w: _Where) -> dict[str, Profile]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise w.error("profiles", "must be a mapping of profile name -> {overrides, seeds, vary/grid/space}")
    profiles = {}
    for name, body in block.items():
        at = f"profiles.{name}"
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise w.error(at, f"must be a mapping with keys {', '.join(PROFILE_KEYS)}")
        for k in body:
            if k not in PROFILE_KEYS:
                raise w.error(f"{at}.{k}", "unknown key" + suggest(str(k), PROFILE_KEYS))
        prof = Profile(name=str(name))
        over = body.get("overrides") or {}
        if not isinstance(over, dict):
            raise w.error(f"{at}.overrides", "must be a mapping of config keys (dotted or nested)")
        prof.overrides = nest(over)
        try:
            build(RunConfig, merge(spec.base, prof.overrides))
        except UserError as e:
            raise w.error(f"{at}.overrides", str(e)) from None
        if body.get("seeds") is not None:
            if spec.kind == "search":
                raise w.error(f"{at}.seeds", "not used in search mode")
            prof.seeds = _read_seeds(body["seeds"], f"{at}.seeds", w)
        for mode in ("vary", "grid"):
            if body.get(mode) is None:
                continue
            if mode != spec.mode:
                raise w.error(f"{at}.{mode}", f"the spec uses {spec.mode or 'space'}:, not {mode}:")
            sub = body[mode]
            if not isinstance(sub, dict):
                raise w.error(f"{at}.{mode}", "must be a mapping factor -> subset of its levels")
            for key, levels in sub.items():
                if key not in spec.factors:
                    raise w.error(f"{at}.{mode}.{key}", "is not a factor of this spec" + suggest(str(key), spec.factors))
                levels = _read_levels(levels, f"{at}.{mode}.{key}", w)
                known = {value_key(v) for v in spec.factors[key]}
                for v in levels:
                    if value_key(v) not in known:
                        raise w.error(f"{at}.{mode}.{key}", f"{level_label(v)} is not a level of the spec's {mode}")
                prof.levels[key] = levels
        if body.get("space") is not None:
            if spec.kind != "search":
                raise w.error(f"{at}.space", "only used in search mode")
            prof.space = _read_space(body["space"], f"{at}.space", w, partial=True)
        profiles[prof.name] = prof
    return profiles


# ----------------------------------------------------------------------------------------------
# profiles, expansion


def resolve(spec: StudySpec, profile: str | None = None) -> StudySpec:
    """The spec with `profile` applied: its overrides merged into base, its seeds and level subsets.

    The result carries no profiles (only the name of the one applied) and a fully resolved base.
    """
    w = _Where(spec.source)
    out = copy.deepcopy(spec)
    if profile is not None:
        if profile not in spec.profiles:
            known = ", ".join(spec.profiles) or "none defined"
            raise w.error("profiles", f"unknown profile {profile!r} (profiles: {known})" + suggest(profile, spec.profiles))
        prof = spec.profiles[profile]
        out.base = merge(spec.base, prof.overrides)
        if prof.seeds is not None:
            out.seeds = list(prof.seeds)
        for key, levels in prof.levels.items():
            out.factors[key] = list(levels)
            if key in out.reference and value_key(out.reference[key]) not in {value_key(v) for v in levels}:
                del out.reference[key]  # the reference level is not in this profile: fall back to the default
        out.space.update(copy.deepcopy(prof.space))
        out.profile = profile
    out.profiles = {}
    try:
        out.base = to_dict(build(RunConfig, out.base))
    except UserError as e:
        raise w.error("base", str(e)) from None
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


def _factor_levels(spec: StudySpec) -> list[tuple[str, list]]:
    """[(factor name, [(level, varied dict), ...])] in spec order."""
    if spec.mode == "vary":
        return [(key, [(v, {key: v}) for v in levels]) for key, levels in spec.factors.items()]
    keys = list(spec.factors)
    cells = []
    for combo in itertools.product(*spec.factors.values()):
        cell = dict(zip(keys, combo))
        cells.append((cell, dict(cell)))
    return [("grid", cells)]


def factor_labels(spec: StudySpec) -> dict[str, list[str]]:
    """{factor: [level_label, ...]} in level order (what the index's meta lists)."""
    out = {}
    for factor, levels in _factor_levels(spec):
        out[factor] = [combo_label(lv) if factor == "grid" else level_label(lv) for lv, _ in levels]
    return out


def reference_labels(spec: StudySpec) -> dict[str, str]:
    return {f: combo_label(v) if f == "grid" else level_label(v) for f, v in reference_levels(spec).items()}


def build_run_config(spec: StudySpec, varied: dict, seed: int | None, where: str) -> RunConfig:
    """Base + varied values (+ seed), built and checked; errors name the spec and the level."""
    w = _Where(spec.source)
    tree = copy.deepcopy(spec.base)
    for key, value in varied.items():
        set_dotted(tree, key, value)
    if seed is not None:
        tree["seed"] = seed
    try:
        return build(RunConfig, tree)
    except UserError as e:
        raise w.error(where, str(e)) from None


def expand(spec: StudySpec | str | Path | dict, profile: str | None = None, check_models: bool = True) -> list[RunSpec]:
    """Every run of a study (one per factor, level and seed), each config validated.

    A run shared between factors (a `vary` level equal to the base value) appears once per factor
    with the same run ID; the runner trains it once. Models are checked by construction on the meta
    device, so a level the architecture rejects (heads not dividing the width) fails here.
    """
    spec = load_spec(spec)
    if spec.kind != "study":
        raise UserError(f"{spec.source}: space: this is a search spec; run it with `vitlab search`")
    spec = resolve(spec, profile)
    runs = []
    checked: set[str] = set()
    for factor, levels in _factor_levels(spec):
        for order, (level, varied) in enumerate(levels):
            label = combo_label(level) if factor == "grid" else level_label(level)
            where = f"{spec.mode}.{factor}={label}" if factor != "grid" else f"grid[{label}]"
            cfg0 = build_run_config(spec, varied, None, where)
            if check_models:
                key = canonical_json([to_dict(cfg0.model), data_shape(cfg0)])
                if key not in checked:
                    check_model(cfg0, spec.source, where)
                    checked.add(key)
            for seed in spec.seeds:
                cfg = dataclasses.replace(cfg0, seed=seed)
                runs.append(RunSpec(run_id=run_id_of(cfg), factor=factor, level=copy.deepcopy(level),
                                    level_label=label, level_order=order, seed=seed, config=cfg,
                                    varied=copy.deepcopy(varied)))
    return runs


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
        raise _Where(source).error(where, str(e)) from None
    except (ValueError, AssertionError, RuntimeError, TypeError) as e:
        raise _Where(source).error(where, f"model {cfg.model.name} cannot be built: {e}") from None


# ----------------------------------------------------------------------------------------------
# serialisation


def spec_to_dict(spec: StudySpec) -> dict:
    """A resolved spec as a dict that `parse_spec` reads back to the same runs (DIR/spec.yaml)."""
    d: dict = {"name": spec.name}
    if spec.description:
        d["description"] = spec.description
    d["base"] = copy.deepcopy(spec.base)
    if spec.kind == "study":
        d[spec.mode] = copy.deepcopy(spec.factors)
        d["seeds"] = list(spec.seeds)
        if spec.reference:
            d["reference"] = copy.deepcopy(spec.reference)
    else:
        d["space"] = {k: p.to_dict() for k, p in spec.space.items()}
        d["objective"] = {"metric": spec.objective, "direction": spec.direction}
        d["pruner"] = dict(spec.pruner)
        d["sampler_seed"] = spec.sampler_seed
    d["metrics"] = list(spec.metrics)
    d["origin"] = {"file": spec.source, "profile": spec.profile}
    return d


def same_study(a: dict, b: dict) -> bool:
    """Whether two spec dicts (as written to spec.yaml) describe the same runs (origin ignored)."""
    strip = lambda d: {k: v for k, v in d.items() if k not in ("origin", "description")}  # noqa: E731
    return canonical_json(strip(a)) == canonical_json(strip(b))
