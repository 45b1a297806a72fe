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
from distill.errors import EnvFailure, UserError
from distill.generate import GenerateConfig, generate
from distill.lock import output_lock
from distill.log import console
from distill.metrics import benchmark_metrics
from distill.plots import bars
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
    samples: int | None = option(
        None,
        help="Samples per problem (k), pass@1 averaged over them; default per benchmark as R1 "
        "(64 for AIME/AMC, 16 for GPQA/LiveCodeBench/HumanEval, 4 for MATH-500/GSM8K, else 16).",
    )
    limit: int | None = option(None, help="Only the first N problems of each benchmark.")
    release: str | None = option(
        None,
        help="LiveCodeBench release (default release_v6): release_v1..release_v6 (cumulative) "
        "or v1..v6 (one file).",
    )
    date_from: str | None = option(
        None,
        help="Only problems dated on or after this ISO date (LiveCodeBench default: R1's "
        "2024-08-01); applies to every benchmark of the run.",
    )
    date_to: str | None = option(
        None, help="Only problems dated on or before this ISO date (LiveCodeBench: 2025-01-31)."
    )
    profile: str | None = option(
        None, help="Start from a teacher profile's engine settings (e.g. r1-distill-qwen-32b)."
    )
    max_failed_share: float = option(
        0.02,
        help="Most failed requests (server errors, timeouts, prompts over max_model_len) a "
        "benchmark may have and still be scored; above it the eval stops without a score.",
    )
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    progress: bool = option(True, help="Show progress bars.", cli=False)
    report: bool = option(True, help="Print the results table at the end.", cli=False)

    def __post_init__(self) -> None:
        if self.samples is not None and self.samples < 1:
            raise ValueError("samples must be >= 1")
        if not 0 <= self.max_failed_share < 1:
            raise ValueError("max_failed_share must be in [0, 1)")
        if not self.benchmark:
            raise ValueError("give at least one --benchmark")


# R1 (paper, sec. 3.1): "k responses (typically between 4 and 64, depending on the test set
# size)", AIME with 64 (its cons@64); between those, fewer samples for larger sets.
BENCHMARK_SAMPLES = {"aime24": 64, "aime25": 64, "amc23": 64, "gpqa-diamond": 16,
                     "livecodebench": 16, "humaneval": 16, "math500": 4, "gsm8k": 4}  # fmt: skip
DEFAULT_SAMPLES = 16


def samples_for(cfg: EvalConfig, bench: str) -> int:
    return cfg.samples or BENCHMARK_SAMPLES.get(bench, DEFAULT_SAMPLES)


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
            "judge_overturned": bool(c.get("overturned")),
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
    metrics["failed"] = sum(r["finish_reason"] == "error" for r in rows)  # counted as wrong
    # correct only because the judge overturned math-verify (--judge-wrong): reported apart
    metrics["judge_overturned"] = sum(r.get("judge_overturned", False) for r in rows)
    return metrics


def _check_failures(name: str, corpus: Path, allowed: float) -> None:
    """A score over samples whose requests failed measures the endpoint, not the model: past a
    small share, stop before verifying and write no score (a rerun retries the failed ones)."""
    from collections import Counter

    table = read_corpus(corpus, columns=["finish_reason", "error"])
    failed = [e for r, e in zip(*(table.column(c).to_pylist() for c in ("finish_reason", "error")),
                                strict=True) if r == "error"]  # fmt: skip
    if len(failed) > allowed * table.num_rows:
        cause, _ = Counter(str(e).splitlines()[0][:200] for e in failed).most_common(1)[0]
        raise EnvFailure(
            f"{name}: {len(failed)} of {table.num_rows} samples failed to generate (most often: {cause}); "
            "no score written; rerun the same command to retry them"
        )


