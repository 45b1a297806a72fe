"""Maths answers with math-verify: gold from the reference, prediction from the answer part.

`verify(gold, prediction)` in that order: the function is not symmetric (assignments and
equation-to-interval conversion treat the two sides differently), and open-r1 shipped the
reverse for months.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from distill.verdict import Verdict, failed, passed, undecided

# math-verify logs the whole offending input on a timeout (100k characters of LaTeX ...).
for _name in ("math_verify", "latex2sympy2_extended"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


@lru_cache(maxsize=1)
def _configs() -> tuple[list[Any], list[Any]]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    gold = [LatexExtractionConfig(), ExprExtractionConfig()]
    # The prediction: \boxed{} first, then math-verify's other LaTeX anchors, then plain expressions.
    pred = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return gold, pred


def parse_gold(reference: str, timeout: int | None = 5) -> list[Any]:
    """Only golds math-verify really parses count: no fallback to the raw string, so an
    unparseable reference is reported as such instead of being compared as text."""
    from math_verify import parse

    text = reference.strip()
    # `\$36` is a dollar sign, not a math delimiter (3 of MATH-500's golds): wrap those too
    bare = text.replace("\\$", "")
    if "$" not in bare and "\\boxed" not in text and "\\(" not in text:
        text = f"${text}$"
    return parse(
        text, extraction_config=_configs()[0], fallback_mode="no_fallback", parsing_timeout=timeout
    )


@lru_cache(maxsize=4096)
def _parsed_gold(text: str, timeout: int | None) -> tuple[Any, ...]:
    # n samples of a problem share one gold: a worker parses it once, not once per row.
    # A tuple, so no caller can alter the cached parse; math-verify never mutates its inputs.
    return tuple(parse_gold(text, timeout))


def check_math(
    reference: str | None, answer: str, timeout: int | None = 5, gold_cache: bool = True
) -> Verdict:
    """Correctness of a maths answer; `reference` is the record's JSON gold answer.

    `gold_cache`: reuse the parsed gold of a reference this process has seen (rows arrive
    grouped by problem, so a worker parses each problem's gold once); False parses per row
    (the slow path the benchmark compares verdicts against).

    `timeout` is math-verify's own SIGALRM limit; `distill filter` passes None and kills the
    worker instead, so a timeout is reported as `verify_timeout`, never as a wrong answer.
    """
    from math_verify import parse, verify

    gold_text = json.loads(reference) if reference else None
    if gold_text is None or not str(gold_text).strip():
        return undecided("unverifiable_reference", gold=None)
    gold = list(_parsed_gold(str(gold_text), timeout) if gold_cache else parse_gold(str(gold_text), timeout))
    if not gold:
        return undecided("unverifiable_reference", gold=str(gold_text))
    if not answer.strip():
        return failed("no_answer", gold=str(gold_text))
    pred = parse(answer, extraction_config=_configs()[1], parsing_timeout=timeout)
    if not pred:
        return failed("no_answer", gold=str(gold_text))
    details = {"gold": str(gold_text), "extracted": str(pred[-1])}
    if verify(gold, pred, timeout_seconds=timeout):
        return passed(**details)
    return failed("wrong_answer", **details)
