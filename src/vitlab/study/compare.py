"""The declared comparisons of a study (`compare:` in its spec): the family one Holm adjustment covers.

A spec says what it is about, per factor of `vary:`:

    compare:
      model.level: {reference: true, pairs: [[C5, C1]], trend: true}

- `reference: true`: each level minus the reference level (what a factor without an entry gets);
- `pairs: [[a, b], ...]`: a minus b, paired by seed;
- `trend: true`: the linear trend over the levels in their listed order (per-seed least-squares
  slope per level step, `stats.trend_slopes`), tested like a paired difference.

The report, the adaptive seeding rule and findings/summarize.py decide every comparison of the family
with `stats.decide_family` (paired t-test, Holm over exactly these comparisons; TOST within the spec's
`equivalence_margin` on the primary metric). Comparisons travel in the study's meta as plain dicts
(`to_meta` / `from_meta`), so a report needs no spec to rebuild them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import stats
from ..errors import UserError
from . import plan as planmod
from . import spec as specmod
from .levels import level_label

PAIR, TREND = "pair", "trend"
"""The kinds of a declared comparison."""


@dataclass(frozen=True)
class Comparison:
    """One declared comparison, by level labels: `level` minus `other`, or a trend over `levels`."""

    kind: str
    level: str = ""
    other: str = ""
    levels: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.kind == TREND:
            return f"trend {self.levels[0]} → {self.levels[-1]} (per level step)"
        return f"{self.level} − {self.other}"

    def involves(self, label: str) -> bool:
        return label in self.levels if self.kind == TREND else label in (self.level, self.other)

    @property
    def members(self) -> tuple[str, ...]:
        return self.levels if self.kind == TREND else (self.level, self.other)

    def to_meta(self) -> dict:
        return {"kind": TREND, "levels": list(self.levels)} if self.kind == TREND else \
            {"kind": PAIR, "level": self.level, "other": self.other}

    @classmethod
    def from_meta(cls, d: Mapping) -> Comparison:
        """From the meta dict `to_meta` wrote (untrusted: a malformed entry is a UserError)."""
        if not isinstance(d, Mapping) or d.get("kind") not in (PAIR, TREND):
            raise UserError(f"meta compare: not a comparison: {str(d)[:80]}")
        if d["kind"] == TREND:
            levels = d.get("levels")
            if not isinstance(levels, list) or len(levels) < 2:
                raise UserError(f"meta compare: a trend needs >= 2 levels, got {str(levels)[:80]}")
            return cls(TREND, levels=tuple(str(v) for v in levels))
        return cls(PAIR, str(d.get("level")), str(d.get("other")))


def versus_reference(labels: Sequence[str], reference: str) -> list[Comparison]:
    """The default family: each level minus the reference."""
    return [Comparison(PAIR, lab, reference) for lab in labels if lab != reference]


def declared(study: specmod.StudySpec) -> dict[str, list[Comparison]]:
    """{factor: its declared comparisons} of a resolved study (a factor without a `compare:` entry,
    and a grid, get each level versus the reference)."""
    labels = planmod.factor_labels(study)
    refs = planmod.reference_labels(study)
    out: dict[str, list[Comparison]] = {}
    for factor, labs in labels.items():
        entry = study.compare.get(factor)
        if entry is None:
            out[factor] = versus_reference(labs, refs[factor])
            continue
        family = versus_reference(labs, refs[factor]) if entry.reference else []
        family += [Comparison(PAIR, level_label(a), level_label(b)) for a, b in entry.pairs or []]
        if entry.trend and len(labs) >= 2:
            family.append(Comparison(TREND, levels=tuple(labs)))
        out[factor] = list(dict.fromkeys(family))  # a pair declared twice is one comparison
    return out


def to_meta(family: Mapping[str, Sequence[Comparison]]) -> dict[str, list[dict]]:
    return {f: [c.to_meta() for c in cs] for f, cs in family.items()}


def from_meta(meta: Mapping, factor: str) -> list[Comparison] | None:
    """The declared comparisons of `factor` in a study's meta; None when the meta has none (a study
    run before `compare:` existed: the caller falls back to each level versus the reference)."""
    entry = (meta.get("compare") or {}).get(factor) if isinstance(meta.get("compare"), Mapping) else None
    if not isinstance(entry, list):
        return None
    return [Comparison.from_meta(d) for d in entry]


def differences(values: Mapping[str, Mapping], c: Comparison) -> np.ndarray:
    """The paired values a comparison is tested on, from {level label: {pair key: value}}: a pair's
    differences at the keys both levels have (finite at both), a trend's per-seed slopes over the
    keys every level has."""
    if c.kind == PAIR:
        ref, other = stats.pair_values(values.get(c.other, {}), values.get(c.level, {}))
        return other - ref
    per = [values.get(lab, {}) for lab in c.levels]
    keys = sorted(set.intersection(*(set(v) for v in per)), key=repr) if per else []
    rows = np.array([[float(v[k]) for v in per] for k in keys], dtype=float).reshape(len(keys), len(per))
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    return stats.trend_slopes(rows) if rows.size else np.array([])
