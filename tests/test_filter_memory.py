"""`distill filter` holds no per-row state in memory (issue #19): the Python heap's peak while
filtering grows with the problems, not the rows. The full measurement (peak RSS at 100k and
1M rows) is benchmarks/filter_memory.py; this guard runs in seconds."""

import tracemalloc

from test_filter import make_corpus, record, think

from distill.filter import FilterConfig, filter_corpus
from distill.filters.corpus_checks import CorpusConfig
from distill.verify import VerifyConfig
from distill.verify.cache import VerdictCache, row_digest
from distill.verify.service import settings_digest

SAMPLES = 16


def corpus(folder, n: int):
    rows = []
    for i in range(n):
        q, k = divmod(i, SAMPLES)
        said = q + 1 if k % 3 else q
        text = think(f"Adding one to {q} for sample {k % 13}, carefully.", f"So \\boxed{{{said}}}.")
        rows.append(record(f"p{q}", k, f"Problem {q}: what is {q} plus one?", str(q + 1), text))
    return make_corpus(folder, rows), rows


def verdict(row: dict) -> dict:
    right = row["sample_index"] % 3 != 0
    correctness = {"ok": right, "reason": None if right else "wrong_answer",
                   "gold": row["reference"], "extracted": row["answer"]}  # fmt: skip
    return {"correctness": correctness, "truncated": {"ok": True}, "repetition": {"ok": True}}


def peak_bytes(tmp, n: int, traced: bool = True) -> int:
    """Peak traced Python memory of one whole filter run (every verdict already cached, so no
    row is verified: what is measured is the corpus step and the writing, not the workers)."""
    inp, rows = corpus(tmp / f"in-{n}", n)
    out = tmp / f"out-{n}"
    cfg = FilterConfig(input=inp, output=out, verify=VerifyConfig(workers=1), progress=False,
                       report=False, corpus=CorpusConfig(keep="shortest"))  # fmt: skip
    cache = VerdictCache(out / ".work", settings_digest(cfg.verify, cfg.rows))
    for r in rows:
        cache.add(r["id"], row_digest(r), verdict(r))
    cache.flush()
    cache.close()
    del rows
    if traced:
        tracemalloc.start()
    report = filter_corpus(cfg)
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    tracemalloc.stop()
    assert report["counts"]["in"] == n and report["counts"]["kept"] == n // SAMPLES
    return peak


def test_the_filter_keeps_no_per_row_state_in_memory(tmp_path):
    peak_bytes(tmp_path, SAMPLES, traced=False)  # imports and first-call caches, untraced
    small, large = 2_048, 8_192  # whole problems; both past the 1,024-row batches
    grown = peak_bytes(tmp_path, large) - peak_bytes(tmp_path, small)
    # what grows is per problem (pass rates, selection, the report's per-problem lists): tens
    # of bytes a row; a dict of verdicts, decisions or texts per row is kilobytes a row
    per_row = grown / (large - small)
    assert per_row < 150, f"{per_row:.0f} bytes of peak Python memory per extra row"
