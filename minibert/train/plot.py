"""A PNG with each task's training loss and dev metric over the steps, from metrics.jsonl."""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(log_path: str | Path, png_path: str | Path, main_metrics: dict[str, str]) -> bool:
    """Training loss per task, and each task's main dev metric (``main_metrics``: task -> metric name).
    Returns False (with a warning) when matplotlib is not installed: it is an optional extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install minibert[train]): no curves.png", stacklevel=2)
        return False
    records = read_log(Path(log_path))
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 4.5))
    losses: dict[str, list[tuple[int, float]]] = {}
    dev: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for task, value in r.get("loss", {}).items():
            losses.setdefault(task, []).append((r["step"], value))
        for task, metrics in r.get("dev", {}).items():
            name = main_metrics.get(task)
            if isinstance(metrics, dict) and name in metrics:
                dev.setdefault(f"{task} {name}", []).append((r["step"], metrics[name]))
    colors = {task: f"C{i}" for i, task in enumerate(dict.fromkeys([*losses, *(k.split()[0] for k in dev)]))}
    for task, points in losses.items():
        ax_loss.plot(*zip(*points, strict=True), label=task, color=colors[task])
    for label, points in dev.items():
        ax_dev.plot(*zip(*points, strict=True), marker="o", label=label, color=colors[label.split()[0]])
    ax_loss.set(title="training loss", xlabel="step", yscale="log")
    ax_dev.set(title="dev metric", xlabel="step")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True
