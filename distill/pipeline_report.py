"""The report at the end of `distill pipeline run`: each stage's key numbers side by side.

Numbers come from what the commands already write into their outputs, so a stage run by hand
reads the same: generate's manifest.json (rows, tokens), filter's report.json (kept share),
train's training_stats.json and log_history.json (loss), rl's stats.json and metrics.json
(reward and pass-rate curves), eval's results.json (pass@1 ± s.e.). A model-producing stage
(train, rl) is shown with the pass@1 of every eval stage that measured it.

Writes OUTPUT/report.md and OUTPUT/report.png (loss curves, reward curves, kept shares,
pass@1 per model); matplotlib is imported only here, when the report is drawn.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.records import atomic_write_bytes


@dataclass
class StageView:
    """What the report needs of a stage: no dependency on the pipeline's own types."""

    name: str
    command: str
    folder: Path
    state: str
    measures: str | None = None  # eval: the model stage it measured
    inputs: list[str] = field(default_factory=list)  # the stages it read
    wall_s: float | None = None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def numbers(view: StageView) -> dict[str, Any]:
    """The key numbers of one stage's output ({} when it has none yet)."""
    f, cmd = view.folder, view.command
    if cmd == "generate":
        m = (_json(f / "manifest.json") or {}).get("counts") or {}
        return {k: m[k] for k in ("rows", "problems", "completion_tokens") if k in m}
    if cmd == "filter":
        r = _json(f / "report.json") or {}
        counts, correct = r.get("counts") or {}, r.get("correct") or {}
        if not counts:
            return {}
        checked = correct.get("true", 0) + correct.get("false", 0)
        return {"in": counts.get("in"), "kept": counts.get("kept"),
                "kept_share": counts.get("kept_fraction"),
                "correct_share": round(correct.get("true", 0) / checked, 4) if checked else None}  # fmt: skip
    if cmd == "train":
        s = _json(f / "training_stats.json") or {}
        history = _json(f / "log_history.json") or []
        loss = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
        out = {k: s[k] for k in ("examples", "steps", "first_loss", "final_loss") if k in s}
        return {**out, "loss_curve": loss} if out else {}
    if cmd == "rl":
        s = _json(f / "stats.json") or {}
        history = _json(f / "metrics.json") or []
        rounds = [h for h in history if "frac_reward_zero_std" in h]
        if not s:
            return {}
        first, last = s.get("first") or {}, s.get("last") or {}
        return {"steps": s.get("steps"), "first_reward": first.get("reward"),
                "final_reward": last.get("reward"), "first_pass_rate": first.get("accuracy/pass_rate"),
                "final_pass_rate": last.get("accuracy/pass_rate"), "guard": s.get("guard"),
                "reward_curve": [(h["step"], h["reward"]) for h in rounds if isinstance(h.get("reward"), int | float)]}  # fmt: skip
    if cmd == "eval":
        r = _json(f / "results.json") or {}
        return {"pass@1": {b: (m["pass@1"], m.get("pass@1_stderr", 0.0))
                           for b, m in (r.get("benchmarks") or {}).items()}} if r else {}  # fmt: skip
    return {}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def summary(view: StageView, n: dict[str, Any]) -> str:
    """One line of a stage's numbers, as the tables show it."""
    if not n:
        return ""
    if view.command == "generate":
        return f"{n.get('rows', 0):,} rows from {n.get('problems', 0):,} problems, {n.get('completion_tokens', 0):,} tokens"
    if view.command == "filter":
        return f"kept {_pct(n['kept_share'])} of {n['in']:,} (correct {_pct(n['correct_share'])})"
    if view.command == "train":
        return f"loss {_num(n.get('first_loss'))} → {_num(n.get('final_loss'))} over {n.get('steps')} steps ({n.get('examples', 0):,} examples)"
    if view.command == "rl":
        guard = " (stopped by a guard)" if n.get("guard") else ""
        return (f"reward {_num(n['first_reward'])} → {_num(n['final_reward'])}, pass rate "
                f"{_pct(n['first_pass_rate'])} → {_pct(n['final_pass_rate'])} over {n['steps']} steps{guard}")  # fmt: skip
    if view.command == "eval":
        return ", ".join(f"pass@1 {b} {_pct(p)} ± {100 * se:.1f}" for b, (p, se) in n["pass@1"].items())
    return ""


