"""Evaluation metrics, as the R1 paper reports them: pure functions over verdict matrices.

- pass@1: for each problem the share of its k samples that are correct, averaged over problems
  (R1: "pass@1 averaged over k samples at T=0.6"); with the standard error over problems and
  a 95% bootstrap interval (problems resampled with replacement, fixed seed).
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021).
- cons@k: majority vote over the extracted answers of the k samples (R1's cons@64).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) is correct."""
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # prod_{i=n-c+1}^{n} (1 - k/i): numerically stable, no huge binomials
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, rounds: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: small benchmarks (AIME: 30 problems) have
    skewed per-problem rates, where mean +- 1.96 s.e. leaves [0, 1] or misplaces the interval."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(rounds))
    tail = (1 - level) / 2
    return means[int(tail * (rounds - 1))], means[int((1 - tail) * (rounds - 1))]


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """b - a over the same problems (per-problem pass rates of two models): the mean difference,
    its standard error and a percentile bootstrap interval. Pairing removes the problems'
    own difficulty from the noise, so a few hundred problems resolve a few points."""
    if len(a) != len(b):
        raise ValueError("paired rates need the same problems")
    d = [y - x for x, y in zip(a, b, strict=True)]
    mean, se = mean_and_stderr(d)
    lo, hi = bootstrap_ci(d, level)
    return {"diff": round(mean, 4), "se": round(se, 4), "ci95": [round(lo, 4), round(hi, 4)],
            "problems": len(d)}  # fmt: skip


def majority(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer; ties go to the one that appeared first. No answer never wins
    unless nothing else was extracted."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def cons_at_k(answers: Sequence[str | None], correct: Sequence[bool | None]) -> bool:
    """Whether the majority answer is correct (any sample giving it was verified correct)."""
    chosen = majority(answers)
    if chosen is None:
        return False
    return any(ok is True for a, ok in zip(answers, correct, strict=True) if a == chosen)


def benchmark_metrics(
    per_problem: dict[str, list[tuple[bool | None, str | None]]], ks: Sequence[int] | None = None
) -> dict[str, Any]:
    """problem id -> [(correct, extracted answer) per sample] => pass@1 (+stderr), pass@k, cons@k."""
    if not per_problem:
        return {}
    n = min(len(v) for v in per_problem.values())
    rates = [sum(ok is True for ok, _ in v[:n]) / n for v in per_problem.values()]
    p1, se = mean_and_stderr(rates)
    lo, hi = bootstrap_ci(rates)
    out = {"problems": len(per_problem), "samples": n, "pass@1": p1, "pass@1_stderr": se,
           "pass@1_ci95": [lo, hi]}  # fmt: skip
    for k in ks or sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n) if k <= n}):
        out[f"pass@{k}"] = sum(
            pass_at_k(n, sum(ok is True for ok, _ in v[:n]), k) for v in per_problem.values()
        ) / len(per_problem)
    votes = [
        cons_at_k([a for _, a in v[:n]], [ok for ok, _ in v[:n]]) for v in per_problem.values()
    ]
    out[f"cons@{n}"] = sum(votes) / len(votes)
    return out
