"""Maths answers with math-verify: gold from the reference, prediction from the answer part.

`verify(gold, prediction)` in that order: the function is not symmetric (assignments and
equation-to-interval conversion treat the two sides differently), and open-r1 shipped the
reverse for months.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from typing import Any

from distill.verdict import Verdict, failed, passed, undecided

# math-verify logs the whole offending input on a timeout (100k characters of LaTeX ...).
for _name in ("math_verify", "latex2sympy2_extended"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


@lru_cache(maxsize=1)
def _two_stage_parsing() -> None:
    """ANTLR's two-stage parsing for math-verify's LaTeX parser (latex2sympy): SLL prediction
    first, full LL only for input SLL rejects. ANTLR guarantees an SLL parse is either the
    tree LL gives or a syntax error (`antlr4.atn.PredictionMode.SLL`), so every result, and
    every error, is LL's; LL's full-context prediction was most of the parse of a tuple or an
    interval in a profile, and the parse most of a worker's time. Once per process, before
    the first parse. `tests/test_verify.py` compares the two on every benchmark gold."""
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

        full = _Latex2Sympy.create_parser
    except (ImportError, AttributeError):  # a latex2sympy built otherwise: left as it is
        return

    def create_parser(self: Any, latex: str) -> Any:
        parser = full(self, latex)
        parser._interp.predictionMode = PredictionMode.SLL
        sll = parser.math

        def math() -> Any:
            try:
                return sll()
            except Exception:  # a syntax error under SLL (a timeout is a BaseException)
                return full(self, latex).math()  # LL's verdict: the same error or a parse

        parser.math = math
        return parser

    create_parser.__wrapped__ = full  # type: ignore[attr-defined]
    _Latex2Sympy.create_parser = create_parser


@lru_cache(maxsize=1)
def _configs() -> tuple[list[Any], list[Any]]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    _two_stage_parsing()

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


# A plain integer, the commonest answer (311 of MATH-500's 500 golds, every AIME answer).
_INTEGER = re.compile(r"-?[0-9]+")


def _integer(text: str) -> Any:
    """The sympy Integer that math-verify's parse of a plain integer gives, without its ANTLR
    LaTeX parser (2-10 ms a string); None for anything else. The same objects, so the same
    verdicts: `tests/test_verify.py` compares them with math-verify's parse."""
    if not _INTEGER.fullmatch(text):
        return None
    from sympy import Integer

    return Integer(int(text))


@lru_cache(maxsize=4096)
def _parsed_gold(text: str, timeout: int | None) -> tuple[Any, ...]:
    # n samples of a problem share one gold: a worker parses it once, not once per row.
    # A tuple, so no caller can alter the cached parse; math-verify never mutates its inputs.
    number = _integer(text.strip())
    return (number,) if number is not None else tuple(parse_gold(text, timeout))


# After the closing brace of a verbatim answer: punctuation and math delimiters only, so no
# other extraction anchor can follow it.
_TAILS = {"", ".", "$", "$.", "\\]", "\\].", "\\)", "\\).", "$$", "$$."}
_BRACES = {"{": 1, "}": -1}


def _boxed_content(answer: str) -> str | None:
    """The content of the answer's only \\boxed{}, when nothing but punctuation follows it."""
    start = answer.find("\\boxed{")
    if start < 0 or answer.find("\\boxed", start + 1) >= 0 or "I hope" in answer:
        return None  # "final answer is ... I hope" is math-verify's other first-priority anchor
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(answer)):
        depth += _BRACES.get(answer[j], 0)
        if depth == 0:
            return answer[i:j] if answer[j + 1 :].strip() in _TAILS else None
    return None


@lru_cache(maxsize=1)
def _only_box() -> list[Any]:
    from math_verify import LatexExtractionConfig

    _two_stage_parsing()

    return [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]


@lru_cache(maxsize=16384)
def _parsed_box(content: str, timeout: int | None) -> tuple[Any, ...] | None:
    """math-verify's parse of the answer `\\boxed{content}` with the box as its only anchor;
    None unless the box parses on its own. Once per content in a worker: answers recur across
    a corpus's problems ("2", "\\frac{1}{2}", an interval), and latex2sympy of an interval or a
    tuple costs 50-100 ms (math-verify's own cache keeps 20)."""
    from math_verify import parse

    number = _integer(content)
    if number is not None:
        return number, content  # math-verify's prediction: the expression, then its text
    pred = parse(f"\\boxed{{{content}}}", extraction_config=_only_box(), parsing_timeout=timeout)
    # A box that does not parse leaves only math-verify's fallback string: the full answer is
    # then read at its other anchors (an earlier "answer is $5$"), which the box alone lacks.
    if all(isinstance(p, str) for p in pred):
        return None
    return tuple(pred)


