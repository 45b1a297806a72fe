"""R1's readability rules as pure checks: `(record, cfg) -> Verdict`.

R1 "filtered out chain-of-thought with mixed languages, long paragraphs, and code blocks".
Each check reads only the record; thresholds come from the filter config. They are written
for speed (C-level scans over the text; the slower exact measures run only on the rows a
cheap scan flags) because they run on every trace of a corpus of hundreds of thousands of
8k-token traces.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from distill.verdict import Verdict, failed, passed

# --- truncated / bad_format / code_block / long_paragraph --------------------------------


def check_truncated(row: dict[str, Any], cfg: Any) -> Verdict:
    reason = row.get("finish_reason")
    return failed("truncated", finish_reason=reason) if reason in ("length", "error") else passed()


def check_bad_format(row: dict[str, Any], cfg: Any) -> Verdict:
    c = row.get("completion") or ""
    opens, closes = c.count("<think>"), c.count("</think>")
    if opens != 1 or closes != 1 or c.find("<think>") > c.find("</think>"):
        return failed("bad_format", problem="think tags", opens=opens, closes=closes)
    if not (row.get("reasoning") or "").strip():
        return failed("bad_format", problem="empty reasoning")
    if not (row.get("answer") or "").strip():
        return failed("bad_format", problem="empty answer after </think>")
    return passed()


def check_code_block(row: dict[str, Any], cfg: Any) -> Verdict:
    if row.get("domain") == "code":
        return passed()
    for part in ("reasoning", "answer"):
        if "```" in (row.get(part) or ""):
            return failed("code_block", where=part)
    return passed()


def check_long_paragraph(row: dict[str, Any], cfg: Any) -> Verdict:
    paragraphs = re.split(r"\n\s*\n", row.get("reasoning") or "")
    longest = max(map(len, paragraphs), default=0)
    if longest > cfg.max_paragraph_chars:
        return failed("long_paragraph", chars=longest, limit=cfg.max_paragraph_chars)
    return passed(chars=longest)


# --- language_mixing ------------------------------------------------------------------------

# Scripts that carry words. Greek is left out: α, π, θ in plain text are maths, not Greek.
SCRIPT_RANGES: dict[str, list[tuple[int, int]]] = {
    "latin": [
        (0x41, 0x5A),
        (0x61, 0x7A),
        (0xC0, 0xD6),
        (0xD8, 0xF6),
        (0xF8, 0x24F),
        (0x1E00, 0x1EFF),
    ],
    "cyrillic": [(0x400, 0x52F)],
    "arabic": [(0x600, 0x6FF), (0x750, 0x77F)],
    "hebrew": [(0x5D0, 0x5EA)],
    "devanagari": [(0x900, 0x97F)],
    "thai": [(0xE00, 0xE7F)],
    "hangul": [(0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF)],
    "kana": [(0x3040, 0x30FF)],
    "han": [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)],
}
SCRIPTS = list(SCRIPT_RANGES)
CHAR_SCRIPTS = {"han", "kana"}  # no spaces between words: every character counts as a word
_TABLE = np.zeros(0x10000, dtype=np.uint8)
for _i, _name in enumerate(SCRIPTS, start=1):
    for _lo, _hi in SCRIPT_RANGES[_name]:
        _TABLE[_lo : _hi + 1] = _i
_NON_LATIN = re.compile(
    "["
    + "".join(
        f"\\u{lo:04x}-\\u{hi:04x}"
        for name in SCRIPTS
        if name != "latin"
        for lo, hi in SCRIPT_RANGES[name]
    )
    + "]"
)
# Maths, code and numbers belong to no language: removed before counting.
_NEUTRAL = re.compile(
    r"```.*?(?:```|$)|`[^`\n]*`"  # code
    r"|\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)"  # display and inline maths
    r"|\\begin\{(\w+\*?)\}.*?\\end\{\1\}"  # environments
    r"|\\[A-Za-z]+"  # commands (\frac, \sqrt, ...)
    r"|(?<![A-Za-z])(?:[A-Za-z]|sin|cos|tan|cot|sec|csc|log|ln|exp|lim|max|min|gcd|lcm|mod|det"
    r"|arcsin|arccos|arctan)(?![A-Za-z])",  # variables and function names, even next to CJK
    re.S,
)


def script_words(text: str) -> Counter[str]:
    """Words per script in `text` (maths, code and numbers already removed by the caller)."""
    if not text:
        return Counter()
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    sid = _TABLE[np.minimum(cp, 0xFFFF)]
    counts: Counter[str] = Counter()
    starts = np.empty_like(sid, dtype=bool)
    starts[0] = sid[0] > 0
    starts[1:] = (sid[1:] != sid[:-1]) & (sid[1:] > 0)
    run_counts = np.bincount(sid[starts], minlength=len(SCRIPTS) + 1)
    char_counts = np.bincount(sid, minlength=len(SCRIPTS) + 1)
    for i, name in enumerate(SCRIPTS, start=1):
        n = int(char_counts[i] if name in CHAR_SCRIPTS else run_counts[i])
        if n:
            counts[name] = n
    return counts


def expected_scripts(problem: str) -> set[str]:
    """The scripts of the problem's language, from its own text."""
    if problem.isascii():
        return {"latin"}
    words = script_words(_NEUTRAL.sub(" ", problem))
    if not words:
        return {"latin"}
    if words.get("kana"):
        return {"kana", "han"}  # Japanese
    if words.get("hangul"):
        return {"hangul", "han"}  # Korean
    return {words.most_common(1)[0][0]}


