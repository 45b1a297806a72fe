"""Corpus-level checks: duplicates, contamination, then which passing samples to keep.

Row verdicts arrive from the per-row checks; this step adds the checks that need the whole
corpus, gathers every reason of each row (all of them, not only the first) and applies the
per-problem selection policy among the samples that passed everything.

It streams: `see` takes each row in corpus order (problem-level checks, exact duplicates) and
`count` its verdict when that arrives, so the filter does both during its verification pass;
`finish` applies the selection; `decide` then gives each row's decision as the output is
written, in the same order. What each problem needs (pass rate, selection, near-duplicate and
contamination verdicts) is all that is kept. Per-row state (the first row of each completion,
the near-duplicate index, random:K's candidates) sits in an sqlite file in the work folder,
verdicts are read back from the verdict cache: memory grows with problems, not rows.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from distill.config import option
from distill.filters.decontam import BenchmarkIndex, build_index
from distill.filters.dedup import NearDuplicates, completion_hash
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
    """(id, sample_index, length) of a problem's passing rows, in corpus order -> ids to keep."""
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


def row_length(row: dict[str, Any]) -> int:
    return int(row.get("completion_tokens") or 0) or int(
        len(row.get("completion") or "") / CHARS_PER_TOKEN
    )


@dataclass(slots=True)
class _Problem:
    """What the corpus step keeps of one problem: the same few fields at any sample count."""

    correct: int = 0
    verified: int = 0
    samples: int = 0
    passed: bool = False
    # ordinals (row numbers) the selection keeps; one shared empty set until then
    chosen: frozenset[int] | set[int] = frozenset()


