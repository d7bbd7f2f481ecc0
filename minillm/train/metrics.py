"""Training metrics: one JSON object per line in ``metrics.jsonl``, and a loss-curve PNG.

A line per logged step, e.g.::

    {"step": 100, "train_loss": 3.21, "lr": 0.00098, "grad_norm": 0.84, "tokens_per_sec": 5120.3, ...}
    {"step": 100, "val_loss": 3.30, "val_ppl": 27.1}
    {"step": 100, "samples": ["Once upon a time ..."]}

JSON lines are easy to append to (a crash loses at most the last line), easy to read
back (``[json.loads(l) for l in open(path)]``) and easy to plot.
"""
from __future__ import annotations

import json
import math
import os

from .._files import atomic_path, atomic_write

__all__ = ["MetricsLogger", "read_metrics", "plot_metrics"]


def _clean(value):
    """NaN/inf are not valid JSON: store them as strings so every line stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Appends records to a JSONL file."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def log(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step``: a run resumed from ``step`` will log them again."""
        if not os.path.exists(self.path):
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: str) -> list:
    """All records of a metrics file (a torn last line, from a crash, is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def plot_metrics(metrics_path: str, png_path: str) -> bool:
    """Train and validation loss against step, saved as a PNG. Returns False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = read_metrics(metrics_path) if os.path.exists(metrics_path) else []
    train = [(r["step"], r["train_loss"]) for r in records if isinstance(r.get("train_loss"), (int, float))]
    val = [(r["step"], r["val_loss"]) for r in records if isinstance(r.get("val_loss"), (int, float))]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", markersize=3)
    ax.set_xlabel("step (optimizer updates)")
    ax.set_ylabel("cross-entropy loss (nats / token)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(png_path) as tmp:  # a crash mid-save never leaves a torn PNG
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return True
