"""Rule rewards for `distill rl`: R1's accuracy, format and language-consistency rewards, and
DAPO's overlong penalty. Pure functions `(completion, row) -> Score(value, reason)`, built on the
same code as `distill filter` and `distill eval`, so a sample the filter would keep as correct
gets accuracy 1 and one it would reject for its answer gets 0.

- accuracy: the filter's correctness verdict (`distill.verify`: math-verify gold first, choice
  letters, sandboxed code tests). `accuracy_scores` verifies a batch through the verification
  service (`verify_rows`: worker processes, a hard wall-clock limit per row), so one
  pathological answer costs its timeout, never a stalled training step.
- format: the R1-distill layout (one think block, then an answer with `\\boxed{}`), checked by
  the filter's own `bad_format` rule; or R1-Zero's think block then answer tags.
- language: R1's language-consistency reward, the share of the reasoning's words in the
  problem's language (the filter's `language_mixing` measure, `filters/language.py`).
- overlong: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13): 0 up to
  `max_len - cache` tokens, then linearly down to -1 at `max_len`.

Completion templates ("styles"), as `distill rl` recipes name them:
- `r1`: the chat template, R1's instruction and the `<think>\\n` prefill; the answer is what
  follows the reasoning (`prompts.split_trace`), as in every distill corpus.
- `r1-zero`: R1-Zero's plain-text template (`prompts.R1_ZERO_TEMPLATE`); the answer is inside the
  last answer tags.
- `plain`: the problem text alone (a base model's own format; Oat-Zero's "no template"); the
  answer is the whole completion and the format reward does not apply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from distill.filters.language import expected_scripts, language_share
from distill.filters.readability import BadFormat
from distill.problems import last_boxed
from distill.prompts import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, split_trace
from distill.verify import VerifyConfig

Style = Literal["r1", "r1-zero", "plain"]
STYLES: tuple[str, ...] = ("r1", "r1-zero", "plain")

_ZERO = re.compile(
    rf"\s*{re.escape(THINK_OPEN)}(?P<reasoning>.*?){re.escape(THINK_CLOSE)}\s*"
    rf"{re.escape(ANSWER_OPEN)}(?P<answer>.*?){re.escape(ANSWER_CLOSE)}\s*",
    re.S,
)
ZERO_LAYOUT = f"{THINK_OPEN} reasoning {THINK_CLOSE} {ANSWER_OPEN} answer {ANSWER_CLOSE}"
_ANSWER_TAGS = re.compile(rf"{re.escape(ANSWER_OPEN)}(.*?){re.escape(ANSWER_CLOSE)}", re.S)


@dataclass(frozen=True)
class Score:
    """One reward for one completion: `value` (None: the reward does not apply to this sample,
    and TRL leaves it out) and `reason`, "ok" or a name from the filter's vocabulary
    (wrong_answer, no_answer, verify_timeout, bad_format, language_mixing, overlong, ...)."""

    value: float | None
    reason: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """A completion read the way its template asks: what counts as reasoning and as answer."""

    completion: str  # the whole response, prefill included
    reasoning: str
    answer: str


def parse(completion: str, style: str) -> Parsed:
    """Reasoning and answer of a whole completion (prefill included) for a template style."""
    if style == "r1":
        reasoning, answer = split_trace(completion)
        return Parsed(completion, reasoning, answer)
    if style == "r1-zero":
        reasoning, _ = split_trace(completion)
        tags = _ANSWER_TAGS.findall(completion)
        return Parsed(completion, reasoning, tags[-1].strip() if tags else "")
    if style == "plain":
        return Parsed(completion, "", completion.strip())
    raise ValueError(f"unknown template style {style!r} (known: {', '.join(STYLES)})")


# --- accuracy --------------------------------------------------------------------------------


def accuracy_score(verdict: dict[str, Any]) -> Score:
    """The filter's correctness verdict as a reward: 1 when verified correct, 0 when verified
    wrong or unanswerable (no_answer, verify_timeout), None when correctness cannot be decided
    (an unparseable reference: the sample then teaches nothing, as the filter keeps no such row)."""
    ok, reason = verdict.get("ok"), verdict.get("reason")
    details = {k: v for k, v in verdict.items() if k not in ("ok", "reason")}
    if ok is True:
        return Score(1.0, "ok", details)
    if ok is False:
        return Score(0.0, reason or "wrong_answer", details)
    return Score(None, reason or "undecided", details)


def accuracy_scores(
    parsed: Sequence[Parsed],
    rows: Sequence[dict[str, Any]],
    cfg: VerifyConfig,
    cache: dict[tuple[str, str, str], dict[str, Any]] | None = None,
    verify: Callable[[list[dict[str, Any]]], dict[str, dict[str, Any]]] | None = None,
) -> list[Score]:
    """Accuracy of a batch, verified through the filter's service (workers, hard timeouts).

    `rows` carry the problem's `domain` and `reference` (JSON); identical (domain, reference,
    answer) triples are verified once, and `cache` (a dict the caller keeps between batches)
    remembers verdicts across training steps, as the filter's verdict cache does across runs.
    `verify` (rows -> row id -> checks) defaults to one `verify_rows` call; `distill rl` passes
    one `verify_rows` that lives for the whole run (its workers start once).
    """
    if verify is None:
        from distill.verify.service import verify_rows

        def verify(batch: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return verify_rows(batch, cfg, total=len(batch), show_progress=False)

    cache = {} if cache is None else cache
    keys = [(str(r.get("domain")), str(r.get("reference")), p.answer) for p, r in zip(parsed, rows, strict=True)]  # fmt: skip
    todo: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i, key in enumerate(keys):
        if key not in cache and key not in todo:
            row = rows[i]
            todo[key] = {
                "id": str(len(todo)), "problem": row.get("problem"), "domain": key[0],
                "reference": row.get("reference"), "answer": key[2],
                "completion": parsed[i].completion,
            }  # fmt: skip
    if todo:
        checks = verify(list(todo.values()))
        for key, row in todo.items():
            verdict = checks[row["id"]]["correctness"]
            if verdict.get("reason") != "verify_timeout":  # a timeout may pass another time
                cache[key] = verdict
            todo[key] = verdict
    return [accuracy_score(cache.get(key) or todo[key]) for key in keys]


# --- format ----------------------------------------------------------------------------------


def format_score(p: Parsed, style: str) -> Score:
    """1 when the completion follows its template's layout, else 0 (with what is wrong).

    `r1`: the filter's `bad_format` rule (exactly one think block in order, non-empty reasoning
    and answer) plus a `\\boxed{}` answer, as R1-distill models write it. `r1-zero`: one
    think block then one pair of answer tags, nothing else around them.
    """
    if style == "r1":
        verdict = BadFormat().check(
            {"completion": p.completion, "reasoning": p.reasoning, "answer": p.answer}
        )
        if not verdict.ok:
            return Score(0.0, "bad_format", verdict.details)
        if last_boxed(p.answer) is None:
            return Score(0.0, "bad_format", {"problem": "no \\boxed{} answer"})
        return Score(1.0)
    if style == "r1-zero":
        m = _ZERO.fullmatch(p.completion)
        counts = [p.completion.count(t) for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)]  # fmt: skip
        if m is None or counts != [1, 1, 1, 1]:
            return Score(0.0, "bad_format", {"problem": ZERO_LAYOUT, "tags": counts})
        if not m["reasoning"].strip() or not m["answer"].strip():
            return Score(0.0, "bad_format", {"problem": "empty reasoning or answer"})
        return Score(1.0)
    return Score(None, "not_applicable", {"style": style})


# --- language consistency --------------------------------------------------------------------


def language_score(p: Parsed, problem: str, threshold: float = 0.95) -> Score:
    """R1's language-consistency reward: the share of the reasoning's words in the problem's
    language (scripts; maths, code and numbers count for none). The value is the share itself;
    below `threshold` (the filter's `language_mixing` default) the reason says so."""
    expected = expected_scripts(problem or "")
    share, words = language_share(p.reasoning, expected)
    details = {"expected": sorted(expected), "share": round(share, 4)}
    if share < threshold:
        return Score(share, "language_mixing", {**details, "words": dict(words)})
    return Score(share, "ok", details)


# --- overlong --------------------------------------------------------------------------------


def overlong_score(tokens: int, max_len: int, cache: int) -> Score:
    """DAPO's soft overlong punishment (eq. 13): 0 while `tokens <= max_len - cache`, then
    linearly down to -1 at `max_len`; -1 beyond (a truncated completion)."""
    if cache <= 0 or cache > max_len:
        raise ValueError("overlong cache must be in 1..max_len")
    start = max_len - cache
    if tokens <= start:
        return Score(0.0)
    if tokens > max_len:
        return Score(-1.0, "overlong", {"tokens": tokens})
    return Score((start - tokens) / cache, "overlong", {"tokens": tokens})


def reference_of(row: dict[str, Any]) -> Any:
    """The gold of a row as JSON text (what `verify` reads), whatever shape it arrived in."""
    ref = row.get("reference")
    return ref if ref is None or isinstance(ref, str) else json.dumps(ref)
