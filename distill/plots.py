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


def panels(
    path: Path, series: dict[str, Sequence[tuple[float, float]]], *, title: str, xlabel: str = "step"
) -> Path | None:
    """One small plot per named series, side by side (quantities on different scales: reward,
    a rate, a length); None when there is nothing to draw."""
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(3.6 * len(series), 3.2), dpi=110, squeeze=False)
    for ax, (name, pts) in zip(axes[0], series.items(), strict=True):
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set(title=name, xlabel=xlabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
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


def grouped_bars(
    path: Path,
    groups: dict[str, dict[str, tuple[float, float]]],
    *,
    title: str,
    ylabel: str = "",
) -> Path | None:
    """One bar per (category, series), series side by side within each category, with +- whiskers:
    `groups[series][category] = (value, error)`."""
    if not groups:
        return None
    fig, ax = _figure(8.0, 4.2)
    categories = list(dict.fromkeys(c for g in groups.values() for c in g))
    width = 0.8 / len(groups)
    for i, (name, values) in enumerate(groups.items()):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(categories))]
        ys = [values.get(c, (0.0, 0.0))[0] for c in categories]
        errs = [values.get(c, (0.0, 0.0))[1] for c in categories]
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=name)
    ax.set_xticks(range(len(categories)), categories)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path)


def log_series(history: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) of one key of a Trainer's log_history."""
    return [(row["step"], float(row[key])) for row in history if key in row and "step" in row]