def language_share(reasoning: str, expected: set[str]) -> tuple[float, Counter[str]]:
    """R1's language-consistency measure: share of the reasoning's words in the expected scripts."""
    if expected == {"latin"} and (reasoning.isascii() or not _NON_LATIN.search(reasoning)):
        return 1.0, Counter()  # the common case, decided by one scan
    words = script_words(_NEUTRAL.sub(" ", reasoning))
    total = sum(words.values())
    if total == 0:
        return 1.0, words
    return sum(words[s] for s in expected) / total, words


def check_language_mixing(row: dict[str, Any], cfg: Any) -> Verdict:
    expected = expected_scripts(row.get("problem") or "")
    share, words = language_share(row.get("reasoning") or "", expected)
    details: dict[str, Any] = {"expected": sorted(expected), "share": round(share, 4)}
    if share < cfg.language_threshold:
        return failed("language_mixing", **details, words=dict(words))
    if cfg.language_id and expected == {"latin"}:
        from distill.filters.langid import same_language

        same, langs = same_language(
            row.get("problem") or "", _NEUTRAL.sub(" ", row.get("reasoning") or "")
        )
        details["languages"] = langs
        if not same:
            return failed("language_mixing", **details)
    return passed(**details)


# --- repetition -----------------------------------------------------------------------------


def duplicate_ngram_fraction(text: str, n: int) -> float:
    """Gopher's measure: share of characters inside word n-grams that occur more than once."""
    words = text.split()
    if len(words) < n * 2:
        return 0.0
    h = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    grams = np.zeros(len(words) - n + 1, dtype=np.uint64)
    for k in range(n):
        grams = grams * np.uint64(1_000_003) + h[k : k + len(grams)]
    order = np.argsort(grams, kind="stable")
    ordered = grams[order]
    same = ordered[1:] == ordered[:-1]
    dup_sorted = np.zeros(len(grams), dtype=bool)
    dup_sorted[1:] |= same
    dup_sorted[:-1] |= same
    dup_start = np.empty(len(grams), dtype=bool)
    dup_start[order] = dup_sorted
    starts = np.flatnonzero(dup_start)
    edges = np.bincount(starts, minlength=len(words) + 1) - np.bincount(
        starts + n, minlength=len(words) + 1
    )
    in_dup = np.cumsum(edges[: len(words)]) > 0
    lengths = np.fromiter(map(len, words), dtype=np.int32, count=len(words))
    return float(lengths[in_dup].sum() / max(1, lengths.sum()))


def duplicate_sentence_fraction(text: str) -> tuple[float, int]:
    """Share of characters in sentences (>= 20 chars) that occur more than once, and the
    longest sentence: two C-speed scans that flag the traces worth the n-gram measure."""
    # str methods, not a regex: this runs on every trace
    flat = text.replace("\n", ". ").replace("? ", ". ").replace("! ", ". ").replace("。", ". ")
    sentences = [s for s in flat.split(". ") if len(s) >= 20]
    if not sentences:
        return 0.0, 0
    counts = Counter(sentences)
    dup = sum(len(s) * c for s, c in counts.items() if c > 1)
    return dup / max(1, len(text)), max(map(len, counts))


def check_repetition(row: dict[str, Any], cfg: Any) -> Verdict:
    text = row.get("reasoning") or ""
    if not text:
        return passed()
    lines = Counter(ln.strip() for ln in text.splitlines() if len(ln.strip()) >= 8)
    line, repeats = lines.most_common(1)[0] if lines else ("", 0)
    if repeats > cfg.max_line_repeats:
        return failed("repetition", line=line[:200], repeats=repeats)
    # The exact n-gram measure runs only where sentences repeat or one runs on and on (a loop
    # without punctuation); ordinary traces are decided by the two scans above.
    dup_sentences, longest = duplicate_sentence_fraction(text)
    if dup_sentences < cfg.repetition_prefilter and longest < 2000:
        return passed(dup_sentence_frac=round(dup_sentences, 4))
    frac = duplicate_ngram_fraction(text, cfg.dup_ngram)
    details = {
        "dup_sentence_frac": round(dup_sentences, 4),
        f"dup_{cfg.dup_ngram}gram_frac": round(frac, 4),
    }
    if frac > cfg.max_dup_ngram_frac:
        return failed("repetition", **details)
    return passed(**details)


# --- too_long --------------------------------------------------------------------------------

_tokenizers: dict[str, Any] = {}


def count_tokens(text: str, cfg: Any) -> tuple[int, str]:
    if not cfg.tokenizer:
        return int(len(text) / cfg.chars_per_token + 0.5), f"chars/{cfg.chars_per_token:.1f}"
    tok = _tokenizers.get(cfg.tokenizer)
    if tok is None:
        from transformers import AutoTokenizer

        tok = _tokenizers[cfg.tokenizer] = AutoTokenizer.from_pretrained(cfg.tokenizer)
    return len(tok(text, add_special_tokens=False)["input_ids"]), cfg.tokenizer


def check_too_long(row: dict[str, Any], cfg: Any) -> Verdict:
    tokens, method = count_tokens(row.get("completion") or "", cfg)
    if tokens > cfg.max_tokens:
        return failed("too_long", tokens=tokens, limit=cfg.max_tokens, counted_by=method)
    return passed(tokens=tokens)


CHECKS = {
    "truncated": check_truncated,
    "bad_format": check_bad_format,
    "language_mixing": check_language_mixing,
    "long_paragraph": check_long_paragraph,
    "code_block": check_code_block,
    "repetition": check_repetition,
    "too_long": check_too_long,
}
