"""Checkpoints that let a run continue exactly: weights, optimizer, schedule, scaler, EMA, every RNG.

A checkpoint is untrusted input (a run directory may come from someone else), so it holds only
tensors and plain data (dict, list, tuple, str, int, float, bool, None) and is read with
`torch.load(weights_only=True)`: a pickle that names any other Python object is refused, never run.
RNG states that Python and numpy give as objects are stored as tensors plus plain numbers.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, one_line
from ..io import atomic_torch_save

#: 2: RNG states as tensors and plain data, loadable with weights_only=True (1 held numpy arrays).
CHECKPOINT_FORMAT = 2

#: What each kind of checkpoint must hold (checked on load, so a damaged one is a one-line error).
LAST_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema", "rng", "run_state", "config")
BEST_KEYS = ("model", "epoch", "config")

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """Every RNG state as tensors and plain numbers (no numpy arrays, no Python objects)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    return {
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])


def check_plain(obj, where: str = "checkpoint") -> None:
    """Raise TypeError unless `obj` is tensors and plain data only (what weights_only=True can load)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}")
            check_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN) or isinstance(obj, np.generic):
        raise TypeError(f"{where}: a {type(obj).__module__}.{type(obj).__name__} cannot go into a checkpoint")


def save_checkpoint(path: Path, state: dict) -> None:
    state = {"format": CHECKPOINT_FORMAT, **state}
    check_plain(state)  # what we write must load with weights_only=True
    atomic_torch_save(path, state)


def _refusal(e: Exception) -> str:
    """One line saying why torch.load refused or failed on a file."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused: its pickle names the Python object {found.group(1)}, which a vitlab checkpoint "
                f"never holds (checkpoints are loaded as plain data, nothing in them is executed)")
    return f"cannot read checkpoint ({type(e).__name__}: {one_line(text)})"


def damaged(path: Path, e: Exception) -> UserError:
    """The one-line error for a checkpoint whose contents do not fit the run (wrong shapes, keys, types)."""
    return UserError(f"{path}: damaged checkpoint ({type(e).__name__}: {one_line(e)})")


def load_checkpoint(path: Path, required: tuple[str, ...] = ()) -> dict:
    """Load a vitlab checkpoint as plain data (torch.load(weights_only=True)); anything else is a
    one-line UserError naming the file. `required`: keys it must hold (LAST_KEYS, BEST_KEYS)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, foreign or malicious file
        raise UserError(f"{path}: {_refusal(e)}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: not a vitlab checkpoint of format {CHECKPOINT_FORMAT} (found {str(found)[:40]!r})")
    missing = [k for k in required if k not in state]
    if missing:
        raise UserError(f"{path}: damaged checkpoint, it lacks {', '.join(missing)}")
    return state