class CorpusChecks:
    """`see(row)` for every row and `count(id, checks)` for its verdict (or `scan(rows)` when
    every verdict is cached), `finish()`, then `decide(row)` for every row in the same order. `verdicts`: row
    id -> its per-row checks (the verdict cache). `benchmarks`: the decontamination index,
    when the caller built it before verifying (so a wrong benchmark name fails before the
    work); else it is built here from the config. `db`: the sqlite file for per-row state."""

    def __init__(
        self,
        cfg: CorpusConfig,
        verdicts: Callable[[str], dict[str, Any]],
        db: sqlite3.Connection,
        keep_unverified: bool = False,
        benchmarks: BenchmarkIndex | None = None,
    ):
        self.cfg, self.verdicts, self.db, self.keep_unverified = cfg, verdicts, db, keep_unverified
        if cfg.decontaminate and benchmarks is None:
            benchmarks = build_index(cfg.decontaminate, cfg.contamination_ngram)
        self.benchmarks = benchmarks if cfg.decontaminate else None
        self.near_index = (
            NearDuplicates(cfg.near_dup_threshold, db) if cfg.near_dup_threshold > 0 else None
        )
        db.execute("CREATE TABLE firsts (key INTEGER PRIMARY KEY, id TEXT)")
        db.execute("CREATE TABLE dupes (n INTEGER PRIMARY KEY, of TEXT)")  # by row ordinal
        db.execute(
            "CREATE TABLE candidates (pid TEXT, n INTEGER, sample_index INTEGER, length INTEGER)"
        )
        self.problems: dict[str, _Problem] = {}
        self.near: dict[str, dict[str, Any]] = {}
        self.contaminated: dict[str, dict[str, Any]] = {}
        self.seen = 0  # ordinal of the next row `see` takes
        self.pending: dict[str, tuple[int, str, int, int, str | None]] = {}
        self.ordinal = 0  # the next row `decide` expects

    def _duplicate_of(self, n: int, row: dict[str, Any]) -> str | None:
        """The id of the first row with this row's completion when that is another row
        (stored by ordinal, so `decide` neither hashes the completion again nor looks it up)."""
        key = completion_hash(row["completion"])
        if key is None:
            return None
        self.db.execute("INSERT OR IGNORE INTO firsts VALUES (?, ?)", (key, row["id"]))
        first = self.db.execute("SELECT id FROM firsts WHERE key = ?", (key,)).fetchone()[0]
        if first == row["id"]:
            return None
        self.db.execute("INSERT INTO dupes VALUES (?, ?)", (n, first))
        return first

    def _checks(
        self, pid: str, checks: dict[str, Any], first: str | None
    ) -> tuple[dict[str, Any], list[str]]:
        """A row's checks (its own, then the corpus ones) and every reason it fails; `first`:
        the earlier row with the same completion, if any."""
        if first is not None:
            checks["duplicate"] = {
                "ok": False,
                "reason": "duplicate",
                "kind": "completion",
                "of": first,
            }
        if (dup := self.near.get(pid)) is not None:
            checks.setdefault(
                "duplicate", {"ok": False, "reason": "duplicate", "kind": "problem", **dup}
            )
        if (hit := self.contaminated.get(pid)) is not None:
            checks["contaminated"] = {"ok": False, "reason": "contaminated", **hit}
        return checks, row_reasons(checks, self.keep_unverified)

    def see(self, row: dict[str, Any]) -> None:
        """The next row in corpus order, before its verdict: problem-level checks on a
        problem's first row, exact duplicates; what `count` needs waits in `pending` (rows in
        flight only)."""
        n, self.seen = self.seen, self.seen + 1
        pid = row["problem_id"]
        if pid not in self.problems:  # problem-level checks, in order of first appearance
            self.problems[pid] = _Problem()
            if self.near_index and (dup := self.near_index.check(pid, row["problem"])):
                self.near[pid] = dup
            if self.benchmarks and (hit := self.benchmarks.match(row["problem"])) is not None:
                self.contaminated[pid] = hit
        first = self._duplicate_of(n, row) if self.cfg.dedup else None
        self.pending[row["id"]] = (n, pid, row["sample_index"], row_length(row), first)

    def count(self, key: str, checks: dict[str, Any]) -> None:
        """A seen row's verdict (in any order): its problem's pass rate and candidates."""
        n, pid, sample_index, length, first = self.pending.pop(key)
        checks, reasons = self._checks(pid, dict(checks), first)
        ok = checks["correctness"].get("ok")
        p = self.problems[pid]
        p.samples += 1
        if ok is not None:
            p.verified += 1
            p.correct += bool(ok)
        if not reasons:
            p.passed = True
            if self.cfg.keep != "all":  # every passing row is kept: nothing to choose
                self.db.execute("INSERT INTO candidates VALUES (?, ?, ?, ?)",
                                (pid, n, sample_index, length))  # fmt: skip

    def finish(self) -> None:
        """The per-problem selection, once every row is counted."""
        if self.pending:
            raise RuntimeError(f"{len(self.pending)} rows seen but never counted")
        if self.cfg.keep != "all":
            self.db.execute("CREATE INDEX candidates_pid ON candidates (pid)")
            for pid, p in self.problems.items():
                if p.passed:
                    rows = self.db.execute(
                        "SELECT n, sample_index, length FROM candidates WHERE pid = ? ORDER BY n",
                        (pid,),
                    ).fetchall()
                    p.chosen = select(rows, self.cfg.keep, self.cfg.seed, pid)

    def scan(self, rows: Iterable[dict[str, Any]]) -> None:
        """`see`, `count` and `finish` in one pass over rows whose verdicts are all cached."""
        for row in rows:
            self.see(row)
            self.count(row["id"], self.verdicts(row["id"]))
        self.finish()

    def decide(self, row: dict[str, Any]) -> dict[str, Any]:
        """The next row's decision: correct, kept, reasons, checks, problem_correct/verified."""
        n, self.ordinal = self.ordinal, self.ordinal + 1
        hit = (
            self.db.execute("SELECT of FROM dupes WHERE n = ?", (n,)).fetchone()
            if self.cfg.dedup
            else None
        )
        checks, reasons = self._checks(
            row["problem_id"], self.verdicts(row["id"]), hit[0] if hit else None
        )
        p = self.problems[row["problem_id"]]
        if not reasons and self.cfg.keep != "all" and n not in p.chosen:
            reasons.append("not_selected")
            checks["selection"] = {"ok": False, "reason": "not_selected", "policy": self.cfg.keep}
        return {"correct": checks["correctness"].get("ok"), "kept": not reasons, "reasons": reasons,
                "checks": checks, "problem_correct": p.correct, "problem_verified": p.verified}  # fmt: skip

    def info(self) -> dict[str, Any]:
        """Corpus facts for the report (per problem)."""
        return {
            "problems": len(self.problems),
            "nothing_passed": sorted(pid for pid, p in self.problems.items() if not p.passed),
            "near_duplicate_problems": self.near,
            "contaminated_problems": self.contaminated,
            "pass_rates": {
                pid: {"correct": p.correct, "verified": p.verified, "samples": p.samples}
                for pid, p in self.problems.items()
            },
        }
