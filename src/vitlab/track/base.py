"""What every tracker shares: the run it logs (`RunInfo`), the `Tracker` protocol, the extras check,
and `Trackers`, which keeps a tracker from ever stopping or delaying training.

A tracker is told four things, in this order: `start(history, resumed)` once (with the epochs already
in metrics.jsonl, so a resumed run, or one whose tracking was turned on late, is complete; `resumed`
says whether what the tracker holds of the run from before is still valid — False for a run that starts
over from epoch 1),
`log_epoch(row)` per epoch (the metrics.jsonl row), `finish(summary)` when the run ends (any status),
and `close()` always last.
"""
from __future__ import annotations

import importlib
import json
import math
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..schema import flatten
from ..errors import UserError

#: Seconds `Trackers.close` waits for a tracker to write what it was given before training goes on
#: without it (a tracking server that does not answer must not hold the run forever).
CLOSE_TIMEOUT_S = 60.0
#: Context keys the study worker passes to `run_training(..., context=...)`.
CONTEXT_KEYS = ("study", "factor", "level", "seed", "run_id")
#: Prefix of the summary metrics each tracker logs once at the end (`final/test_top1`, ...).
FINAL_PREFIX = "final/"


class TrackerWarning(UserWarning):
    """A tracker failed; the run went on without it."""


def require(module: str, extra: str, what: str):
    """Import `module`, or raise a one-line UserError naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the {extra!r} extra: pip install 'vitlab[{extra}]'") from None



def is_number(v: Any) -> bool:
    """A value a tracker can plot: int or float, not bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def epoch_metrics(row: dict) -> dict[str, float]:
    """The plottable fields of a metrics.jsonl row (every number but `epoch`, NaN/inf kept)."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and is_number(v)}


def final_metrics(summary: dict) -> dict[str, float]:
    """The finite numbers of a summary (test metrics, best-epoch metrics, params, time, ...)."""
    return {k: float(v) for k, v in summary.items() if is_number(v) and math.isfinite(float(v))}


def param_text(v: Any) -> str:
    """A config value as a tracker parameter: strings as they are, the rest as JSON (null, [1, 2])."""
    return v if isinstance(v, str) else json.dumps(v)


@dataclass
class RunInfo:
    """The run a tracker logs: its directory, vitlab run ID, config (its identity dict: no execution-only
    fields) and study context (study, factor, level, seed; empty for a run outside a study)."""

    run_dir: Path
    run_id: str
    config: dict
    context: dict = field(default_factory=dict)

    @property
    def study(self) -> str | None:
        return self.context.get("study")

    @property
    def seed(self) -> Any:
        return self.context.get("seed", self.config.get("seed"))

    def display_name(self) -> str:
        """`factor=level seed=N` in a study, the run directory's name otherwise."""
        c = self.context
        if c.get("factor") is not None:
            return f"{c['factor']}={c.get('level')} seed={self.seed}"
        return self.run_dir.name or self.run_id

    def tags(self) -> dict[str, str]:
        """Study, factor, level and seed (those known) and the vitlab run ID, as strings."""
        tags = {k: str(self.context[k]) for k in ("study", "factor", "level") if self.context.get(k) is not None}
        tags["seed"] = str(self.seed)
        tags["vitlab.run_id"] = self.run_id
        return tags

    def params(self) -> dict[str, Any]:
        """The flattened config with dotted keys (`config` is the identity dict: no execution-only fields)."""
        return flatten(self.config)


class Tracker(Protocol):
    """One destination (TensorBoard, MLflow). Methods may raise; `Trackers` turns that into a warning."""

    name: str

    def start(self, history: list[dict], resumed: bool) -> None: ...

    def log_epoch(self, row: dict) -> None: ...

    def finish(self, summary: dict) -> None: ...

    def close(self) -> None: ...


class _Worker:
    """One tracker's calls, run in order on a daemon thread so that the training loop only enqueues."""

    def __init__(self, tracker: Tracker, errors: list[str]):
        self.tracker, self.errors = tracker, errors
        self.q: queue.Queue = queue.Queue()
        self.failed = False  # a failed start leaves nothing to log to: later calls are skipped
        # Started on the first call, so trackers opened for a run that then fails to load leave no thread.
        self.thread = threading.Thread(target=self._loop, name=f"vitlab-track-{tracker.name}", daemon=True)

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            method, args = item
            if self.failed and method != "close":
                continue
            try:
                getattr(self.tracker, method)(*args)
            except Exception as e:  # any failure of a tracker: warn and go on training
                if method == "start":
                    self.failed = True
                msg = f"tracker {self.tracker.name}: {method} failed ({type(e).__name__}: {e}); training goes on"
                self.errors.append(msg)
                try:
                    warnings.warn(msg, TrackerWarning, stacklevel=1)
                except Exception:  # a warnings filter set to "error" must not end this thread  # noqa: BLE001
                    pass

    def call(self, method: str, *args) -> None:
        if not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()
        self.q.put((method, args))


class Trackers:
    """The trackers of one run, as the trainer sees them: calls return at once (each tracker writes on
    its own thread), a tracker that raises is reported with a `TrackerWarning`, and training goes on."""

    def __init__(self, trackers: list[Tracker]):
        self.errors: list[str] = []
        self._workers = [_Worker(t, self.errors) for t in trackers]

    def __bool__(self) -> bool:
        return bool(self._workers)

    @property
    def names(self) -> list[str]:
        return [w.tracker.name for w in self._workers]

    def _each(self, method: str, *args) -> None:
        for w in self._workers:
            w.call(method, *args)

    def start(self, history: list[dict], resumed: bool) -> None:
        self._each("start", [dict(r) for r in history], resumed)

    def log_epoch(self, row: dict) -> None:
        self._each("log_epoch", dict(row))

    def finish(self, summary: dict) -> None:
        self._each("finish", dict(summary))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Let every tracker write what it was given (at most `timeout` seconds in all), then stop."""
        deadline = time.monotonic() + timeout
        running = [w for w in self._workers if w.thread.ident is not None]  # never called: nothing to close
        for w in running:
            w.call("close")
            w.q.put(None)
        for w in running:
            w.thread.join(max(0.0, deadline - time.monotonic()))
            if w.thread.is_alive():
                msg = (f"tracker {w.tracker.name}: still writing after {timeout:.0f} s; "
                       "going on without it (its last records may be missing)")
                self.errors.append(msg)
                warnings.warn(msg, TrackerWarning, stacklevel=2)
