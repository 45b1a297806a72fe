"""Duplicates across a corpus: exact duplicate completions, near-duplicate problems (MinHash)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where used: `distill --help` stays instant
    import numpy as np

_WORD = re.compile(r"\w+")


def completion_hash(completion: str) -> int | None:
    """The first 8 bytes of the sha1 of the whitespace-normalised completion, as a signed
    integer (what sqlite stores); None for no text (failed requests are not duplicates)."""
    text = " ".join(completion.split())
    digest = hashlib.sha1(text.encode("utf-8")).digest() if text else None
    return int.from_bytes(digest[:8], "little", signed=True) if digest else None


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


class NearDuplicates:
    """Problems in corpus order -> the earlier problem each near-duplicates (word-3-gram
    Jaccard >= `threshold`), or None.

    MinHash LSH (tuned a little below the threshold, for recall) proposes candidates; the
    exact Jaccard of the shingle sets decides, so estimate noise neither adds nor hides pairs.
    The index lives in `db` (an sqlite connection: a file for a big corpus): per kept problem,
    a 64-bit hash of each LSH band and the text, whose shingles are recomputed for the rare
    candidate. datasketch's in-memory index held ~5 KB a problem; this holds none.
    """

    def __init__(
        self, threshold: float, db: sqlite3.Connection, num_perm: int = 128, seed: int = 1
    ):
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        # the bands datasketch would use for this threshold: the same candidates it proposed
        lsh = MinHashLSH(threshold=max(0.05, threshold - 0.15), num_perm=num_perm)
        self.bands, self.rows = lsh.b, lsh.r
        # the permutations are drawn once and shared: drawing them per MinHash dominated the cost
        self.template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_low32)
        self.db = db
        db.execute("CREATE TABLE near_text (n INTEGER PRIMARY KEY, pid TEXT, text TEXT)")
        db.execute("CREATE TABLE near_band (h INTEGER, n INTEGER)")
        db.execute("CREATE INDEX near_band_h ON near_band (h)")
        self.kept = 0

    def _band_hashes(self, grams: np.ndarray) -> list[int]:
        from datasketch import MinHash

        t = self.template
        m = MinHash(num_perm=len(t.permutations[0]), seed=t.seed, hashfunc=_low32,
                    permutations=t.permutations, scheme=t.scheme)  # fmt: skip
        m.update_batch(grams.tolist())
        values, r = m.hashvalues, self.rows
        # a band's bytes, with its number: equal hashes are equal bands (2^-64 aside)
        return [
            int.from_bytes(
                hashlib.blake2b(
                    values[i * r : (i + 1) * r].tobytes(),
                    digest_size=8,
                    salt=i.to_bytes(8, "little"),
                ).digest(),
                "little",
                signed=True,
            )
            for i in range(self.bands)
        ]

    def check(self, pid: str, text: str) -> dict[str, Any] | None:
        """{of, jaccard} when `pid` near-duplicates an earlier problem; else it joins the index."""
        grams = shingles(text)
        if not len(grams):
            return None
        bands = self._band_hashes(grams)
        marks = ",".join("?" * len(bands))
        candidates = self.db.execute(
            f"SELECT pid, text FROM near_text WHERE n IN "
            f"(SELECT n FROM near_band WHERE h IN ({marks}))",
            bands,
        ).fetchall()
        scored = [(jaccard(grams, shingles(other)), c) for c, other in candidates]
        best = max((x for x in scored if x[0] >= self.threshold), default=None)
        if best is not None:
            return {"of": best[1], "jaccard": round(best[0], 3)}
        self.kept += 1
        self.db.execute("INSERT INTO near_text VALUES (?, ?, ?)", (self.kept, pid, text))
        self.db.executemany("INSERT INTO near_band VALUES (?, ?)", [(h, self.kept) for h in bands])
        return None


def near_duplicate_problems(
    problems: Iterable[tuple[str, str]], threshold: float, num_perm: int = 128, seed: int = 1
) -> dict[str, dict[str, Any]]:
    """(problem_id, text) in corpus order -> {later problem_id: {of, jaccard}} (an index in
    memory: for a corpus that fits in it)."""
    index = NearDuplicates(threshold, sqlite3.connect(":memory:"), num_perm, seed)
    found = {}
    for pid, text in problems:
        if (hit := index.check(pid, text)) is not None:
            found[pid] = hit
    return found
