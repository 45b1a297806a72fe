"""R1's readability rules: "chain-of-thought with mixed languages, long paragraphs, and code
blocks" was filtered out. Each rule is one unit (as datatrove's filters are): its name is the
reason it reports, `meaning` says what that reason means in reports, its fields are its
settings (with their help text and flags), and `check(row) -> Verdict` is the pure decision.

They run on every trace of corpora of hundreds of thousands of 8k-token traces, so they are
written for speed: C-level scans over the text, and the slower exact measures only on the rows
a cheap scan flags.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from distill.config import option
from distill.filters.langid import same_language
from distill.filters.language import NEUTRAL, expected_scripts, language_share
from distill.prompts import THINK_CLOSE, THINK_OPEN, think_tags
from distill.verdict import Verdict, failed, passed

CHARS_PER_TOKEN = 3.6  # characters per token of R1-style English maths traces (a proxy)


class Rule:
    name: ClassVar[str]
    meaning: ClassVar[str]

    def check(self, row: dict[str, Any]) -> Verdict:
        raise NotImplementedError


@dataclass
class Truncated(Rule):
    name: ClassVar[str] = "truncated"
    meaning: ClassVar[str] = "generation stopped at the length limit or failed"

    def check(self, row: dict[str, Any]) -> Verdict:
        reason = row.get("finish_reason")
        if reason in ("length", "error"):
            return failed(self.name, finish_reason=reason)
        return passed()


@dataclass
class BadFormat(Rule):
    name: ClassVar[str] = "bad_format"
    meaning: ClassVar[str] = (
        f"not exactly one {THINK_OPEN}...{THINK_CLOSE} in order, or empty reasoning or answer"
    )

    def check(self, row: dict[str, Any]) -> Verdict:
        opens, closes, ordered = think_tags(row.get("completion") or "")
        if opens != 1 or closes != 1 or not ordered:
            return failed(self.name, problem="think tags", opens=opens, closes=closes)
        if not (row.get("reasoning") or "").strip():
            return failed(self.name, problem="empty reasoning")
        if not (row.get("answer") or "").strip():
            return failed(self.name, problem="empty answer after the reasoning")
        return passed()


@dataclass
class LanguageMixing(Rule):
    name: ClassVar[str] = "language_mixing"
    meaning: ClassVar[str] = "the reasoning or the answer after it is not in the problem's language"

    threshold: float = option(
        0.95,
        flag="language-threshold",
        help="language_mixing: least share of words in the problem's language (reasoning, answer).",
    )
    language_id: bool = option(
        False, help="language_mixing: also tell same-script languages apart (extra 'langid')."
    )

    def check(self, row: dict[str, Any]) -> Verdict:
        # the answer too: a clean chain of thought can end in a summary that drifts into
        # mixed-language text, which R1's language reward was meant to stop
        problem = row.get("problem") or ""
        expected = expected_scripts(problem)
        details: dict[str, Any] = {"expected": sorted(expected)}
        for where in ("reasoning", "answer"):
            text = row.get(where) or ""
            share, words = language_share(text, expected)
            details[f"{where}_share"] = round(share, 4)
            if share < self.threshold:
                return failed(self.name, **details, where=where, words=dict(words))
            if self.language_id and expected == {"latin"} and text.strip():
                same, langs = same_language(problem, NEUTRAL.sub(" ", text))
                details[f"{where}_languages"] = langs
                if not same:
                    return failed(self.name, **details, where=where)
        return passed(**details)


@dataclass
class LongParagraph(Rule):
    name: ClassVar[str] = "long_paragraph"
    meaning: ClassVar[str] = "a paragraph of the reasoning is longer than the limit"

    max_chars: int = option(
        3000, flag="max-paragraph-chars", help="long_paragraph: longest paragraph allowed."
    )

    def check(self, row: dict[str, Any]) -> Verdict:
        paragraphs = re.split(r"\n\s*\n", row.get("reasoning") or "")
        longest = max(map(len, paragraphs), default=0)
        if longest > self.max_chars:
            return failed(self.name, chars=longest, limit=self.max_chars)
        return passed(chars=longest)


@dataclass
class CodeBlock(Rule):
    name: ClassVar[str] = "code_block"
    meaning: ClassVar[str] = "fenced code in the reasoning or answer of a non-code problem"

    def check(self, row: dict[str, Any]) -> Verdict:
        if row.get("domain") == "code":
            return passed()
        for part in ("reasoning", "answer"):
            if "```" in (row.get(part) or ""):
                return failed(self.name, where=part)
        return passed()


@dataclass
class Repetition(Rule):
    name: ClassVar[str] = "repetition"
    meaning: ClassVar[str] = "degenerate loops: a repeated line or duplicated n-grams"

    max_line_repeats: int = option(10, help="repetition: times one line (>= 8 chars) may repeat.")
    ngram: int = option(10, flag="dup-ngram", help="repetition: n of the duplicated word n-grams.")
    max_dup_ngram_frac: float = option(
        0.5, help="repetition: most share of characters inside duplicated n-grams (Gopher)."
    )
    prefilter: float = option(
        0.2,
        flag="repetition-prefilter",
        help="repetition: share of text in repeated sentences above which the n-gram measure runs.",
    )

    def check(self, row: dict[str, Any]) -> Verdict:
        text = row.get("reasoning") or ""
        if not text:
            return passed()
        lines = Counter(ln.strip() for ln in text.splitlines() if len(ln.strip()) >= 8)
        line, repeats = lines.most_common(1)[0] if lines else ("", 0)
        if repeats > self.max_line_repeats:
            return failed(self.name, line=line[:200], repeats=repeats)
        # The exact n-gram measure runs only where sentences repeat or one runs on and on (a
        # loop without punctuation); ordinary traces are decided by the two scans above.
        dup_sentences, longest = duplicate_sentence_fraction(text)
        if dup_sentences < self.prefilter and longest < 2000:
            return passed(dup_sentence_frac=round(dup_sentences, 4))
        frac = duplicate_ngram_fraction(text, self.ngram)
        details = {
            "dup_sentence_frac": round(dup_sentences, 4),
            f"dup_{self.ngram}gram_frac": round(frac, 4),
        }
        if frac > self.max_dup_ngram_frac:
            return failed(self.name, **details)
        return passed(**details)


_tokenizers: dict[str, Any] = {}


@dataclass
class TooLong(Rule):
    name: ClassVar[str] = "too_long"
    meaning: ClassVar[str] = "over the token budget"

    max_tokens: int = option(32768, help="too_long: token budget of a completion.")
    tokenizer: str | None = option(
        None, help="too_long: the student's tokenizer (Hub id or path); else a character proxy."
    )
    chars_per_token: float = option(
        CHARS_PER_TOKEN, help="too_long: characters per token of the proxy."
    )

    def count(self, text: str) -> tuple[int, str]:
        if not self.tokenizer:
            return int(len(text) / self.chars_per_token + 0.5), f"chars/{self.chars_per_token:.1f}"
        tok = _tokenizers.get(self.tokenizer)
        if tok is None:
            from transformers import AutoTokenizer

            tok = _tokenizers[self.tokenizer] = AutoTokenizer.from_pretrained(self.tokenizer)
        return len(tok(text, add_special_tokens=False)["input_ids"]), self.tokenizer

    def check(self, row: dict[str, Any]) -> Verdict:
        tokens, method = self.count(row.get("completion") or "")
        if tokens > self.max_tokens:
            return failed(self.name, tokens=tokens, limit=self.max_tokens, counted_by=method)
        return passed(tokens=tokens)


RULES: dict[str, type[Rule]] = {
    r.name: r
    for r in (Truncated, BadFormat, LanguageMixing, LongParagraph, CodeBlock, Repetition, TooLong)
}


@dataclass
class RowChecksConfig:
    """R1's readability rules: which ones run, and the settings of each."""

    checks: list[str] = option(
        default_factory=lambda: list(RULES),
        help="Readability checks to run: " + ", ".join(RULES) + ".",
    )
    truncated: Truncated = field(default_factory=Truncated)
    bad_format: BadFormat = field(default_factory=BadFormat)
    language_mixing: LanguageMixing = field(default_factory=LanguageMixing)
    long_paragraph: LongParagraph = field(default_factory=LongParagraph)
    code_block: CodeBlock = field(default_factory=CodeBlock)
    repetition: Repetition = field(default_factory=Repetition)
    too_long: TooLong = field(default_factory=TooLong)

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in RULES]
        if unknown:
            raise ValueError(
                f"rows.checks: unknown check '{unknown[0]}' (known: {', '.join(RULES)})"
            )

    def rules(self) -> list[Rule]:
        return [getattr(self, name) for name in self.checks]

    def __call__(self, row: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every enabled rule's verdict on one row, as plain dicts (what `checks` stores)."""
        return {rule.name: rule.check(row).as_dict() for rule in self.rules()}


# --- repetition measures ----------------------------------------------------------------------


def duplicate_ngram_fraction(text: str, n: int) -> float:
    """Gopher's measure: share of characters inside word n-grams that occur more than once."""
    import numpy as np

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
