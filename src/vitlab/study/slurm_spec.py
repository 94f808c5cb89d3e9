"""`slurm:` of a study spec (and `--slurm KEY=VALUE`): what each task of a `--backend slurm` study asks for.

Execution-only, like `--workers`: it never changes a run ID, and spec.yaml does not record it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, asdict
from typing import Annotated, Optional

from ..schema import build, knob, parse_value, require
from ..errors import ConfigError, UserError

#: Default minutes per task (sbatch --time).
DEFAULT_TIME_MIN = 60
#: Default seconds before the time limit at which SLURM warns a task (submitit's USR2): the run stops,
#: keeping its last epoch checkpoint, and the task is requeued.
DEFAULT_SIGNAL_DELAY_S = 120
#: Default times a task may be requeued after reaching its time limit (submitit's max_num_timeout).
DEFAULT_MAX_REQUEUES = 3
#: Executors: a real SLURM cluster, or submitit's local executor (same code path, no SLURM; tests).
EXECUTORS = ("slurm", "local")
#: What `mem` looks like: a number with an optional K/M/G/T unit, as sbatch --mem takes it.
MEM_PATTERN = re.compile(r"^[1-9][0-9]*[KMGT]?$")

PosInt = Annotated[int, require(lambda v: v >= 1, "must be an integer >= 1")]
NonNegInt = Annotated[int, require(lambda v: v >= 0, "must be an integer >= 0")]
Name = Annotated[str, require(lambda v: bool(v.strip()) and v.isprintable() and " " not in v,
                              "must be a non-empty name without spaces")]


@dataclass
class SlurmSpec:
    """Resources and behaviour of the SLURM tasks that train a study's runs (one run per array task)."""

    partition: Optional[Name] = knob(None, "partition (sbatch --partition); default: the cluster's")
    time: PosInt = knob(DEFAULT_TIME_MIN, "minutes per task (sbatch --time); a run that reaches it is requeued "
                                          "and resumes from its last epoch")
    cpus_per_task: PosInt = knob(1, "CPUs per task (sbatch --cpus-per-task); a CPU run uses this many threads")
    gpus_per_task: NonNegInt = knob(0, "GPUs per task (sbatch --gpus-per-node, one task per node)")
    mem: Optional[str] = knob(None, "memory per task, e.g. 16G (sbatch --mem); default: the cluster's")
    account: Optional[Name] = knob(None, "account charged (sbatch --account)")
    qos: Optional[Name] = knob(None, "quality of service (sbatch --qos)")
    signal_delay_s: PosInt = knob(DEFAULT_SIGNAL_DELAY_S, "seconds before the time limit at which a task is "
                                                          "warned (USR2): it stops and is requeued")
    max_requeues: NonNegInt = knob(DEFAULT_MAX_REQUEUES, "times a task may be requeued after its time limit")
    extra: Optional[dict[str, str]] = knob(None, "further sbatch flags without the dashes, e.g. "
                                                 "{constraint: a100, exclude: node7}")
    setup: Optional[list[str]] = knob(None, "shell lines each task runs first (module load ..., source "
                                            "venv/bin/activate)")
    executor: str = knob("slurm", "slurm, or local: submitit's local executor (the same path without SLURM)",
                         choices=EXECUTORS)

    def __post_init__(self):
        if self.mem is not None and not MEM_PATTERN.match(str(self.mem)):
            raise ConfigError("mem", f"must look like 16G, 512M or 8000 (sbatch --mem), got {self.mem!r}")
        if self.signal_delay_s >= self.time * 60:
            raise ConfigError("signal_delay_s", f"must be shorter than time ({self.time} min), got {self.signal_delay_s}")


def parse_overrides(items: list[str] | None) -> dict:
    """`--slurm KEY=VALUE` items as a dict (values parsed as YAML: `time=30`, `extra={constraint: a100}`)."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm {item!r}: expected KEY=VALUE, e.g. partition=gpu or time=120")
        out[key.strip()] = parse_value(value)
    return out


def slurm_resources(spec_section: SlurmSpec | None, overrides: list[str] | None = None) -> SlurmSpec:
    """The spec's `slurm:` with the command line's `--slurm KEY=VALUE` over it, checked again."""
    base = asdict(spec_section) if spec_section is not None else {}
    try:
        return build(SlurmSpec, {**base, **parse_overrides(overrides)}, "slurm.")
    except UserError as e:
        raise UserError(f"--slurm: {e}") from None


__all__ = ["EXECUTORS", "SlurmSpec", "parse_overrides", "slurm_resources"]
