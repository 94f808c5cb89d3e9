"""One time calibration per configuration of a study: every seed of a level trains the same steps.

A `train.budget_minutes` run on its own times a few steps at its start and fixes its step count from
that speed; in a study the speed a run measures depends on what the other workers are doing at that
moment, so seeds of one level got up to 2× different step counts (issue 16). Here the coordinator
calibrates each configuration once — its resolved config without the seeds, so every seed, rerun,
resumed and re-dispatched run of it shares the result — in its own process, before any worker starts
(or, for a configuration that only appears later, e.g. a seed added by adaptive seeding, when it first
runs), with the CPU threads a worker will give the run. The count is the step count a run would fix
for itself on a quiet machine (`train.budget.plan_budget`), less nothing for the calibration (the run
does not repeat it); runs then train beside each other, so on a shared CPU their time exceeds the
budget by the contention between workers, but never differs between seeds.

The results live in STUDY/calibration.json (written atomically after each configuration): {config key:
{"steps": N, "budget": the calibration record}}. They reach a run as `run_training(plan=...)`, which
is not part of its config, so run IDs do not change. A FLOP budget needs none of this: its count is
the same on any machine (train/flops.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..config import RunConfig, SEED_SOURCES
from ..identity import canonical_json, identity_dict
from ..errors import UserError
from ..io import atomic_write_json, read_json_object
from ..training.budget import plan_budget
from ..training.loop import Trainer

CALIBRATION_FILE = "calibration.json"
"""The study's time calibrations, beside its spec.yaml."""
SCRATCH_DIR = ".calibration-scratch"
"""Where the calibrating trainer writes (one checkpoint, deleted at once), inside the study directory."""
KEY_HEX = 16
"""Hex digits of a configuration key (a SHA-256 prefix, like run IDs)."""


def config_key(cfg: RunConfig) -> str:
    """The identity of a configuration without its seeds: what the seeds of one level share."""
    d = identity_dict(cfg)
    for name in ("seed", *SEED_SOURCES):
        d.pop(name, None)
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()[:KEY_HEX]


def _check_entry(path: Path, key: str, entry) -> dict:
    where = f"{path}: entry {key!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("budget"), dict):
        raise UserError(f"{where}: must be a mapping with steps and budget; delete the file to recalibrate")
    steps = entry.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"{where}: steps must be an integer >= 1, got {steps!r}; delete the file to recalibrate")
    return {"steps": steps, "budget": entry["budget"]}


@contextlib.contextmanager
def _isolated_process_state() -> Iterator[None]:
    """Keep the coordinator's thread count and random states as they were (a Trainer sets both)."""
    threads, py_state, np_state = torch.get_num_threads(), random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)


def calibrate_config(cfg: RunConfig, scratch: Path, threads: int | None) -> dict:
    """{"steps": N, "budget": record} of a train.budget_minutes config, measured in this process."""
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False,
                                                             threads=cfg.train.threads or threads))
    with _isolated_process_state():
        trainer = Trainer(cfg, scratch, progress=False)
        steps, record = plan_budget(trainer, cfg.train.budget_minutes, cfg.train.budget_clock,
                                    charge_calibration=False)
    return {"steps": steps, "budget": {**record, "calibrated_by": "study", "threads": cfg.train.threads}}


class StudyCalibration:
    """The time calibrations of one study directory (see the module doc)."""

    def __init__(self, study_dir: Path, threads: int | None, note: Callable[[str], None] = lambda text: None):
        self.dir, self.threads, self.note = Path(study_dir), threads, note
        self.path = self.dir / CALIBRATION_FILE
        self.entries: dict[str, dict] = {}
        self.errors: dict[str, str] = {}  # this session's refusals (a budget that fits no step): not stored
        if self.path.exists():
            raw = read_json_object(self.path)
            if raw is None:
                raise UserError(f"{self.path}: not a JSON object; delete it to recalibrate")
            self.entries = {k: _check_entry(self.path, k, v) for k, v in raw.items()}

    def plan(self, cfg: RunConfig) -> dict | None:
        """What a run of `cfg` trains: {"steps", "budget"} (calibrated now if no seed was before),
        {"error": why} when the budget fits no step, or None without a time budget."""
        if cfg.train.budget_minutes is None:
            return None
        key = config_key(cfg)
        if key not in self.entries and key not in self.errors:
            self._calibrate(key, cfg)
        return self.entries[key] if key in self.entries else {"error": self.errors[key]}

    def prepare(self, configs: Iterable[RunConfig]) -> None:
        """Calibrate every time-budgeted configuration among `configs` that has no calibration yet."""
        for cfg in configs:
            self.plan(cfg)

    def _calibrate(self, key: str, cfg: RunConfig) -> None:
        scratch = self.dir / SCRATCH_DIR
        shutil.rmtree(scratch, ignore_errors=True)  # left by a killed coordinator
        self.note(f"calibrating {key} ({cfg.model.name}, {cfg.train.budget_minutes:g} {cfg.train.budget_clock} "
                  f"minutes) for all its seeds")
        try:
            self.entries[key] = calibrate_config(cfg, scratch, self.threads)
        except UserError as e:
            self.errors[key] = " ".join(str(e).split())
            return
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        atomic_write_json(self.path, self.entries)
        self.note(f"calibrated {key}: {self.entries[key]['steps']} steps")


__all__ = ["CALIBRATION_FILE", "StudyCalibration", "config_key", "calibrate_config"]
