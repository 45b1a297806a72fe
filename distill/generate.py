"""`distill generate`: problems -> teacher requests -> trace shards, resumable.

    distill generate --teacher deepseek-r1 --dataset HuggingFaceH4/MATH-500 --split test \\
        --samples 4 --output traces/math500-r1

Rejection sampling: N samples per problem (one request with n=N), streamed through the
teacher; finished rows are written as atomic parquet shards of `chunk_size` problems. A rerun
rebuilds what is done from the shards on disk and asks only for the missing
(problem_id, sample_index) pairs, so a kill loses at most the rows not yet in a shard.

With `--until-correct K` (`--samples N` the ceiling) problems are sampled in rounds and each
finished request is verified with the filter's per-row checks as it arrives, until K samples
pass (distill/adaptive.py); every sample is kept with its verdict.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import dump_yaml, option, to_dict
from distill.errors import EnvFailure, UserError
from distill.filters.readability import RowChecksConfig
from distill.lock import output_lock
from distill.log import console, progress
from distill.problems import DatasetSpec, Problem, in_shard, load_problems, parse_shard
from distill.prompts import build_messages, join_completion, split_trace
from distill.records import (
    VERDICT,
    CorpusWriter,
    atomic_write_bytes,
    atomic_write_json,
    compact,
    done_index,
    read_corpus_or_empty,
    read_manifest,
    remove_corpus,
    shard_paths,
    with_verdict_column,
    write_table,
)
from distill.teachers import Request, Sample, Teacher, make_teacher, teacher_status
from distill.teachers.profile import TeacherProfile, load_profile
from distill.verify import VerifyConfig

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """What `distill generate` does; the teacher profile comes separately (name or file)."""

    output: Path = option(help="Corpus folder to write; an existing one is resumed.")
    data: DatasetSpec = field(default_factory=lambda: DatasetSpec(dataset="arith-demo"))
    teacher: str = option("tiny", help="Teacher profile: a shipped name or a YAML file.")
    samples: int = option(
        1,
        help="Responses per problem (rejection sampling), drawn with n=N; with --until-correct "
        "the most drawn for one problem.",
    )
    until_correct: int | None = option(
        None,
        help="Sample in rounds until K samples of a problem pass the filter's per-row checks "
        "(correctness + readability), at most --samples; every sample drawn is kept with its "
        "verdict.",
    )
    distinct: bool = option(
        True,
        help="With --until-correct: a completion identical to an earlier passing one of the "
        "same problem does not count toward K (`distill filter` drops exact duplicates); "
        "--no-distinct when the filter will run with --no-dedup.",
    )
    shard: str | None = option(
        None, help="Process shard I/N of the problems (0 <= I < N), e.g. one per Slurm task."
    )
    chunk_size: int = option(
        256, help="Problems per parquet shard: a kill loses at most the rows not yet in one."
    )
    overwrite: bool = option(False, help="Delete an existing corpus made with other settings.")
    retry_errors: bool = option(
        True, help="On a rerun, ask again for rows whose request failed (finish_reason 'error')."
    )
    push_to_hub: str | None = option(
        None, help="Push the corpus to this Hub dataset repo at the end."
    )
    private: bool = option(False, help="Create the Hub repo private.")
    progress: bool = option(True, help="Show a progress bar.", cli=False)
    report: bool = option(True, help="Print the summary table at the end.", cli=False)

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError("samples must be >= 1")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if self.until_correct is not None and not 1 <= self.until_correct <= self.samples:
            raise ValueError("until_correct must be between 1 and samples (the ceiling)")


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What defines a corpus: resuming with other values would mix two corpora in one."""
    source = manifest.get("source") or {}
    return {
        "teacher model": (manifest.get("teacher") or {}).get("model"),
        "sampling": manifest.get("sampling"),
        "prompts": manifest.get("prompts"),
        "dataset": {k: source.get(k) for k in ("dataset", "subset", "split", "domain")},
        "shard": manifest.get("shard"),
    }


