"""A run's identity: the part of its config that defines its result, and the run ID hashed from it.

Each field says how it enters the identity with `knob(identity=...)` (see `schema.IDENTITY_ROLES`):
execution-only fields (threads, progress, tracking) never do; fields added after run IDs were first
issued are left out while unset, so that configs written before they existed keep their run IDs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any

from .config import RunConfig
from .schema import to_dict

#: The `model` knobs of the one ModelConfig that held every family's knobs when run IDs were first
#: issued: the identity lists each (None where the run's family lacks it), as that class did.
LEGACY_MODEL_KEYS = ("name", "image_size", "attn_norm", "zscore_v", "num_heads", "head_dim", "patch_size", "dim",
                     "depth", "mlp_ratio", "expansion", "stage_expansion", "level", "width_mult", "strides",
                     "pos_embed", "pool", "head_hidden", "dropout", "attn_dropout", "drop_path")


def _role(fl: dataclasses.Field) -> str:
    return fl.metadata.get("identity", "always")


def _declared(role: str) -> set[tuple[str, str]]:
    """(section, key) of the fields of RunConfig's declared sections with identity role `role`."""
    hints = typing.get_type_hints(RunConfig)
    return {(sec.name, fl.name) for sec in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[sec.name])
            for fl in dataclasses.fields(hints[sec.name]) if _role(fl) == role}


#: Fields that change how a run executes but not what it computes: excluded from the run's identity.
EXECUTION_ONLY = _declared("never")
#: Fields added after run IDs were first issued, omitted from the identity while unset (None, [] or False).
OMITTED_UNSET = _declared("omit_unset")


def _drop(d: dict, obj: Any) -> None:
    """Remove from `d` (the dict of dataclass `obj`) what its fields' identity roles leave out."""
    for fl in dataclasses.fields(obj):
        value = getattr(obj, fl.name)
        if dataclasses.is_dataclass(value):
            _drop(d[fl.name], value)
        elif _role(fl) == "never" or (_role(fl) == "omit_unset" and (value in (None, []) or value is False)):
            d.pop(fl.name, None)


def identity_dict(cfg: RunConfig) -> dict:
    """The config as a dict without execution-only fields: what defines a run's result. Seed-source
    overrides left at None, the other omit-when-unset fields and sections left empty (`track`) are
    omitted, so configs written before they existed keep their run IDs."""
    d = to_dict(cfg)
    d["model"] = {**dict.fromkeys(LEGACY_MODEL_KEYS), **d["model"]}
    _drop(d, cfg)
    if "budget_minutes" not in d["train"]:
        d["train"].pop("budget_clock", None)  # it only means something with a budget
    return {k: v for k, v in d.items() if v != {}}


def config_hash(cfg: RunConfig, length: int = 12) -> str:
    """Deterministic run ID: hash of the canonical JSON of the identity dict (seed included)."""
    return hashlib.sha256(canonical_json(identity_dict(cfg)).encode()).hexdigest()[:length]


def canonical_json(obj: Any) -> str:
    """The JSON text that run IDs hash: sorted keys, no whitespace, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
