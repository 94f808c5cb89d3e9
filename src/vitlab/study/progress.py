"""Study progress: runs done / running / failed and an ETA; a live rich bar on a terminal, plain
lines otherwise (logs, CI)."""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..rundir import RunStatus


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class StudyProgress:
    """Counts and ETA of one coordinator session. ETA = mean wall time of the runs finished in this
    session x runs left / parallel workers (unknown until one run has finished)."""

    def __init__(self, name: str, total: int, done: int, workers: int, enabled: bool = True, stream=None):
        self.name, self.total, self.done, self.workers = name, total, done, max(1, workers)
        self.failed = 0
        self.running: dict[str, str] = {}  # run_id -> label
        self.epoch: dict[str, int] = {}
        self.durations: list[float] = []
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.live = None
        self.t0 = time.monotonic()
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            self.live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.start()
        elif enabled:
            self._line(f"{total - done} of {total} runs to do, {workers} worker(s)")

    def eta_s(self) -> float | None:
        if not self.durations:
            return None
        left = self.total - self.done - self.failed
        return sum(self.durations) / len(self.durations) * left / self.workers

    def status_line(self) -> str:
        return (f"{self.name}: {self.done}/{self.total} done, {len(self.running)} running, "
                f"{self.failed} failed, elapsed {_fmt_s(time.monotonic() - self.t0)}, ETA {_fmt_s(self.eta_s())}")

    def _render(self):
        t = Table.grid(padding=(0, 2))
        t.add_row(f"[bold]{self.status_line()}[/bold]")
        for rid, label in list(self.running.items())[:16]:
            t.add_row(f"  {rid}  {label}  epoch {self.epoch.get(rid, 0)}")
        return t

    def _line(self, text: str) -> None:
        print(f"[study] {text}", file=self.stream, flush=True)

    def _update(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def started(self, run_id: str, label: str) -> None:
        self.running[run_id] = label
        if self.enabled and self.live is None:
            self._line(f"start {run_id} {label}")
        self._update()

    def epoch_done(self, run_id: str, epoch: int) -> None:
        self.epoch[run_id] = epoch
        self._update()

    def finished(self, run_id: str, status: str, wall_s: float, detail: str = "") -> None:
        label = self.running.pop(run_id, run_id)
        if status == RunStatus.FAILED:
            self.failed += 1
        elif RunStatus(status).final:
            self.done += 1
            self.durations.append(wall_s)
        if self.enabled and self.live is None:
            extra = f" ({detail})" if detail else ""
            self._line(f"{status} {run_id} {label} in {_fmt_s(wall_s)}{extra} | {self.status_line()}")
        self._update()

    def note(self, text: str) -> None:
        """A line about the session (not about one run), e.g. a calibration."""
        if self.live is not None:
            self.live.console.print(f"[study] {text}", markup=False)
        elif self.enabled:
            self._line(text)

    def retrying(self, run_id: str) -> None:
        """A failed run goes back in the queue: it is no longer counted as failed."""
        self.failed = max(0, self.failed - 1)
        self._update()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.enabled:
            self._line(self.status_line())