def _check_existing(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    previous = read_manifest(out)
    if previous is None:
        if out.exists() and any(
            not p.name.startswith(".") and p.name != "logs" for p in out.iterdir()
        ):
            raise UserError(f"{out}: exists and is not a distill corpus (no manifest.json)")
        return
    changed = _diff(_identity(previous), _identity(manifest))
    if not changed:
        return
    if overwrite:
        log.warning("%s: --overwrite: deleting the corpus made with other settings", out)
        remove_corpus(out)
        return
    raise UserError(
        f"{out}: made with other settings ({'; '.join(changed)}); "
        "use --overwrite to start over or another --output"
    )


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Leaf-level differences as 'a.b: old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [
            d for k in keys for d in _diff(old.get(k), new.get(k), f"{path}.{k}" if path else k)
        ]
    return [] if old == new else [f"{path}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 120 else text[:117] + "..."


def _record(
    problem: Problem, messages: str, sample: Sample, teacher: str, sampling: str
) -> dict[str, Any]:
    completion = (
        ""
        if sample.finish_reason == "error"
        else join_completion(sample.text, sample.prefilled, sample.reasoning)
    )
    reasoning, answer = split_trace(completion)
    return {
        "id": f"{problem.problem_id}/{sample.sample_index}",
        "problem_id": problem.problem_id,
        "sample_index": sample.sample_index,
        "problem": problem.problem,
        "domain": problem.domain,
        "reference": problem.reference,
        "messages": messages,
        "completion": completion,
        "reasoning": reasoning,
        "answer": answer,
        "finish_reason": sample.finish_reason,
        "prompt_tokens": sample.prompt_tokens,
        "completion_tokens": sample.completion_tokens,
        "teacher": teacher,
        "sampling": sampling,
        "error": sample.error,
    }


def generate(
    cfg: GenerateConfig, profile: TeacherProfile | None = None, teacher: Teacher | None = None
) -> dict[str, Any]:
    """Generate (or resume) a trace corpus; returns the run's stats (also in stats.json)."""
    started = time.time()
    if cfg.push_to_hub:
        from distill.hub import check_token  # the Hub client and cards: only for a push

        check_token()  # a bad token fails now, not after a 10-hour run
    profile = profile or load_profile(cfg.teacher)
    shard = parse_shard(cfg.shard)
    problems, source = load_problems(cfg.data)
    problems = [p for p in problems if in_shard(p.problem_id, shard)]
    if not problems:
        raise UserError(f"--shard {cfg.shard}: no problems fall in this shard")
    templates = {d: profile.prompt_for(d) for d in sorted({p.domain for p in problems})}
    manifest = {
        "teacher": {"profile": profile.name, "model": profile.model, "backend": profile.backend},
        "sampling": to_dict(profile.sampling),
        "prompts": {d: to_dict(t) for d, t in templates.items()},
        "source": source,
        "samples": cfg.samples,
        "shard": cfg.shard,
    }
    if cfg.until_correct:
        manifest["until_correct"] = cfg.until_correct
    out = Path(cfg.output)
    with output_lock(out, "distill generate"):  # one writer per corpus: else rows go missing
        return _generate(cfg, profile, teacher, problems, templates, manifest, started)


def _generate(
    cfg: GenerateConfig,
    profile: TeacherProfile,
    teacher: Teacher | None,
    problems: list[Problem],
    templates: dict[str, Any],
    manifest: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    out = Path(cfg.output)
    _check_existing(out, manifest, cfg.overwrite)

    if (dropped := compact(out)) > 0:
        log.info("%s: dropped %d rows superseded by a later retry (killed mid-run)", out, dropped)
    if "created" in (previous := read_manifest(out) or {}):
        manifest["created"] = previous["created"]
    if cfg.until_correct:
        return _generate_adaptive(cfg, profile, teacher, problems, templates, manifest, started)
    done = done_index(out, retry_errors=cfg.retry_errors)
    todo = []
    for p in problems:
        missing = [i for i in range(cfg.samples) if i not in done.get(p.problem_id, ())]
        if missing:
            todo.append((p, missing))
    finished = len(problems) - len(todo)
    log.info(
        "%d problems x %d samples; %d problems already complete on disk, %d to generate",
        len(problems),
        cfg.samples,
        finished,
        len(todo),
    )
    if not todo:
        CorpusWriter(out, manifest)
        return _finish(out, cfg, profile, started, written=0, tokens=0)

    own_teacher = teacher is None
    teacher = teacher or make_teacher(profile)
    writer = CorpusWriter(out, manifest)
    sampling_json = json.dumps(to_dict(profile.sampling), sort_keys=True)
    by_key = {p.problem_id: p for p, _ in todo}
    messages = {
        p.problem_id: build_messages(
            p.problem, templates[p.domain].user, templates[p.domain].system
        )
        for p, _ in todo
    }
    requests = (
        Request(p.problem_id, messages[p.problem_id], missing, templates[p.domain].prefill)
        for p, missing in todo
    )
    buffer: list[dict[str, Any]] = []
    buffered_problems = written = tokens = 0
    reasons: Counter[str] = Counter()
    write_failed = False

    def flush() -> None:
        nonlocal buffer, buffered_problems, written, write_failed
        if buffer:
            try:
                writer.write_shard(buffer)
                writer.write_manifest()
            except (EnvFailure, UserError):
                write_failed = True  # a full disk: writing the same rows again fails again
                raise
            written += len(buffer)
            buffer, buffered_problems = [], 0

    bar = progress(
        "{task.fields[samples]} samples", "{task.fields[rate]} tok/s", disable=not cfg.progress
    )
    try:
        with bar:
            task = bar.add_task(
                "generate", total=len(problems), completed=finished, samples=0, rate="-"
            )
            t0 = time.time()
            for samples in teacher.generate(requests):
                problem = by_key[samples[0].key]
                msgs = json.dumps(messages[problem.problem_id], ensure_ascii=False)
                for s in samples:
                    buffer.append(_record(problem, msgs, s, teacher.model_name, sampling_json))
                    tokens += s.completion_tokens
                    reasons[s.finish_reason] += 1
                buffered_problems += 1
                rate = tokens / max(time.time() - t0, 1e-9)
                bar.update(
                    task,
                    advance=1,
                    samples=sum(reasons.values()),
                    rate=f"{rate:,.0f}",
                    status=teacher_status(teacher),
                )
                if buffered_problems >= cfg.chunk_size:
                    flush()
    finally:
        # Whatever finished is whole and worth keeping, even on Ctrl-C or a teacher error.
        if not write_failed:
            flush()
        if own_teacher:
            teacher.close()
    return _finish(out, cfg, profile, started, written=written, tokens=tokens)


def _generate_adaptive(
    cfg: GenerateConfig,
    profile: TeacherProfile,
    teacher: Teacher | None,
    problems: list[Problem],
    templates: dict[str, Any],
    manifest: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """--until-correct K: rounds per problem, each finished request verified as it arrives
    (distill/adaptive.py), until K samples pass or --samples are drawn."""
    from distill.adaptive import Scheduler, Verifier, accepts_idle, pass_rates

    out = Path(cfg.output)
    k, n = cfg.until_correct or 1, cfg.samples
    verifier = Verifier(VerifyConfig(), RowChecksConfig())
    try:
        states = _restore_states(out, problems, cfg.retry_errors, verifier, cfg.distinct)
        previous = (read_manifest(out) or {}).get("pass_rates") or {}
        for pid, s in states.items():
            s.rounds = (previous.get(pid) or {}).get("rounds", 0)
        messages = {
            p.problem_id: build_messages(
                p.problem, templates[p.domain].user, templates[p.domain].system
            )
            for p in problems
        }
        prefill = {p.problem_id: templates[p.domain].prefill for p in problems}
        own_teacher = teacher is None
        sched = Scheduler(states, k, n, verifier, False, messages, prefill, cfg.distinct)
        log.info(
            "%d problems, until %d pass (at most %d samples each); %d problems to sample",
            len(problems), k, n, len(sched.ready),
        )  # fmt: skip
        manifest["pass_rates"] = pass_rates(states)
        manifest["adaptive"] = _adaptive_summary(sched, k, n)
        writer = CorpusWriter(out, manifest)
        if not sched.ready:
            return _finish(out, cfg, profile, started, written=0, tokens=0)
        teacher = teacher or make_teacher(profile)
        sched.idle_ok = accepts_idle(teacher)
        sampling_json = json.dumps(to_dict(profile.sampling), sort_keys=True)
        by_key = {p.problem_id: p for p in problems}
        written = tokens = requests_since_flush = 0
        reasons: Counter[str] = Counter()
        write_failed = False

        def flush(rows: list[dict[str, Any]]) -> None:
            nonlocal written, write_failed, requests_since_flush
            writer.manifest["pass_rates"] = pass_rates(states)
            writer.manifest["adaptive"] = _adaptive_summary(sched, k, n)
            if rows:
                try:
                    writer.write_shard(rows)
                    writer.write_manifest()
                except (EnvFailure, UserError):
                    write_failed = True
                    raise
                written += len(rows)
            requests_since_flush = 0

        bar = progress(
            "{task.fields[samples]} samples", "{task.fields[rate]} tok/s",
            disable=not cfg.progress,
        )  # fmt: skip
        try:
            with bar:
                task = bar.add_task("generate", total=len(problems), completed=sched.finished,
                                    samples=0, rate="-")  # fmt: skip
                t0 = time.time()
                while not sched.done():
                    for samples in teacher.generate(sched.stream()):
                        problem = by_key[samples[0].key]
                        msgs = json.dumps(messages[problem.problem_id], ensure_ascii=False)
                        records = [
                            _record(problem, msgs, s, teacher.model_name, sampling_json)
                            for s in samples
                        ]
                        sched.returned(records)
                        tokens += sum(s.completion_tokens for s in samples)
                        reasons.update(s.finish_reason for s in samples)
                        requests_since_flush += 1
                        rate = tokens / max(time.time() - t0, 1e-9)
                        bar.update(task, completed=sched.finished, samples=sum(reasons.values()),
                                   rate=f"{rate:,.0f}", status=teacher_status(teacher))  # fmt: skip
                        if requests_since_flush >= cfg.chunk_size:
                            flush(sched.take_rows())
                    if sched.inflight:
                        raise EnvFailure(
                            f"teacher {teacher.model_name}: the request stream ended with "
                            f"{sched.inflight} requested samples not returned"
                        )
                bar.update(task, completed=sched.finished)
        finally:
            # rows still waiting for a verdict are written without one (a rerun verifies them)
            if not write_failed:
                rows = sched.take_rows() + [{**r, "verdict": None} for r in sched.pending.values()]
                flush(rows)
            if own_teacher:
                teacher.close()
        return _finish(out, cfg, profile, started, written=written, tokens=tokens,
                       extra={"adaptive": writer.manifest["adaptive"]})  # fmt: skip
    finally:
        verifier.close()


def _adaptive_summary(sched: Any, k: int, n: int) -> dict[str, Any]:
    states = sched.states.values()
    return {
        "until_correct": k,
        "samples_max": n,
        "problems": len(sched.states),
        "reached_k": sum(s.passed >= k for s in states),
        "at_least_one": sum(s.passed >= 1 for s in states),
        "samples_drawn": sum(s.samples for s in states),
        "teacher_tokens": sum(s.tokens for s in states),
        "rounds_max": max((s.rounds for s in states), default=0),
        "rounds_mean": round(statistics.fmean([s.rounds for s in states]), 2) if states else 0,
        **sched.summary(),
    }


def _restore_states(
    out: Path, problems: list[Problem], retry_errors: bool, verifier: Any, distinct: bool
) -> dict[str, Any]:
    """Per-problem state from the rows on disk; rows without a verdict (a fixed-N run, or a
    run stopped mid-verification) are verified now."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.adaptive import ProblemState, restore, verdict_of

    states = {p.problem_id: ProblemState(p) for p in problems}
    unverified: list[dict[str, Any]] = []
    lacking: list[Path] = []  # shards holding rows without a verdict: rewritten with theirs
    for path in shard_paths(out):
        names = pq.read_schema(path).names
        rows = pq.read_table(path).to_pylist() if names else []
        missing = [r for r in rows if not r.get(VERDICT)]
        lacking += [path] if missing else []
        for row in rows:
            s = states.get(row["problem_id"])
            if s is None or (retry_errors and row["finish_reason"] == "error"):
                continue
            if row.get(VERDICT):
                restore(s, row, json.loads(row[VERDICT]), distinct)
            else:
                unverified.append(row)
    verdicts: dict[str, str] = {}
    if unverified:
        log.info("verifying %d rows on disk that have no verdict", len(unverified))
        verifier.submit(unverified)
        waiting = {r["id"]: r for r in unverified}
        while waiting:
            key, checks = verifier.verdicts.get()
            if verifier.error is not None:
                raise verifier.error
            row = waiting.pop(key)
            verdict = verdict_of(checks)
            restore(states[row["problem_id"]], row, verdict, distinct)
            verdicts[key] = json.dumps(verdict, ensure_ascii=False, default=str)
    for path in lacking:  # each shard switched whole: a kill here leaves it to the next rerun
        table = with_verdict_column(pq.read_table(path))
        column = [v or verdicts.get(i) for v, i in zip(table[VERDICT].to_pylist(),
                                                       table["id"].to_pylist(), strict=True)]  # fmt: skip
        index = table.schema.get_field_index(VERDICT)
        write_table(path, table.set_column(index, VERDICT, pa.array(column, pa.string())))
    return states


def _finish(
    out: Path,
    cfg: GenerateConfig,
    profile: TeacherProfile,
    started: float,
    written: int,
    tokens: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Final manifest, stats.json and the resolved config, all recomputed from disk."""
    compact(out)  # error rows that were retried give way to their replacements
    manifest = read_manifest(out) or {}
    writer = CorpusWriter(out, manifest)  # refreshes counts from the shards
    table = read_corpus_or_empty(out, ["completion_tokens", "completion", "finish_reason"])
    ctoks = table.column("completion_tokens").to_pylist()
    chars = [len(c) for c in table.column("completion").to_pylist()]
    wall = time.time() - started

    def summary(values: list[int]) -> dict[str, float]:
        if not values:
            return {"min": 0, "mean": 0, "max": 0}
        return {"min": min(values), "mean": round(statistics.fmean(values), 1), "max": max(values)}

    stats = {
        "rows": writer.manifest["counts"]["rows"],
        "problems": writer.manifest["counts"]["problems"],
        "rows_written_this_run": written,
        "completion_tokens_this_run": tokens,
        "wall_time_s": round(wall, 2),
        "output_tokens_per_s": round(tokens / wall, 1) if wall > 0 else 0.0,
        "finish_reasons": writer.manifest["counts"]["finish_reasons"],
        "completion_tokens": summary(ctoks),
        "completion_chars": summary(chars),
        **(extra or {}),
    }
    atomic_write_json(out / "stats.json", stats)
    resolved = {"generate": to_dict(cfg), "teacher": to_dict(profile)}
    atomic_write_bytes(
        out / "config.yaml", dump_yaml(resolved).encode()
    )
    if cfg.report:
        _print_summary(out, stats)
    if cfg.push_to_hub:
        from distill.hub import push_dataset

        push_dataset(out, cfg.push_to_hub, private=cfg.private)
    return stats


def _print_summary(out: Path, stats: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"distill generate → {out}", show_header=False)
    table.add_row("rows in corpus", f"{stats['rows']:,} ({stats['problems']:,} problems)")
    table.add_row("rows written this run", f"{stats['rows_written_this_run']:,}")
    table.add_row("output tokens this run", f"{stats['completion_tokens_this_run']:,}")
    table.add_row(
        "wall time", f"{stats['wall_time_s']:.1f} s ({stats['output_tokens_per_s']:,.0f} tok/s)"
    )
    table.add_row(
        "finish reasons",
        ", ".join(f"{k} {v:,}" for k, v in sorted(stats["finish_reasons"].items())),
    )
    table.add_row(
        "completion tokens",
        "min {min} / mean {mean} / max {max}".format(**stats["completion_tokens"]),
    )
    console.print(table)