def model_rows(views: list[StageView], nums: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model-producing stage with what it trained on and the pass@1 measured after it."""
    rows = []
    for v in views:
        if v.command not in ("train", "rl"):
            continue
        scores: dict[str, tuple[float, float]] = {}
        for e in views:
            if e.command == "eval" and e.measures == v.name:
                scores.update((nums.get(e.name) or {}).get("pass@1") or {})
        rows.append({"stage": v.name, "command": v.command, "inputs": v.inputs,
                     "training": summary(v, nums.get(v.name) or {}), "pass@1": scores})  # fmt: skip
    return rows


def markdown(title: str, views: list[StageView], nums: dict[str, dict[str, Any]]) -> str:
    lines = [f"# {title}", "", "## Stages", "",
             "| stage | command | state | key numbers | wall |", "|---|---|---|---|---:|"]  # fmt: skip
    for v in views:
        wall = f"{v.wall_s:.0f} s" if v.wall_s is not None else "-"
        lines.append(f"| {v.name} | {v.command} | {v.state} | {summary(v, nums.get(v.name) or {})} | {wall} |")
    models = model_rows(views, nums)
    benches = list(dict.fromkeys(b for m in models for b in m["pass@1"]))
    if models:
        lines += ["", "## Models: pass@1 after each model-producing stage", "",
                  "| model stage | command | trained on | training | " + " | ".join(f"pass@1 {b}" for b in benches) + " |",
                  "|---|---|---|---|" + "---:|" * len(benches)]  # fmt: skip
        for m in models:
            cells = [
                f"{_pct(m['pass@1'][b][0])} ± {100 * m['pass@1'][b][1]:.1f}" if b in m["pass@1"] else "-"
                for b in benches
            ]
            lines.append(f"| {m['stage']} | {m['command']} | {', '.join(m['inputs']) or '-'} | {m['training']} | " + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "![report](report.png)", ""]
    return "\n".join(lines)


def plot(path: Path, title: str, views: list[StageView], nums: dict[str, dict[str, Any]]) -> Path | None:  # fmt: skip
    """One PNG, one panel per kind of number: loss curves, reward curves, kept shares, pass@1."""
    loss = {v.name: nums[v.name]["loss_curve"] for v in views if (nums.get(v.name) or {}).get("loss_curve")}  # fmt: skip
    reward = {v.name: nums[v.name]["reward_curve"] for v in views if (nums.get(v.name) or {}).get("reward_curve")}  # fmt: skip
    kept = {v.name: nums[v.name]["kept_share"] for v in views if v.command == "filter" and nums.get(v.name)}  # fmt: skip
    scores = {}
    for m in model_rows(views, nums):
        for bench, (p, se) in m["pass@1"].items():
            scores[f"{m['stage']}\n{bench}" if len(m["pass@1"]) > 1 else m["stage"]] = (p, se)
    panels = [p for p in (("training loss", loss), ("RL reward", reward), ("kept share", kept),
                          ("pass@1 after each model stage", scores)) if p[1]]  # fmt: skip
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), dpi=100, squeeze=False)
    for ax, (name, data) in zip(axes[0], panels, strict=True):
        ax.grid(alpha=0.3)
        ax.set_title(name)
        if name in ("training loss", "RL reward"):
            for label, pts in data.items():
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        elif name == "kept share":
            ax.bar(list(data), list(data.values()), color="#4c72b0")
            ax.set_ylim(0, 1)
        else:
            ax.bar(list(data), [p for p, _ in data.values()], yerr=[se for _, se in data.values()],
                   capsize=4, color="#55a868")  # fmt: skip
            ax.set_ylim(0, 1)
        if name in ("kept share", "pass@1 after each model stage"):
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_report(output: Path, title: str, views: list[StageView]) -> dict[str, Any]:
    """OUTPUT/report.md + OUTPUT/report.png; returns every stage's numbers."""
    nums = {v.name: numbers(v) for v in views}
    atomic_write_bytes(output / "report.md", markdown(title, views, nums).encode())
    plot(output / "report.png", title, views, nums)
    return nums


def report_table(title: str, views: list[StageView], nums: dict[str, dict[str, Any]]) -> Any:
    """The report as a rich table (what `distill pipeline run` prints at the end)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("stage", "command", "key numbers", "wall"):
        table.add_column(col, justify="right" if col == "wall" else "left")
    for v in views:
        wall = f"{v.wall_s:.0f} s" if v.wall_s is not None else "-"
        table.add_row(v.name, v.command, summary(v, nums.get(v.name) or {}), wall)
    return table
