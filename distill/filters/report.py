"""The filter report: counts per reason and per domain, hard problems, lengths; as
report.json, report.md, stats.json, a length plot and a table on the terminal."""

from __future__ import annotations

import io
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.config import to_dict
from distill.filters.corpus_checks import REASONS as CORPUS
from distill.filters.corpus_checks import row_length
from distill.filters.readability import RULES
from distill.log import console
from distill.records import atomic_write_bytes, atomic_write_json
from distill.verify import REASONS as VERIFY

if TYPE_CHECKING:
    from distill.filter import FilterConfig


def reason_meanings() -> dict[str, str]:
    """Every reason a row can be rejected for, with its meaning, from the checks that give it."""
    return {**VERIFY, **{name: rule.meaning for name, rule in RULES.items()}, **CORPUS}


class Tally:
    """The report's row counts, added up as the rows are written: counters and a histogram
    of lengths (its distinct values, not one entry a row), so memory stays flat."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()
        self.domains: dict[str, Counter[str]] = defaultdict(Counter)
        self.correct: Counter[str] = Counter()
        self.lengths: dict[str, Counter[int]] = {"kept": Counter(), "rejected": Counter()}
        self.overturned = 0  # math-verify's rejections the judge overturned (--judge-wrong)

    def add(self, decision: dict[str, Any], row: dict[str, Any]) -> None:
        split = "kept" if decision["kept"] else "rejected"
        self.reasons.update(decision["reasons"])
        self.domains[row["domain"]]["in"] += 1
        self.domains[row["domain"]][split] += 1
        c = decision["correct"]
        self.correct[str(c).lower() if c is not None else "null"] += 1
        self.lengths[split][row_length(row)] += 1
        self.overturned += bool(decision["checks"]["correctness"].get("overturned"))


def _summary(values: Counter[int]) -> dict[str, Any]:
    """count, min, mean, median, max of a histogram, as `statistics` gives them on the values."""
    count = values.total()
    if not count:
        return {"count": 0, "min": 0, "mean": 0, "median": 0, "max": 0}
    ordered = sorted(values.items())

    def nth(i: int) -> int:  # the i-th smallest value (0-based)
        for value, n in ordered:
            if i < n:
                return value
            i -= n
        raise IndexError(i)

    half = count // 2
    median = nth(half) if count % 2 else (nth(half - 1) + nth(half)) / 2
    return {
        "count": count,
        "min": ordered[0][0],
        "mean": round(sum(v * n for v, n in ordered) / count, 1),
        "median": median,
        "max": ordered[-1][0],
    }


def build_report(
    cfg: FilterConfig,
    tally: Tally,
    info: dict[str, Any],
    input_key: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    meanings = reason_meanings()
    total = sum(c["in"] for c in tally.domains.values())
    kept = tally.lengths["kept"].total()
    return {
        "input": input_key,
        "counts": {
            "in": total,
            "kept": kept,
            "rejected": total - kept,
            "kept_fraction": round(kept / total, 4) if total else 0.0,
        },
        "reasons": dict(tally.reasons.most_common()),
        "domains": {
            d: {"in": c["in"], "kept": c["kept"], "rejected": c["rejected"]}
            for d, c in sorted(tally.domains.items())
        },
        "correct": dict(tally.correct),
        "problems": {
            "total": info["problems"],
            "with_kept_samples": info["problems"] - len(info["nothing_passed"]),
            "nothing_passed": info["nothing_passed"],
        },
        "contaminated": [{"problem_id": k, **v} for k, v in info["contaminated_problems"].items()],
        "near_duplicate_problems": [
            {"problem_id": k, **v} for k, v in info["near_duplicate_problems"].items()
        ],
        "lengths_tokens": {k: _summary(v) for k, v in tally.lengths.items()},
        # problem id -> {correct, verified, samples}: what `distill rl --pass-rate-band` reads
        "pass_rates": info.get("pass_rates", {}),
        "pass_rate_histogram": pass_rate_histogram(info.get("pass_rates", {})),
        "reason_vocabulary": {r: meanings.get(r, "") for r in tally.reasons},
        "config": to_dict(cfg),
        "wall_time_s": round(time.time() - started, 2),
    }


def pass_rate_histogram(rates: dict[str, dict[str, int]]) -> dict[str, int]:
    """Problems per pass-rate band (correct / verified); `unmeasured`: nothing verified."""
    labels = ["0", "(0, 0.25]", "(0.25, 0.5]", "(0.5, 0.75]", "(0.75, 1)", "1", "unmeasured"]
    out = dict.fromkeys(labels, 0)
    for r in rates.values():
        if not r["verified"]:
            out["unmeasured"] += 1
            continue
        p = r["correct"] / r["verified"]
        i = 0 if p == 0 else 5 if p == 1 else 1 + min(3, int((p - 1e-12) // 0.25))
        out[labels[i]] += 1
    return out


def _with_meanings(report: dict[str, Any]) -> list[tuple[str, int, str]]:
    meanings = report.get("reason_vocabulary") or reason_meanings()
    return [(r, n, meanings.get(r, "")) for r, n in report["reasons"].items()]


def markdown(report: dict[str, Any]) -> str:
    c = report["counts"]
    lines = [
        "# Filter report",
        "",
        f"Input: `{report['input']['path']}`: {c['in']:,} rows, {report['problems']['total']:,} problems.",
        "",
        "| rows | count | share |",
        "|---|---:|---:|",
        f"| in | {c['in']:,} | 100% |",
        f"| kept | {c['kept']:,} | {100 * c['kept_fraction']:.1f}% |",
        f"| rejected | {c['rejected']:,} | {100 * (1 - c['kept_fraction']):.1f}% |",
        "",
        "## Rejections by reason",
        "",
        "A row counts under every reason it failed, so these can add up to more than the rejected rows.",
        "",
        "| reason | rows | meaning |",
        "|---|---:|---|",
        *(f"| `{r}` | {n:,} | {meaning} |" for r, n, meaning in _with_meanings(report)),
        "",
        *(
            [
                f"{report['judge_overturned']:,} rows are correct only because the judge overturned "
                "math-verify (`--judge-wrong`).",
                "",
            ]
            if report.get("judge_overturned")
            else []
        ),
        "## By domain",
        "",
        "| domain | in | kept | rejected |",
        "|---|---:|---:|---:|",
        *(
            f"| {d} | {v['in']:,} | {v['kept']:,} | {v['rejected']:,} |"
            for d, v in report["domains"].items()
        ),
        "",
        "## Lengths (tokens)",
        "",
        "| split | count | min | median | mean | max |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {k} | {v['count']:,} | {v['min']:,} | {v['median']:,} | {v['mean']:,} | {v['max']:,} |"
            for k, v in report["lengths_tokens"].items()
        ),
        "",
        "![lengths](lengths.png)",
        "",
        "## Pass rates per problem (verified-correct samples / verified samples)",
        "",
        "| pass rate | problems |",
        "|---|---:|",
        *(f"| {k} | {n:,} |" for k, n in report.get("pass_rate_histogram", {}).items()),
        "",
        f"## Hard problems: no sample passed ({len(report['problems']['nothing_passed']):,})",
        "",
    ]
    hard = report["problems"]["nothing_passed"]
    lines += [f"- `{pid}`" for pid in hard[:200]] or ["none"]
    if len(hard) > 200:
        lines.append(f"- ... and {len(hard) - 200:,} more (report.json has them all)")
    if report["contaminated"]:
        lines += [
            "",
            "## Contaminated problems",
            "",
            "| problem | benchmark | matching n-gram |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{x['problem_id']}` | {x['benchmark']} | {x['ngram']} |"
            for x in report["contaminated"]
        ]
    return "\n".join(lines) + "\n"


def plot_lengths(path: Path, tally: Tally) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept, rejected = tally.lengths["kept"], tally.lengths["rejected"]
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max([*kept, *rejected, 1])
    bins = [top * i / 40 for i in range(41)]
    ax.hist(  # each distinct length once, weighted by its rows: the same bars as every row
        [list(kept), list(rejected)],
        bins=bins,
        weights=[list(kept.values()), list(rejected.values())],
        label=[f"kept ({kept.total():,})", f"rejected ({rejected.total():,})"],
        color=["tab:green", "tab:red"],
        alpha=0.8,
    )
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("rows")
    ax.set_title("Completion lengths: kept vs rejected")
    ax.legend()
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())


def write_report(out: Path, report: dict[str, Any], tally: Tally) -> None:
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    stats = {
        "counts": report["counts"],
        "lengths_tokens": report["lengths_tokens"],
        "wall_time_s": report["wall_time_s"],
    }
    atomic_write_json(out / "stats.json", stats)
    plot_lengths(out / "lengths.png", tally)


def print_report(report: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    c = report["counts"]
    table = Table(title=f"distill filter → {out}")
    table.add_column("rows")
    table.add_column("count", justify="right")
    table.add_row("in", f"{c['in']:,}")
    table.add_row("kept", f"{c['kept']:,} ({100 * c['kept_fraction']:.1f}%)")
    table.add_row("rejected", f"{c['rejected']:,}")
    for reason, n in report["reasons"].items():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row(
        "problems with nothing kept",
        f"{len(report['problems']['nothing_passed']):,} / {report['problems']['total']:,}",
    )
    console.print(table)
