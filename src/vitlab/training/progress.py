"""Training progress: a rich bar with ETA and live loss on a TTY, one plain line per epoch otherwise."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LIVE_LOSS_EVERY = 10
"""Steps between updates of the live loss shown on the bar (each update syncs the device)."""


class EpochProgress:
    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True):
        self.epochs, self.steps = epochs, steps_per_epoch
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.bar = None
        self.task = None
        self._step = 0

    def __enter__(self):
        if self.live:
            self.bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  val top-1 {task.fields[val]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, done_epochs: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task("train", total=self.epochs * self.steps,
                                          completed=done_epochs * self.steps, epoch=done_epochs + 1,
                                          epochs=self.epochs, loss="-", val="-")
        elif self.enabled and done_epochs:
            self._print(f"resuming after epoch {done_epochs}/{self.epochs}")

    def step(self, loss) -> None:
        """Advance one step; the loss tensor is only read (a device sync) every LIVE_LOSS_EVERY steps."""
        if self.bar is None:
            return
        self._step += 1
        fields = {"loss": f"{loss.item():.3f}"} if self._step % LIVE_LOSS_EVERY == 0 else {}
        self.bar.update(self.task, advance=1, **fields)

    def epoch_done(self, row: dict) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, epoch=min(row["epoch"] + 1, self.epochs), val=f"{row['val_top1']:.2%}")
            return
        test = f"  test_top1 {row['test_top1']:.4f}" if "test_top1" in row else ""
        self._print(f"epoch {row['epoch']}/{self.epochs}  train_loss {row['train_loss']:.4f}  "
                    f"train_top1 {row['train_top1']:.4f}  val_loss {row['val_loss']:.4f}  "
                    f"val_top1 {row['val_top1']:.4f}{test}  {row['throughput_img_s']:.0f} img/s  "
                    f"{row['epoch_time_s']:.1f}s")

    def note(self, text: str) -> None:
        if self.enabled:
            (self.bar.console.print if self.bar is not None else self._print)(text)

    @staticmethod
    def _print(text: str) -> None:
        print(text, file=sys.stderr, flush=True)
