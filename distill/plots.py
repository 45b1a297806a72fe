"""PNG plots people would rather look at than read: training curves and scores with intervals.

Every stage that produces numbers over time or per benchmark draws them here, so the figures
look alike. matplotlib is imported lazily (Agg backend: no display needed) and files are
written atomically, like every other output.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.records import atomic_write_bytes


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def curves(
    path: Path,
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
) -> Path | None:
    """One line per named series of (x, y) points; None when there is nothing to draw."""
    series = {name: pts for name, pts in series.items() if pts}
    if not series:
        return None
    fig, ax = _figure()
    for name, pts in series.items():
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if len(series) > 1:
        ax.legend()
    return _save(fig, path)


def bars(
    path: Path,
    values: dict[str, float],
    *,
    title: str,
    ylabel: str = "",
    intervals: dict[str, tuple[float, float]] | None = None,
) -> Path | None:
    """Bars with optional (low, high) interval whiskers."""
    if not values:
        return None
    fig, ax = _figure(max(5.0, 1.2 * len(values) + 2), 4.0)
    names = list(values)
    heights = [values[n] for n in names]
    if intervals:
        low = [max(0.0, values[n] - intervals.get(n, (values[n], values[n]))[0]) for n in names]
        high = [max(0.0, intervals.get(n, (values[n], values[n]))[1] - values[n]) for n in names]
        ax.bar(names, heights, yerr=[low, high], capsize=4, color="#4c72b0")
    else:
        ax.bar(names, heights, color="#4c72b0")
    ax.set(title=title, ylabel=ylabel)
    ax.tick_params(axis="x", labelrotation=20)
    return _save(fig, path)


def log_series(history: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) of one key of a Trainer's log_history."""
    return [(row["step"], float(row[key])) for row in history if key in row and "step" in row]
