"""Checkpoints that let a run continue exactly: weights, optimizer, schedule, scaler, EMA, every RNG."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_torch_save

CHECKPOINT_FORMAT = 1


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **state})


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint this library wrote (trusted file: it holds Python RNG states, so not weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a vitlab checkpoint (format {CHECKPOINT_FORMAT})")
    return state
