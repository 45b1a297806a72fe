"""Decontamination: n-gram overlap of corpus problems with benchmark problems.

A corpus problem sharing one word n-gram (default 8, as open-r1 and s1 do) with a benchmark
problem is `contaminated`; the report names the benchmark and the matching n-gram. Texts
shorter than n words match only when they are equal after normalisation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from distill.problems import DatasetSpec, load_problems

log = logging.getLogger(__name__)
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class BenchmarkIndex:
    n: int
    grams: dict[tuple[str, ...], str] = field(default_factory=dict)  # n-gram -> benchmark
    short: dict[tuple[str, ...], str] = field(default_factory=dict)  # whole short texts

    def add(self, name: str, text: str) -> None:
        w = words(text)
        if len(w) < self.n:
            self.short.setdefault(tuple(w), name)
            return
        for i in range(len(w) - self.n + 1):
            self.grams.setdefault(tuple(w[i : i + self.n]), name)

    def match(self, text: str) -> dict[str, Any] | None:
        w = words(text)
        if len(w) < self.n:
            name = self.short.get(tuple(w))
            return {"benchmark": name, "ngram": " ".join(w)} if name else None
        for i in range(len(w) - self.n + 1):
            gram = tuple(w[i : i + self.n])
            name = self.grams.get(gram)
            if name:
                return {"benchmark": name, "ngram": " ".join(gram)}
        return None


def build_index(benchmarks: list[str], n: int) -> BenchmarkIndex:
    """Benchmarks as local files, Hub ids or built-in names (aime24, math500, ...)."""

    index = BenchmarkIndex(n)
    for name in benchmarks:
        problems, _info = load_problems(DatasetSpec(dataset=name))
        for p in problems:
            index.add(name, p.problem)
        log.info("decontamination: %s, %d problems", name, len(problems))
    return index
