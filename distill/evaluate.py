"""`distill eval`: pass@1 over k samples, cons@k and pass@k, as the R1 paper reports them.

    distill eval --model ckpt/r1-distill-7b --benchmark aime24,math500,gpqa-diamond --samples 16 --output results/7b
    distill eval --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --base-url http://node:8000/v1 --benchmark aime24 ...

Generation goes through `distill generate` (vLLM in-process, or a served model with
--base-url), with the model's own chat template, the R1 instruction and the `<think>\\n`
prefill, and R1 sampling (T=0.6, top_p=0.95); it resumes like generate. Verification goes
through the same service as `distill filter` (`verify_rows`: worker processes, hard timeouts,
the sandbox for code). Results: a table, results.json, results.md, per-sample verdicts (parquet) and, for a
local model folder, eval_results.md beside the weights for `distill push` to put in the card.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import ASSETS, option, to_dict
from distill.errors import UserError
from distill.generate import GenerateConfig, generate
from distill.log import console
from distill.metrics import benchmark_metrics
from distill.problems import DatasetSpec, load_problems
from distill.records import (
    atomic_write_bytes,
    atomic_write_json,
    iter_rows,
    read_corpus,
    write_table,
)
from distill.teachers import make_teacher
from distill.teachers.profile import TeacherProfile
from distill.verify import VerifyConfig
from distill.verify.service import verify_rows

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What `distill eval` measures; the model and its engine/sampling are teacher-profile flags."""

    benchmark: list[str] = option(
        help="Benchmarks: built-in names (aime24, aime25, math500, gpqa-diamond, gsm8k, amc23, "
        "humaneval), local files or Hub ids with problem/answer columns."
    )
    output: Path = option(help="Results folder (resumable).")
    samples: int = option(16, help="Samples per problem (k): pass@1 is averaged over them.")
    limit: int | None = option(None, help="Only the first N problems of each benchmark.")
    profile: str | None = option(
        None, help="Start from a teacher profile's engine settings (e.g. r1-distill-qwen-32b)."
    )
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    progress: bool = option(True, help="Show progress bars.", cli=False)

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError("samples must be >= 1")
        if not self.benchmark:
            raise ValueError("give at least one --benchmark")


def bench_name(bench: str) -> str:
    p = Path(bench)
    return p.stem if p.suffix or p.exists() else bench.replace("/", "__")


def _verdicts(cfg: EvalConfig, name: str, corpus: Path) -> list[dict[str, Any]]:
    """Correctness of every sample, through the verification service (workers, hard timeouts,
    the sandbox for code; cached under OUTPUT/verdicts/ so a rerun is cheap)."""

    columns = ["id", "problem_id", "sample_index", "problem", "domain", "reference",
               "completion", "answer", "finish_reason", "completion_tokens"]  # fmt: skip
    samples = list(iter_rows(read_corpus(corpus, columns=columns)))
    checks = verify_rows(
        samples, cfg.verify, cache_dir=cfg.output / "verdicts" / name, total=len(samples),
        show_progress=cfg.progress, label=f"verify {name}",
    )  # fmt: skip
    rows = []
    for s in samples:
        c = checks[s["id"]]["correctness"]
        rows.append({
            "id": s["id"], "problem_id": s["problem_id"], "sample_index": s["sample_index"],
            "correct": c.get("ok"), "reason": c.get("reason"), "extracted": c.get("extracted"),
            "finish_reason": s["finish_reason"], "completion_tokens": s["completion_tokens"],
        })  # fmt: skip
    return sorted(rows, key=lambda r: (r["problem_id"], r["sample_index"]))


def _summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    per_problem: dict[str, list[tuple[bool | None, str | None]]] = defaultdict(list)
    for r in rows:
        per_problem[r["problem_id"]].append((r["correct"], r["extracted"]))
    metrics = benchmark_metrics(per_problem)
    tokens = [r["completion_tokens"] or 0 for r in rows]
    metrics["mean_response_tokens"] = round(statistics.fmean(tokens), 1) if tokens else 0.0
    metrics["truncated_share"] = sum(r["finish_reason"] == "length" for r in rows) / max(
        1, len(rows)
    )
    metrics["unverifiable"] = sum(r["correct"] is None for r in rows)
    return metrics


