"""Multiple choice: find the chosen letter (A-J) and compare it with the reference letter."""

from __future__ import annotations

import json
import re

from distill.verdict import Verdict, failed, passed, undecided

L = "A-J"
# Most explicit first: a boxed letter, then "answer: X", then "(X)", then a last line that is
# only a letter. Within a pattern the last match wins (the final answer, not a restatement).
PATTERNS = [
    re.compile(rf"\\boxed\{{\s*(?:\\text(?:bf)?\{{)?\s*\(?([{L}])\)?\s*\}}?\s*\}}"),
    re.compile(rf"(?i:answer)\s*(?:is|:)?\s*[:\-]?\s*\**\s*\(?([{L}])\)?\**(?=[\s.,;:!]*$)", re.M),
    re.compile(rf"\(([{L}])\)"),
]
LAST_LINE = re.compile(rf"^\W*([{L}])\W*$")


def extract_choice(text: str) -> str | None:
    for pattern in PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        m = LAST_LINE.match(lines[-1].strip())
        if m:
            return m.group(1)
    return None


def check_choice(reference: str | None, answer: str) -> Verdict:
    gold = json.loads(reference) if reference else None
    if not isinstance(gold, str) or not re.fullmatch(rf"[{L}]", gold.strip().upper()):
        return undecided("unverifiable_reference", gold=gold)
    gold = gold.strip().upper()
    chosen = extract_choice(answer)
    if chosen is None:
        return failed("no_answer", gold=gold)
    return (
        passed(gold=gold, extracted=chosen)
        if chosen == gold
        else failed("wrong_answer", gold=gold, extracted=chosen)
    )
