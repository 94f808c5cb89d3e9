"""`vitlab train --out DIR --resume`: the config of the run to continue, read from DIR.

The run directory's `config.yaml` is the run; the command line may only change how it executes (the
config's EXECUTION_ONLY fields: threads, progress display, trackers). Retyping the original command in
full is accepted too, as long as it describes the same run.
"""
from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, load_config
from ..identity import EXECUTION_ONLY, identity_dict
from ..schema import apply_overrides, build, flatten
from ..yamlsafe import read_yaml
from ..errors import UserError
from ..rundir import CONFIG_FILE

#: The keys a resume may override, as `vitlab train` spells them.
SAFE_ON_RESUME = tuple(sorted(f"{section}.{key}" for section, key in EXECUTION_ONLY))


def resume_config(out: str | Path, path: str | None, overrides: list[str]) -> RunConfig:
    """The saved config of the run in `out` with the command line's execution settings applied.

    Refused with one line: a missing or empty `out` (nothing to resume), and a command line that
    would change what the run computes (another run: it needs another --out)."""
    out = Path(out)
    saved_file = out / CONFIG_FILE
    if not saved_file.is_file():
        state = "does not exist" if not out.exists() else "holds no run (no config.yaml)"
        raise UserError(f"{out}: --resume: the directory {state}; start the run without --resume")
    saved_data = read_yaml(saved_file)
    saved = build(RunConfig, saved_data)
    on_saved = build(RunConfig, apply_overrides(saved_data, overrides, RunConfig)) if path is None else None
    if on_saved is not None and identity_dict(on_saved) == identity_dict(saved):
        return on_saved
    retyped = load_config(path, overrides)  # the original command again, in full
    if identity_dict(retyped) == identity_dict(saved):
        return retyped
    changed = _changed_keys(saved, on_saved or retyped)
    raise UserError(f"{out}: --resume continues the saved config; {', '.join(changed)} would make another run "
                    f"(on resume only {', '.join(SAFE_ON_RESUME)} may change); use another --out for it")


def _changed_keys(a: RunConfig, b: RunConfig) -> list[str]:
    fa, fb = flatten(identity_dict(a)), flatten(identity_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)) or ["the config"]