def markdown(results: dict[str, dict[str, Any]], model: str) -> str:
    lines = [
        f"Evaluated `{model}` with distill (R1 protocol: T=0.6, top-p 0.95, pass@1 averaged over k samples).",
        "",
        "| benchmark | problems | k | pass@1 (%) | ± s.e. | 95% CI | cons@k (%) | pass@k (%) | mean tokens | truncated (%) | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in results.items():
        k = m["samples"]
        lines.append(
            f"| {name} | {m['problems']} | {k} | {100 * m['pass@1']:.1f} | {100 * m['pass@1_stderr']:.1f} | "
            f"{100 * m['pass@1_ci95'][0]:.1f}-{100 * m['pass@1_ci95'][1]:.1f} | "
            f"{100 * m[f'cons@{k}']:.1f} | {100 * m[f'pass@{k}']:.1f} | {m['mean_response_tokens']:.0f} | {100 * m['truncated_share']:.1f} | {m['failed']} |"
        )
    overturned = {n: m["judge_overturned"] for n, m in results.items() if m.get("judge_overturned")}
    if overturned:  # correct only by the judge's word (--judge-wrong): shown apart
        lines += ["", "Counted correct because the judge overturned math-verify: " + ", ".join(
            f"{n} {c} samples" for n, c in overturned.items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def evaluate(cfg: EvalConfig, profile: TeacherProfile, teacher: Any = None) -> dict[str, Any]:
    """Generate k samples per problem for each benchmark, verify, report; returns results.json."""
    started = time.time()
    names = [bench_name(b) for b in cfg.benchmark]
    if len(set(names)) != len(names):
        raise UserError(f"--benchmark: two benchmarks share a name ({', '.join(names)})")
    # every benchmark is checked before the engine starts or anything is generated
    specs = [
        DatasetSpec(dataset=bench, limit=cfg.limit, release=cfg.release,
                    date_from=cfg.date_from, date_to=cfg.date_to)
        for bench in cfg.benchmark
    ]
    domains = [sorted({p.domain for p in load_problems(spec)[0]}) for spec in specs]
    with output_lock(cfg.output, "distill eval"):
        return _evaluate(cfg, profile, teacher, dict(zip(names, specs, strict=True)), started,
                         dict(zip(names, domains, strict=True)))  # fmt: skip


def _evaluate(
    cfg: EvalConfig,
    profile: TeacherProfile,
    teacher: Any,
    benchmarks: dict[str, DatasetSpec],
    started: float,
    domains: dict[str, list[str]],
) -> dict[str, Any]:
    import pyarrow as pa

    own = teacher is None
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, spec in benchmarks.items():
            corpus = cfg.output / "generations" / name
            gcfg = GenerateConfig(output=corpus, data=spec, samples=samples_for(cfg, name),
                                  progress=cfg.progress, report=False)  # fmt: skip
            if teacher is None:
                teacher = make_teacher(profile)
            log.info("%s: generating %d samples per problem", name, samples_for(cfg, name))
            generate(gcfg, profile, teacher)
            _check_failures(name, corpus, cfg.max_failed_share)
            rows = _verdicts(cfg, name, corpus)
            (cfg.output / "samples").mkdir(parents=True, exist_ok=True)
            write_table(cfg.output / "samples" / f"{name}.parquet", pa.Table.from_pylist(rows))
            results[name] = _summarize(rows)
            # which prompt the model saw: R1's per domain unless the profile changed it
            results[name]["prompts"] = {d: to_dict(profile.prompt_for(d)) for d in domains[name]}
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
    bars(cfg.output / "pass_at_1.png", {n: 100 * m["pass@1"] for n, m in results.items()},
         intervals={n: (100 * m["pass@1_ci95"][0], 100 * m["pass@1_ci95"][1]) for n, m in results.items()},
         title=f"{profile.model}: pass@1 with 95% bootstrap intervals", ylabel="pass@1 (%)")  # fmt: skip
    model_dir = Path(profile.model).resolve()
    # results go beside the weights for `distill push`'s card, but never into the package
    if (model_dir / "config.json").is_file() and ASSETS.resolve() not in model_dir.parents:
        atomic_write_bytes(model_dir / "eval_results.md", text.encode())
        atomic_write_json(model_dir / "eval_results.json", report)
    if cfg.report:
        _print(results, profile.model)
        if (cfg.output / "pass_at_1.png").is_file():
            console.print(f"plot: {cfg.output / 'pass_at_1.png'}", soft_wrap=True)
    return report


def _print(results: dict[str, dict[str, Any]], model: str) -> None:
    from rich import box
    from rich.table import Table

    # problems x samples beside the name, light borders: the table fits an 80-column terminal
    # (pass@k and the rest are in results.md)
    table = Table(title=f"distill eval: {model}", box=box.SIMPLE_HEAD)
    table.add_column("benchmark (problems x k)", min_width=16)
    for col in ("pass@1", "95% CI", "cons@k", "tokens", "truncated", "failed"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, m in results.items():
        k = m["samples"]
        table.add_row(
            f"{name} ({m['problems']} x {k})", f"{100 * m['pass@1']:.1f}±{100 * m['pass@1_stderr']:.1f}",
            f"{100 * m['pass@1_ci95'][0]:.1f}-{100 * m['pass@1_ci95'][1]:.1f}",
            f"{100 * m[f'cons@{k}']:.1f}", f"{m['mean_response_tokens']:.0f}",
            f"{100 * m['truncated_share']:.0f}%", str(m["failed"]),
        )  # fmt: skip
    console.print(table)
