"""A run directory as the exporters and DataFrames read it: config, summary, per-epoch history."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig
from ..identity import EXECUTION_ONLY, config_hash, identity_dict
from ..schema import build
from ..yamlsafe import read_yaml
from ..errors import UserError
from ..rundir import CONFIG_FILE, is_run_dir, read_metrics, read_summary
from .base import RunInfo


@dataclass
class RunData:
    """What a run directory holds, plus its place in a study (`context`: study, factor, level, seed)."""

    run_dir: Path
    run_id: str
    config: dict  # the identity dict: execution-only fields left out
    summary: dict
    history: list[dict]
    context: dict = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return self.summary.get("status")

    def info(self) -> RunInfo:
        return RunInfo(run_dir=self.run_dir, run_id=self.run_id, config=self.config, context=self.context)


def identity_of(raw: dict) -> tuple[dict, str | None]:
    """(identity dict, config hash) of a config.yaml's content. A config this vitlab no longer accepts
    (written by another version) is kept as it is, less the execution-only fields, with no hash."""
    try:
        cfg = build(RunConfig, raw)
    except UserError:
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
        for section, key in EXECUTION_ONLY:
            if isinstance(out.get(section), dict):
                out[section].pop(key, None)
        return {k: v for k, v in out.items() if v != {}}, None
    return identity_dict(cfg), config_hash(cfg)


def read_run(run_dir: str | Path, run_id: str | None = None, context: dict | None = None) -> RunData:
    """Read `run_dir` (UserError when it holds no config.yaml, MalformedFile when a file is damaged).
    The run ID is `run_id` (a study's directory name), else the config hash, as `vitlab train` would
    have named it."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    config, digest = identity_of(read_yaml(run_dir / CONFIG_FILE))
    ctx = {k: v for k, v in (context or {}).items() if v is not None}
    ctx.setdefault("seed", config.get("seed"))
    return RunData(run_dir=run_dir, run_id=run_id or digest or run_dir.name, config=config,
                   summary=read_summary(run_dir) or {}, history=read_metrics(run_dir),
                   context=ctx)
