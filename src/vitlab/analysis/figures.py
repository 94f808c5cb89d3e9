"""Figures of one run's analysis (PNG + SVG): attention maps and rollouts over the images, entropy per
layer (and per epoch), accuracy vs corruption severity, the corruption heat map, the reliability
diagram. matplotlib's object-oriented API (no pyplot state); every builder returns a Figure or None.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import atomic_write_bytes
from ..models.probe import ENTROPY_KEY
from .corruptions import ordered

PNG_DPI = 120
"""Resolution of saved PNGs."""
MAP_CELL_IN = 1.15
"""Side in inches of one image cell of the attention-map grids."""
OVERLAY_ALPHA = 0.55
"""Opacity of the attention heat map over the image."""
MAP_CMAP = "inferno"
HEAT_CMAP = "viridis"


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=PNG_DPI, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def save_figure(fig: Figure, base: str | Path) -> dict[str, bytes]:
    """Write base.png and base.svg atomically; returns the bytes of both."""
    base = Path(base)
    data = {fmt: figure_bytes(fig, fmt) for fmt in ("png", "svg")}
    for fmt, b in data.items():
        atomic_write_bytes(base.parent / f"{base.name}.{fmt}", b)
    return data


def _image(img: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> something imshow draws: (H, W, 3) or (H, W)."""
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def _upsample(m: np.ndarray, h: int, w: int, top: float | None = None) -> np.ndarray:
    """Nearest-neighbour upsampling of a (r, c) map to (h, w), in [0, 1] for display: divided by `top`
    (one scale shared by several maps, 0 = no weight) or, without it, min-max scaled on its own."""
    r, c = m.shape
    rows = np.minimum((np.arange(h) * r) // h, r - 1)
    cols = np.minimum((np.arange(w) * c) // w, c - 1)
    up = m[rows][:, cols].astype(np.float64)
    if top is not None:
        return np.clip(up / top, 0.0, 1.0) if top > 0 else np.zeros_like(up)
    lo, hi = up.min(), up.max()
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def shared_top(maps: Sequence[np.ndarray]) -> float:
    """The largest value of several maps: one color scale for all of them, so that near-uniform
    attention looks uniform instead of being stretched into structure."""
    return float(max((np.max(np.abs(m)) for m in maps if np.size(m)), default=0.0))


def maps_figure(images: np.ndarray, maps: Sequence[np.ndarray], labels: Sequence[str], title: str,
                one_scale: bool = False) -> Figure | None:
    """Rows = images, columns = the image, then one overlay per map (each (M, r, c)): per-cell min–max
    scaled, or with `one_scale` all on one scale from 0 to the largest value."""
    if not len(images) or not maps:
        return None
    m, cols = len(images), len(maps) + 1
    fig = Figure(figsize=(MAP_CELL_IN * cols, MAP_CELL_IN * m + 0.6), layout="constrained")
    axes = fig.subplots(m, cols, squeeze=False)
    h, w = images.shape[-2:]
    gray = images.shape[1] == 1
    top = shared_top(maps) if one_scale else None
    for i in range(m):
        img = _image(images[i])
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(img, cmap="gray" if gray else None, interpolation="nearest")
            if j:
                ax.imshow(_upsample(maps[j - 1][i], h, w, top), cmap=MAP_CMAP, alpha=OVERLAY_ALPHA,
                          interpolation="bilinear", vmin=0, vmax=1)
            if i == 0:
                ax.set_title("image" if j == 0 else labels[j - 1], fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def layer_label(i: int, name: str) -> str:
    return f"L{i}"


def entropy_layers_figure(layers: list[dict]) -> Figure | None:
    """Normalized entropy and mean attention distance per layer: layer means as lines, heads as dots."""
    if not layers:
        return None
    fig = Figure(figsize=(8.5, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(layers))
    for ax, key, label in ((ax1, "entropy_norm", "normalized entropy (1 = uniform)"),
                           (ax2, "distance_px", "mean attention distance (px)")):
        ax.plot(x, [_nan(lay[key]) for lay in layers], "-o", color="C0", label="mean over heads", zorder=3)
        for i, lay in enumerate(layers):
            ax.scatter([i] * len(lay["heads"]), [_nan(h[key]) for h in lay["heads"]], s=12, color="C1",
                       alpha=0.7, label="heads" if i == 0 else None, zorder=2)
        if key == "distance_px" and all(lay.get("distance_px_uniform") is not None for lay in layers):
            ax.plot(x, [lay["distance_px_uniform"] for lay in layers], "--", color="gray", label="uniform attention")
            ax.legend(fontsize=7)
        ax.set_xticks(x, [f"L{i}" for i in x], fontsize=7)
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend(fontsize=7)
    return fig


def entropy_epochs_figure(rows: list[dict]) -> Figure | None:
    """`val_attn_entropy_norm_l{i}` over the epochs of metrics.jsonl (one line per layer)."""
    n = 0
    while any(f"{ENTROPY_KEY}{n}" in r for r in rows):
        n += 1
    if not n:
        return None
    fig = Figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.subplots()
    for i in range(n):
        pts = [(r["epoch"], r[f"{ENTROPY_KEY}{i}"]) for r in rows
               if r.get(f"{ENTROPY_KEY}{i}") is not None and "epoch" in r]
        ax.plot([e for e, _ in pts], [v for _, v in pts], "-", marker="." if len(pts) < 30 else None,
                label=f"L{i}", color=_layer_color(i, n))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("normalized entropy (val batch)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=max(1, math.ceil(n / 8)))
    return fig


def _layer_color(i: int, n: int):
    return colormaps["viridis"](i / max(n - 1, 1))


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def severity_figure(rob: dict) -> Figure | None:
    """Top-1 vs severity (0 = clean): mean over the faithful corruptions, and per category."""
    if not rob or not rob.get("corruptions"):
        return None
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    sev = np.arange(0, 6)
    clean = 100 * rob["clean_top1"]
    cats: dict[str, list[list[float]]] = {}
    for name, accs in rob["corruptions"].items():
        if name in rob.get("excluded_from_mean", []):
            continue
        cats.setdefault(rob["categories"][name], []).append(accs)
    for k, (cat, lists) in enumerate(sorted(cats.items())):
        mean = np.mean(np.array(lists), axis=0) * 100
        ax.plot(sev, [clean, *mean], "--", color=f"C{k + 1}", label=cat, alpha=0.8)
    ax.plot(sev, [clean, *[100 * _nan(v) for v in rob["severity_top1"]]], "-o", color="C0", lw=2,
            label="mean (faithful)")
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def heatmap_figure(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], label: str,
                   title: str = "") -> Figure | None:
    """A heat map with each cell's value printed (values in %, nan = blank)."""
    if values.size == 0:
        return None
    fig = Figure(figsize=(1.0 + 0.55 * len(cols), 0.8 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(values, cmap=HEAT_CMAP, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=45 if max(map(len, cols)) > 3 else 0, ha="right"
                  if max(map(len, cols)) > 3 else "center")
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if values[i, j] < mid else "black")
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def corruption_heatmap(rob: dict) -> Figure | None:
    """Corruptions × severities, top-1 in %."""
    if not rob or not rob.get("corruptions"):
        return None
    names = ordered(rob["corruptions"])
    vals = np.array([rob["corruptions"][n] for n in names], dtype=float) * 100
    labels = [n + (" *" if n in rob.get("excluded_from_mean", []) else "") for n in names]
    return heatmap_figure(vals, labels, [str(s) for s in range(1, 6)], "top-1 (%)",
                          "top-1 per corruption and severity (* = not in the mean)")


def reliability_figure(cal: dict) -> Figure | None:
    """Accuracy per confidence bin against the diagonal, with the share of predictions per bin."""
    if not cal or not cal.get("bins"):
        return None
    bins = cal["bins"]
    fig = Figure(figsize=(4.2, 4.6), layout="constrained")
    ax, ax2 = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"]
    acc = [_nan(b["accuracy"]) for b in bins]
    conf = [_nan(b["confidence"]) for b in bins]
    ax.bar(centers, acc, width=width * 0.95, color="C0", alpha=0.8, label="accuracy")
    ax.bar(centers, np.array(conf) - np.array(acc), bottom=acc, width=width * 0.95, color="C3", alpha=0.3,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {100 * cal['ece']:.2f}% · overconfidence {100 * cal['overconfidence']:+.2f} pp", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    total = sum(b["count"] for b in bins) or 1
    ax2.bar(centers, [b["count"] / total for b in bins], width=width * 0.95, color="gray")
    ax2.set_xlabel("confidence")
    ax2.set_ylabel("share")
    ax.set_xlim(0, 1)
    return fig
