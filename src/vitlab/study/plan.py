"""The runs of a study spec: its levels times its seeds, each a validated run config with a run ID.

`count_runs` sizes a study without expanding it (levels -- a grid's cells -- times seeds, an adaptive
study's `max`), `expand` refuses a study above `max_runs` (default 10,000) and otherwise turns it into
`RunSpec`s, each with a run ID that is a hash of its resolved config; `runs_for_level` gives one level's
runs at more seeds (adaptive seeding). Each level's model is built on the meta device at expansion, so
a level the architecture rejects fails before anything trains. The spec itself is `spec.py`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..identity import canonical_json, config_hash, identity_dict
from ..schema import build, to_dict
from ..errors import ConfigError, UserError, short_repr
from ..models import build_model
from .levels import combo_label, level_label, value_key
from .spec import StudySpec, _seed_list, get_dotted, load_spec, resolve, set_dotted, spec_error

#: Hex digits of a run ID (48 bits: a collision among a study's runs is negligible).
RUN_ID_HEX = 12
#: Runs a study may have unless the caller raises the limit (`--max-runs`).
DEFAULT_MAX_RUNS = 10_000


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


def run_id_of(config: RunConfig | dict, salt: dict | None = None) -> str:
    """The run ID: `config_hash` of the resolved config (execution-only fields left out). A search
    salts it with the trial number so that every trial has its own run directory."""
    cfg = config if isinstance(config, RunConfig) else build(RunConfig, config)
    if not salt:
        return config_hash(cfg, RUN_ID_HEX)
    text = canonical_json({"config": identity_dict(cfg), "salt": salt})
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_HEX]


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


def factor_levels(spec: StudySpec) -> Iterator[tuple[str, Iterable[tuple[Any, dict]]]]:
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
    for factor, levels in factor_levels(spec):
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


def seeds_per_level(spec: StudySpec, seeds: list[int] | None = None) -> int:
    """Runs per level: seeds (an adaptive study's max; `seeds` when given) times the combinations of
    the seed sources."""
    n = len(seeds) if seeds is not None else spec.adaptive.max if spec.adaptive else len(spec.seed_list)
    return n * math.prod(len(s) for s in spec.seed_sources.values())


def count_runs(spec: StudySpec | str | Path | dict, profile: str | None = None) -> int:
    """Runs `expand` would return (an adaptive study: at most), counted without expanding anything."""
    spec = _study_only(load_spec(spec))
    if profile is not None:
        spec = resolve(spec, profile)
    return level_count(spec) * seeds_per_level(spec)


def check_size(spec: StudySpec, max_runs: int | None = DEFAULT_MAX_RUNS, seeds: list[int] | None = None) -> int:
    """The run count (at `seeds` when given), or a one-line error naming it when it is above
    `max_runs` (None: no limit)."""
    levels, per = level_count(_study_only(spec)), seeds_per_level(spec, seeds)
    n = levels * per
    if max_runs is not None and n > max_runs:
        key = "seeds" if per > max_runs else spec.mode
        what = "cells" if spec.mode == "grid" else "levels"
        up_to = "up to " if spec.adaptive and seeds is None else ""
        raise spec_error(spec.source, key, f"the study has {up_to}{n:,} runs "
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
        raise spec_error(spec.source, where, str(e)) from None


def _seed_override(seeds: Iterable[int], source: str) -> list[int]:
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    try:
        if bad:
            raise ConfigError("seeds", f"must be integers, got {short_repr(bad[0])}")
        return _seed_list(seeds, "seeds")
    except ConfigError as e:
        raise spec_error(source, "", str(e)) from None


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


def iter_runs(spec: StudySpec, check_models: bool = True, seeds: Iterable[int] | None = None) -> Iterator[RunSpec]:
    """The runs of a resolved study, lazily, in expansion order, at the spec's seeds or `seeds` (no
    size check: see `expand`)."""
    checked: set[str] = set()
    for factor, levels in factor_levels(_study_only(spec)):
        for order, (level, varied) in enumerate(levels):
            yield from _level_runs(spec, factor, order, level, varied, spec.seed_list if seeds is None else seeds,
                                   check_models, checked)


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
        seeds = _seed_override(seeds, spec.source)
    check_size(spec, max_runs, seeds)
    return list(iter_runs(spec, check_models, seeds))


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
    raise spec_error(spec.source, factor, f"{short_repr(level)} is not a level of this study")


# ----------------------------------------------------------------------------------------------
# model check


def data_shape(cfg: RunConfig) -> tuple[int, int]:
    """(channels, image size) of a run's dataset, known without reading it."""
    return cfg.data.input_shape()


#: Classes used to construct a model for checking: the class count never makes an architecture invalid.
CHECK_CLASSES = 10


def check_model(cfg: RunConfig, source: str, where: str) -> None:
    """Construct the run's model on the meta device (no memory, no compute), so that a level the
    architecture rejects (heads not dividing a width, a knob the model lacks) fails at expansion."""
    in_chans, image_size = data_shape(cfg)
    try:
        with torch.device("meta"):
            build_model(cfg.model, CHECK_CLASSES, in_chans, image_size)
    except UserError as e:
        raise spec_error(source, where, str(e)) from None
    except (ValueError, AssertionError, RuntimeError, TypeError) as e:
        raise spec_error(source, where, f"model {cfg.model.name} cannot be built: {e}") from None