@lru_cache(maxsize=65536)
def _boxed_verdict(gold_text: str, content: str, timeout: int | None) -> tuple[bool, str] | None:
    """What math-verify says of an answer whose only box holds `content`, for this gold.

    Computed on the answer `\\boxed{content}` alone, once per (gold, content) in a worker: the
    samples of a problem share their gold and often their boxed answer, right or wrong. It is
    the verdict of every answer that passes `_boxed_content`: math-verify tries its
    first-priority patterns (the two boxed ones) before anything else and stops at the first
    extraction that parses, so when the box parses on its own (`_parsed_box`, the box the only
    anchor) the text around it is never read, and that parse is the prediction the full answer
    gives. A box that does not parse alone, or that holds the word "answer" (an anchor inside
    the box), gets None: those rows take the full path.
    """
    from math_verify import verify

    if "answer" in content.lower():
        return None
    pred = _parsed_box(content, timeout)
    if pred is None:
        return None
    gold = list(_parsed_gold(gold_text, timeout))  # check_math calls this only for one that parsed
    if _differ_numerically(gold, list(pred), timeout):
        return False, str(pred[-1])
    return bool(verify(gold, list(pred), timeout_seconds=timeout)), str(pred[-1])


def _differ_numerically(gold: list[Any], pred: list[Any], timeout: int | None) -> bool:
    """True only where math-verify's verdict is surely "wrong", found without its simplify().

    A wrong answer costs math-verify most of its time: for two expressions it tries string
    equality, numeric equality, then `simplify(gold - pred) == 0`, 5-60 ms each. When gold and
    prediction are both one expression (no sets, no relations, not a bare symbol: those take
    other paths in math-verify) and its own string and numeric comparisons (called here) say
    no, that last step can only say no too if the difference is not zero everywhere: simplify
    keeps an expression's value, so a difference that is nonzero at one point cannot simplify
    to zero. A constant is evaluated as it is; an expression in symbols at one real point, each
    symbol its own value above 1 (latex2sympy's symbols are real, which simplify may use, so
    the point must be real too; an identity that holds only for positive values is zero there
    too, and falls through). sympy's evalf at 30 digits with `strict=True` either gives the
    leading digits correctly or raises, so a finite nonzero result proves it. Anything else
    (None here) goes to math-verify's full comparison.
    """
    from math_verify.errors import TimeoutException
    from math_verify.grader import sympy_numeric_eq, sympy_str_eq
    from math_verify.utils import timeout as alarm
    from sympy import Expr, Rational, Symbol
    from sympy.core.relational import Relational

    # parse_gold keeps no fallback string: one expression; a prediction is [expression, text]
    if len(gold) != 1 or not pred or any(not isinstance(x, str) for x in pred[1:]):
        return False
    g, p = gold[0], pred[0]
    for x in (g, p):
        if not isinstance(x, Expr) or isinstance(x, (Relational, Symbol)):
            return False
    symbols = sorted(g.free_symbols | p.free_symbols, key=str)
    # other assumptions (positive, integer) would let simplify assume more than this point has
    if any(not isinstance(s, Symbol) or s.assumptions0 not in _plain_symbols() for s in symbols):
        return False
    point = {s: Rational(137 + 22 * k, 100) for k, s in enumerate(symbols)}

    def differ() -> bool:
        if sympy_str_eq(g, p) or sympy_numeric_eq(g, p, 6, 15):  # math-verify's defaults
            return False
        d = ((g - p).subs(point) if point else g - p).evalf(30, strict=True)
        return bool(d.is_number and d.is_finite and d != 0)

    try:
        return alarm(timeout_seconds=timeout)(differ)()
    except (Exception, TimeoutException):  # PrecisionExhausted, whatever sympy raises
        return False  # math-verify decides


@lru_cache(maxsize=1)
def _plain_symbols() -> tuple[dict[str, bool], ...]:
    """The assumptions of latex2sympy's symbols (real) and of a plain sympy one."""
    from sympy import Symbol

    return Symbol("t").assumptions0, Symbol("t", real=True).assumptions0


def check_math(
    reference: str | None, answer: str, timeout: int | None = 5, gold_cache: bool = True
) -> Verdict:
    """Correctness of a maths answer; `reference` is the record's JSON gold answer.

    `gold_cache`: reuse per-gold work this process has done (rows arrive grouped by problem,
    so a worker parses each problem's gold once, and an answer whose only box holds what an
    earlier sample of the problem boxed gets the verdict math-verify gave that box,
    `_boxed_verdict`); False parses everything per row (the slow path the benchmark and
    tests compare verdicts against).

    `timeout` is math-verify's own SIGALRM limit; `distill filter` passes None and kills the
    worker instead, so a timeout is reported as `verify_timeout`, never as a wrong answer.
    """
    from math_verify import parse, verify

    gold_text = json.loads(reference) if reference else None
    if gold_text is None or not str(gold_text).strip():
        return undecided("unverifiable_reference", gold=None)
    gold_text = str(gold_text)
    gold = list(_parsed_gold(gold_text, timeout) if gold_cache else parse_gold(gold_text, timeout))
    if not gold:
        return undecided("unverifiable_reference", gold=gold_text)
    if not answer.strip():
        return failed("no_answer", gold=gold_text)
    content = _boxed_content(answer) if gold_cache else None
    if content is not None:
        known = _boxed_verdict(gold_text, content, timeout)
        if known is not None:
            ok, extracted = known
            details = {"gold": gold_text, "extracted": extracted}
            return passed(**details) if ok else failed("wrong_answer", **details)
    pred = parse(answer, extraction_config=_configs()[1], parsing_timeout=timeout)
    if not pred:
        return failed("no_answer", gold=gold_text)
    details = {"gold": gold_text, "extracted": str(pred[-1])}
    if verify(gold, pred, timeout_seconds=timeout):
        return passed(**details)
    return failed("wrong_answer", **details)
