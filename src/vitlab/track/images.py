"""Pictures the trackers attach to a run: the test confusion matrix, read back from confusion_test.csv."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Larger confusion files are not read (a CIFAR-100 matrix is about 40 kB).
MAX_CONFUSION_BYTES = 16 * 2**20
#: Class names are written on the axes, and counts in the cells, only up to this many classes.
MAX_LABELLED_CLASSES = 30


def read_confusion(path: str | Path) -> tuple[list[str], np.ndarray] | None:
    """(class names, counts) from a confusion_test.csv (rows = true class, columns = predicted), or None
    when the file is missing, too large or not a square matrix of counts."""
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > MAX_CONFUSION_BYTES:
            return None
        rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if len(rows) < 2:
        return None
    classes = rows[0][1:]
    try:
        counts = np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64)
    except ValueError:
        return None
    if counts.shape != (len(classes), len(classes)):
        return None
    return classes, counts


def confusion_figure(classes: list[str], counts: np.ndarray):
    """A heat map of the confusion matrix, each row normalized (the diagonal is per-class recall).

    A bare matplotlib Figure (no pyplot state), so it is safe in a background thread."""
    n = len(classes)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 3.0 + 0.25 * min(n, 40)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(rates, vmin=0.0, vmax=1.0, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(counts) / max(int(counts.sum()), 1)
    ax.set_title(f"test confusion matrix (top-1 {acc:.1%})")
    if n <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """The PNG bytes of a bare matplotlib Figure."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def figure_rgb(fig) -> np.ndarray:
    """The pixels of a bare matplotlib Figure as an H x W x 3 uint8 array."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
