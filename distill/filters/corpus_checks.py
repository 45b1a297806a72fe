"""Corpus-level checks: duplicates, contamination, then which passing samples to keep.

Row verdicts arrive from the per-row checks; this step adds the checks that need the whole
corpus, gathers every reason of each row (all of them, not only the first) and applies the
per-problem selection policy among the samples that passed everything.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from distill.config import option
from distill.filters.decontam import BenchmarkIndex, build_index
from distill.filters.dedup import exact_duplicates, near_duplicate_problems
from distill.filters.readability import CHARS_PER_TOKEN

# The reasons these checks give, as reports explain them.
REASONS = {
    "duplicate": "an exact duplicate completion, or a near-duplicate of an earlier problem",
    "contaminated": "shares an n-gram with a benchmark problem",
    "not_selected": "passed, but the per-problem selection kept other samples",
}


@dataclass
class CorpusConfig:
    """Checks across the corpus and the per-problem selection."""

    keep: str = option(
        "all",
        help="Samples kept per problem among passing ones: all, shortest, longest, first, random:K.",
    )
    seed: int = option(0, help="Seed of --keep random:K.")
    dedup: bool = option(True, help="Reject exact duplicate completions (the first is kept).")
    near_dup_threshold: float = option(
        0.8,
        help="Jaccard (MinHash, word 3-grams) at which a problem duplicates an earlier one; 0 turns it off.",
    )
    decontaminate: list[str] = option(
        default_factory=list,
        help="Benchmarks to decontaminate against: files, Hub ids or built-in names.",
    )
    contamination_ngram: int = option(8, help="n of the word n-grams shared with a benchmark.")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"all|shortest|longest|first|random:[1-9]\d*", self.keep):
            raise ValueError(
                f"corpus.keep must be all, shortest, longest, first or random:K, got {self.keep!r}"
            )


def row_reasons(checks: dict[str, dict[str, Any]], keep_unverified: bool) -> list[str]:
    """Every failing reason of a row's own checks; an undecided correctness counts unless allowed."""
    reasons = [v["reason"] for v in checks.values() if v.get("ok") is False and v.get("reason")]
    c = checks.get("correctness", {})
    if c.get("ok") is None and c.get("reason") and not keep_unverified:
        reasons.insert(0, c["reason"])
    return list(dict.fromkeys(reasons))


def select(
    candidates: list[tuple[str, int, int]], policy: str, seed: int, problem_id: str
) -> set[str]:
    """(id, sample_index, length) of a problem's passing rows -> ids to keep."""
    if policy == "all" or not candidates:
        return {c[0] for c in candidates}
    if policy == "first":
        return {min(candidates, key=lambda c: c[1])[0]}
    if policy == "shortest":
        return {min(candidates, key=lambda c: (c[2], c[1]))[0]}
    if policy == "longest":
        return {max(candidates, key=lambda c: (c[2], -c[1]))[0]}
    k = int(policy.split(":")[1])
    rng = random.Random(f"{seed}/{problem_id}")  # stable per problem, whatever the corpus order
    return {
        c[0] for c in rng.sample(sorted(candidates, key=lambda c: c[1]), min(k, len(candidates)))
    }


def _length(row: dict[str, Any]) -> int:
    return int(row.get("completion_tokens") or 0) or int(
        len(row.get("completion") or "") / CHARS_PER_TOKEN
    )


def corpus_checks(
    cfg: CorpusConfig,
    rows: Iterable[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    keep_unverified: bool = False,
    benchmarks: BenchmarkIndex | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Decisions per row id: correct, kept, reasons, checks; plus corpus facts for the report.
    `benchmarks`: the decontamination index, when the caller built it before verifying (so a
    wrong benchmark name fails before the work); else it is built here from the config."""

    meta: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    completions: list[tuple[str, str]] = []
    for row in rows:
        meta[row["id"]] = {
            "problem_id": row["problem_id"],
            "sample_index": row["sample_index"],
            "domain": row["domain"],
            "length": _length(row),
        }
        problems.setdefault(row["problem_id"], row["problem"])
        if cfg.dedup:
            completions.append((row["id"], row["completion"]))

    extra: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row_id, first in exact_duplicates(completions).items():
        extra[row_id]["duplicate"] = {
            "ok": False,
            "reason": "duplicate",
            "kind": "completion",
            "of": first,
        }
    near = (
        near_duplicate_problems(problems.items(), cfg.near_dup_threshold)
        if cfg.near_dup_threshold > 0
        else {}
    )
    contaminated: dict[str, dict[str, Any]] = {}
    if cfg.decontaminate:
        index = benchmarks or build_index(cfg.decontaminate, cfg.contamination_ngram)
        for pid, text in problems.items():
            if (hit := index.match(text)) is not None:
                contaminated[pid] = hit
    for row_id, m in meta.items():
        if (dup := near.get(m["problem_id"])) is not None:
            extra[row_id].setdefault(
                "duplicate", {"ok": False, "reason": "duplicate", "kind": "problem", **dup}
            )
        if (hit := contaminated.get(m["problem_id"])) is not None:
            extra[row_id]["contaminated"] = {"ok": False, "reason": "contaminated", **hit}

    rates = pass_rates(meta, results)
    decisions: dict[str, dict[str, Any]] = {}
    passing: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for row_id, m in meta.items():
        checks = {**results[row_id], **extra.get(row_id, {})}
        reasons = row_reasons(checks, keep_unverified)
        rate = rates[m["problem_id"]]
        decisions[row_id] = {
            "correct": checks["correctness"].get("ok"),
            "reasons": reasons,
            "checks": checks,
            "problem_correct": rate["correct"],
            "problem_verified": rate["verified"],
        }
        if not reasons:
            passing[m["problem_id"]].append((row_id, m["sample_index"], m["length"]))
    for pid, candidates in passing.items():
        chosen = select(candidates, cfg.keep, cfg.seed, pid)
        for row_id, _, _ in candidates:
            if row_id not in chosen:
                decisions[row_id]["reasons"].append("not_selected")
                decisions[row_id]["checks"]["selection"] = {
                    "ok": False,
                    "reason": "not_selected",
                    "policy": cfg.keep,
                }
    for d in decisions.values():
        d["kept"] = not d["reasons"]
    info = {
        "meta": meta,
        "problems": len(problems),
        "nothing_passed": sorted(pid for pid in problems if pid not in passing),
        "near_duplicate_problems": near,
        "contaminated_problems": contaminated,
        "pass_rates": rates,
    }
    return decisions, info


def pass_rates(
    meta: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]]
) -> dict[str, dict[str, int]]:
    """Problem id -> {correct, verified, samples}: how many of its samples were verified
    correct, how many had a decided correctness (true or false; undecided rows count in
    `samples` only), and how many there were. Correctness alone: readability, duplicates and
    selection do not change how hard a problem is for the teacher."""
    rates: dict[str, dict[str, int]] = {}
    for row_id, m in meta.items():
        r = rates.setdefault(m["problem_id"], {"correct": 0, "verified": 0, "samples": 0})
        ok = results[row_id]["correctness"].get("ok")
        r["samples"] += 1
        if ok is not None:
            r["verified"] += 1
            r["correct"] += bool(ok)
    return rates