def markdown(results: dict[str, dict[str, Any]], model: str) -> str:
    lines = [
        f"Evaluated `{model}` with distill (R1 protocol: T=0.6, top-p 0.95, pass@1 averaged over k samples).",
        "",
        "| benchmark | problems | k | pass@1 (%) | ± s.e. | cons@k (%) | pass@k (%) | mean tokens | truncated (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in results.items():
        k = m["samples"]
        lines.append(
            f"| {name} | {m['problems']} | {k} | {100 * m['pass@1']:.1f} | {100 * m['pass@1_stderr']:.1f} | "
            f"{100 * m[f'cons@{k}']:.1f} | {100 * m[f'pass@{k}']:.1f} | {m['mean_response_tokens']:.0f} | {100 * m['truncated_share']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def evaluate(cfg: EvalConfig, profile: TeacherProfile, teacher: Any = None) -> dict[str, Any]:
    """Generate k samples per problem for each benchmark, verify, report; returns results.json."""
    import pyarrow as pa

    started = time.time()
    names = [bench_name(b) for b in cfg.benchmark]
    if len(set(names)) != len(names):
        raise UserError(f"--benchmark: two benchmarks share a name ({', '.join(names)})")
    own = teacher is None
    results: dict[str, dict[str, Any]] = {}
    try:
        for bench, name in zip(cfg.benchmark, names, strict=True):
            corpus = cfg.output / "generations" / name
            gcfg = GenerateConfig(
                output=corpus,
                data=DatasetSpec(dataset=bench, limit=cfg.limit),
                samples=cfg.samples,
                progress=cfg.progress,
            )
            if teacher is None:
                load_problems(gcfg.data)  # a bad benchmark fails before the engine starts
                teacher = make_teacher(profile)
            log.info("%s: generating %d samples per problem", name, cfg.samples)
            generate(gcfg, profile, teacher)
            rows = _verdicts(cfg, name, corpus)
            (cfg.output / "samples").mkdir(parents=True, exist_ok=True)
            write_table(cfg.output / "samples" / f"{name}.parquet", pa.Table.from_pylist(rows))
            results[name] = _summarize(rows)
    finally:
        if own and teacher is not None:
            teacher.close()
    report = {
        "model": profile.model,
        "sampling": to_dict(profile.sampling),
        "benchmarks": results,
        "wall_time_s": round(time.time() - started, 1),
    }
    atomic_write_json(cfg.output / "results.json", report)
    text = markdown(results, profile.model)
    atomic_write_bytes(cfg.output / "results.md", text.encode())
    model_dir = Path(profile.model).resolve()
    # results go beside the weights for `distill push`'s card, but never into the package
    if (model_dir / "config.json").is_file() and ASSETS.resolve() not in model_dir.parents:
        atomic_write_bytes(model_dir / "eval_results.md", text.encode())
        atomic_write_json(model_dir / "eval_results.json", report)
    _print(results, profile.model)
    return report


def _print(results: dict[str, dict[str, Any]], model: str) -> None:
    from rich.table import Table

    table = Table(title=f"distill eval: {model}")
    for col in (
        "benchmark",
        "problems",
        "k",
        "pass@1",
        "cons@k",
        "pass@k",
        "mean tokens",
        "truncated",
    ):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for name, m in results.items():
        k = m["samples"]
        table.add_row(
            name, str(m["problems"]), str(k), f"{100 * m['pass@1']:.1f} ± {100 * m['pass@1_stderr']:.1f}",
            f"{100 * m[f'cons@{k}']:.1f}", f"{100 * m[f'pass@{k}']:.1f}", f"{m['mean_response_tokens']:.0f}",
            f"{100 * m['truncated_share']:.1f}%",
        )  # fmt: skip
    console.print(table)
