"""Duplicates across a corpus: exact duplicate completions, near-duplicate problems (MinHash)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where used: `distill --help` stays instant
    import numpy as np

_WORD = re.compile(r"\w+")


def completion_key(completion: str) -> str | None:
    text = " ".join(completion.split())
    return hashlib.sha1(text.encode("utf-8")).hexdigest() if text else None


def exact_duplicates(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """(id, completion) pairs -> {id: id of the first row with the same completion}."""
    first: dict[str, str] = {}
    dupes: dict[str, str] = {}
    for row_id, completion in rows:
        key = completion_key(completion)
        if key is None:
            continue  # failed requests have no text: not duplicates of each other
        if key in first:
            dupes[row_id] = first[key]
        else:
            first[key] = row_id
    return dupes


def shingles(text: str, n: int = 3) -> np.ndarray:
    """Word n-gram shingles of a text as sorted unique 64-bit hashes."""
    import numpy as np

    words = _WORD.findall(text.lower())
    grams = [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))] if words else []
    digests = [hashlib.blake2b(g.encode(), digest_size=8).digest() for g in grams]
    return (
        np.unique(np.frombuffer(b"".join(digests), dtype=np.uint64))
        if digests
        else np.empty(0, np.uint64)
    )


def _low32(x: Any) -> int:
    return int(x) & 0xFFFFFFFF  # the shingles are already 64-bit hashes


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    import numpy as np

    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / max(1, len(a) + len(b) - inter)


def near_duplicate_problems(
    problems: Iterable[tuple[str, str]], threshold: float, num_perm: int = 128, seed: int = 1
) -> dict[str, dict[str, Any]]:
    """(problem_id, text) in corpus order -> {later problem_id: {of, jaccard}} for problems
    whose word-3-gram Jaccard similarity with an earlier one reaches `threshold`.

    MinHash LSH (tuned a little below the threshold, for recall) proposes candidates; the
    exact Jaccard of the shingle sets decides, so estimate noise neither adds nor hides pairs.
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.15), num_perm=num_perm)
    kept: dict[str, np.ndarray] = {}
    found: dict[str, dict[str, Any]] = {}
    # the permutations are drawn once and shared: drawing them per MinHash dominated the cost
    template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_low32)
    for pid, text in problems:
        grams = shingles(text)
        if not len(grams):
            continue
        m = MinHash(
            num_perm=num_perm,
            seed=seed,
            hashfunc=_low32,
            permutations=template.permutations,
            scheme=template.scheme,
        )
        m.update_batch(grams.tolist())
        scored = [(jaccard(grams, kept[c]), c) for c in lsh.query(m)]
        best = max((x for x in scored if x[0] >= threshold), default=None)
        if best is not None:
            found[pid] = {"of": best[1], "jaccard": round(best[0], 3)}
            continue
        lsh.insert(pid, m)
        kept[pid] = grams
    return found
