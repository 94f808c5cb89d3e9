"""The `robustness` section: top-1 accuracy under the 15 corruptions × 5 severities, and the corruption
errors of Hendrycks & Dietterich (2019) against a reference model.

The sweep is resumable: the section is saved after every corruption (`complete: false` until all are
done) and a rerun with the same images, seed and batch size continues where it stopped.

Corruption error (Hendrycks & Dietterich 2019, §3): with E_{s,c} the top-1 error at severity s of
corruption c,
    CE_c = Σ_s E_{s,c}(f) / Σ_s E_{s,c}(ref)                                       mCE = mean_c CE_c
    relative CE_c = Σ_s (E_{s,c}(f) − E_clean(f)) / Σ_s (E_{s,c}(ref) − E_clean(ref))   relative mCE = mean_c
The paper's reference is AlexNet; within a study it is the reference level. Only faithful corruptions
enter the means.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor

from ..data.splits import stratified_split
from .corruptions import CORRUPTIONS, SEVERITIES, UNFAITHFUL_NOTE, corrupt, ordered
from .options import CIFAR_C_IMAGES


def corruption_subset(labels: Tensor, k: int | None, seed: int) -> Tensor:
    """Indices of the test images the sweep corrupts: all (at most CIFAR_C_IMAGES), or a stratified,
    seeded subset of k (the same for every run of a study)."""
    n = len(labels)
    k = min(n, CIFAR_C_IMAGES if k is None else k)
    if k == n:
        return torch.arange(n)
    chosen, _ = stratified_split(labels.cpu(), k, torch.Generator().manual_seed(seed))
    return chosen.sort().values


def stream_seed(seed: int, corruption: int, severity: int, batch: int) -> int:
    """Seed of the random stream of one batch of one corruption at one severity."""
    return ((seed * 1009 + corruption) * 10 + severity) * 1_000_003 + batch


def top1(logits: Tensor, y: Tensor) -> int:
    return int((logits.argmax(dim=-1) == y).sum())


def _identity(opts, n: int) -> dict:
    return {"images": n, "seed": opts.seed, "batch": opts.corruption_batch}


def compute_robustness(run, opts, previous: dict | None = None,
                       save: Callable[[dict], None] | None = None,
                       progress: Callable[[str], None] | None = None) -> dict:
    """Accuracy on the clean subset and under every corruption and severity. `previous`: a partial
    section from an interrupted sweep with the same settings, continued; `save(section)` is called
    after every corruption."""
    idx = corruption_subset(run.data.test_y, opts.corruption_images, opts.seed)
    x, y = run.data.test_x[idx], run.data.test_y[idx]
    n, bs = len(y), opts.corruption_batch
    ident = _identity(opts, n)
    resume = previous is not None and all(previous.get(k) == v for k, v in ident.items())
    sec = dict(previous) if resume else dict(ident, clean_top1=top1(run.logits(x), y) / n, corruptions={},
                                             time_s=0.0)
    sec["corruptions"] = dict(sec.get("corruptions") or {})
    for ci, (name, c) in enumerate(CORRUPTIONS.items()):
        if name in sec["corruptions"]:
            continue
        t0 = time.perf_counter()
        accs = []
        for s in SEVERITIES:
            correct = 0
            for b, i in enumerate(range(0, n, bs)):
                gen = torch.Generator(device=x.device).manual_seed(stream_seed(opts.seed, ci, s, b))
                xc = corrupt(x[i:i + bs], name, s, gen)
                correct += top1(run.logits(xc), y[i:i + bs])
            accs.append(correct / n)
        sec["corruptions"][name] = accs
        sec["time_s"] = sec.get("time_s", 0.0) + time.perf_counter() - t0
        sec.update(summarize(sec["corruptions"], sec["clean_top1"]))
        sec["complete"] = len(sec["corruptions"]) == len(CORRUPTIONS)
        if progress is not None:
            progress(f"robustness: {name} {' '.join(f'{a:.3f}' for a in accs)}")
        if save is not None:
            save(sec)
    sec["corruptions"] = {k: sec["corruptions"][k] for k in ordered(sec["corruptions"])}
    sec.update(summarize(sec["corruptions"], sec["clean_top1"]))
    sec["complete"] = True
    return sec


def summarize(corruptions: dict[str, list[float]], clean: float) -> dict:
    """Means over the faithful corruptions: overall, per severity, per category; the list of what was
    left out and why."""
    faithful = {k: v for k, v in corruptions.items() if CORRUPTIONS[k].faithful}
    cats: dict[str, list[float]] = {}
    for k, v in faithful.items():
        cats.setdefault(CORRUPTIONS[k].category, []).extend(v)
    mean = _mean([a for v in faithful.values() for a in v])
    return {
        "mean_top1": mean,
        "mean_top1_all": _mean([a for v in corruptions.values() for a in v]),
        "severity_top1": [_mean([v[s - 1] for v in faithful.values()]) for s in SEVERITIES],
        "category_top1": {k: _mean(v) for k, v in cats.items()},
        "categories": {k: CORRUPTIONS[k].category for k in corruptions},
        "excluded_from_mean": [k for k in corruptions if not CORRUPTIONS[k].faithful],
        "note": UNFAITHFUL_NOTE,
        "relative_drop": (clean - mean) / clean if mean is not None and clean else None,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------- CE / mCE


def corruption_error(errors: list[float], reference_errors: list[float]) -> float:
    """CE_c = Σ_s E_s(f) / Σ_s E_s(ref) (Hendrycks & Dietterich 2019, eq. 1 of §3)."""
    den = sum(reference_errors)
    return sum(errors) / den if den > 0 else math.nan


RELATIVE_MIN_DEGRADATION = 0.05
"""Relative CE_c divides by the reference's summed degradation Σ_s (E_s(ref) − E_clean(ref)); a
corruption that degrades the reference by less than this (5 points of error summed over the 5
severities, 1 point each on average) makes the ratio explode or flip sign (measured: relative mCE
intervals of [−178, 423]% on Fashion-MNIST, where some corruptions barely hurt an under-trained
reference). Such corruptions are left out of relative mCE, and the report says how many."""


def relative_corruption_error(errors: list[float], clean_error: float, reference_errors: list[float],
                              reference_clean_error: float) -> float:
    """Relative CE_c = Σ_s (E_s(f) − E_clean(f)) / Σ_s (E_s(ref) − E_clean(ref)) (ibid.); nan when
    the reference degrades by less than RELATIVE_MIN_DEGRADATION (the ratio is then noise)."""
    den = sum(e - reference_clean_error for e in reference_errors)
    return sum(e - clean_error for e in errors) / den if den >= RELATIVE_MIN_DEGRADATION else math.nan


def weak_reference_corruptions(reference: dict) -> list[str]:
    """The faithful corruptions a reference profile is degraded by less than RELATIVE_MIN_DEGRADATION
    (left out of relative mCE)."""
    return sorted(name for name, errs in reference["errors"].items() if CORRUPTIONS[name].faithful
                  and sum(e - reference["clean_error"] for e in errs) < RELATIVE_MIN_DEGRADATION)


def mce(section: dict, reference: dict, relative: bool = False) -> float:
    """mCE (or relative mCE) of a robustness section against a reference one: the mean over the
    faithful corruptions both contain of CE_c (relative CE_c). `reference` holds per-corruption
    error lists and a clean error (e.g. a reference level's means over seeds, see `error_profile`)."""
    ours = error_profile(section)
    values = []
    for name, errs in ours["errors"].items():
        ref = reference["errors"].get(name)
        if ref is None or not CORRUPTIONS[name].faithful:
            continue
        values.append(relative_corruption_error(errs, ours["clean_error"], ref, reference["clean_error"])
                      if relative else corruption_error(errs, ref))
    values = [v for v in values if math.isfinite(v)]  # relative: corruptions that barely hurt the reference
    return sum(values) / len(values) if values else math.nan


def error_profile(section: dict) -> dict:
    """{"errors": {corruption: [E_1..E_5]}, "clean_error": E_clean} of one robustness section."""
    return {"errors": {k: [1.0 - a for a in v] for k, v in section["corruptions"].items()},
            "clean_error": 1.0 - section["clean_top1"]}


def mean_profile(profiles: list[dict]) -> dict:
    """The element-wise mean of several error profiles (a reference level over its seeds)."""
    names = set.intersection(*(set(p["errors"]) for p in profiles)) if profiles else set()
    return {"errors": {k: [sum(p["errors"][k][i] for p in profiles) / len(profiles) for i in range(len(SEVERITIES))]
                       for k in names},
            "clean_error": sum(p["clean_error"] for p in profiles) / len(profiles) if profiles else math.nan}
