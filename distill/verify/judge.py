"""A generative judge for rows the rules cannot decide (R1 used DeepSeek-V3 this way).

Rows with correctness undecided (`unverifiable_reference`: a reference math-verify cannot
parse, or a `text` problem with a reference answer) go to any teacher backend with a strict
output format; the verdict and the judge's raw reply are stored in `checks`. With
`judge_wrong`, maths rows math-verify calls wrong whose answer holds the gold's numbers in
another form get the same second look (OpenR1-Math re-checked math-verify's rejections with
Llama-3.3-70B); a verdict the judge overturns is marked `overturned` and counted apart.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from distill.prompts import build_messages, format_trace, split_trace
from distill.teachers import Request, make_teacher
from distill.teachers.profile import load_profile
from distill.verify import VerifyConfig, load_reference

log = logging.getLogger(__name__)

PROMPT = """You are grading an answer to a problem against the reference answer.

Problem:
{problem}

Reference answer:
{reference}

Answer to grade (its final part):
{answer}

Is the answer to grade equivalent to the reference answer? Ignore formatting and wording;
judge only the final result. Reply with exactly one line, either
VERDICT: CORRECT
or
VERDICT: INCORRECT"""
VERDICT = re.compile(r"VERDICT:\s*\**\s*(CORRECT|INCORRECT)\b", re.I)


NUMBER = re.compile(r"\d+(?:\.\d+)?")


def differs_only_in_form(gold: str, extracted: str | None) -> bool:
    """A wrong maths verdict math-verify may have got wrong: the extracted answer holds every
    number of the gold (units, words, `x =`, a list written another way), so only its form
    differs. An answer with other numbers is wrong for sure and never costs a judge call."""
    numbers = NUMBER.findall(gold)
    if not numbers or not extracted:
        return False
    found = NUMBER.findall(extracted)
    return all(found.count(n) >= numbers.count(n) for n in set(numbers))


def needs_judge(row: dict[str, Any], correctness: dict[str, Any], cfg: VerifyConfig) -> bool:
    """Undecided rows with a reference, and (with judge_wrong) maths rows called wrong whose
    answer differs from the gold only in form."""
    reference = load_reference(row.get("reference"))
    if reference in (None, "") or not (row.get("answer") or "").strip():
        return False
    if correctness.get("ok") is None:
        return correctness.get("reason") == "unverifiable_reference"
    return (
        cfg.judge_wrong
        and row.get("domain") == "math"
        and correctness.get("reason") == "wrong_answer"
        and differs_only_in_form(str(reference), correctness.get("extracted"))
    )


def parse_verdict(reply: str) -> bool | None:
    _, after = split_trace(reply)
    found = VERDICT.findall(after or reply)
    return None if not found else found[-1].upper() == "CORRECT"


def judge_prompt(row: dict[str, Any]) -> str:
    reference = load_reference(row.get("reference"))
    if not isinstance(reference, str):
        reference = json.dumps(reference, ensure_ascii=False)
    answer = row.get("answer") or ""
    return PROMPT.format(problem=row["problem"], reference=reference, answer=answer[-4000:])


def run_judge(
    cfg: VerifyConfig,
    rows: list[dict[str, Any]],
    rules: dict[str, dict[str, Any]] | None = None,
    teacher: Any = None,
) -> dict[str, dict[str, Any]]:
    """row id -> the new correctness verdict (the rule's verdict kept under `rule`; a rule's
    `wrong_answer` the judge overturns is marked `overturned`, counted apart in reports)."""

    profile = load_profile(
        cfg.judge or "", {"sampling.temperature": 0.0, "sampling.max_tokens": cfg.judge_max_tokens}
    )
    own = teacher is None
    teacher = teacher or make_teacher(profile)
    by_id = {r["id"]: r for r in rows}
    requests = [
        Request(r["id"], build_messages(judge_prompt(r), "{problem}"), [0], prefill="")
        for r in rows
    ]
    out: dict[str, dict[str, Any]] = {}
    try:
        for samples in teacher.generate(requests):
            s = samples[0]
            reply = s.text if s.reasoning is None else format_trace(s.reasoning, s.text)
            verdict = None if s.finish_reason == "error" else parse_verdict(reply)
            reason = (
                None if verdict else "judge_incorrect" if verdict is False else "judge_unparseable"
            )
            rule = (rules or {}).get(s.key) or {"reason": "unverifiable_reference"}
            out[s.key] = {
                "ok": verdict,
                "reason": reason,
                "judge": {"model": teacher.model_name, "reply": reply[-2000:], "error": s.error},
                "rule": {**rule, "row": by_id[s.key]["id"]},
                "overturned": rule.get("ok") is False and verdict is True,
            }
    finally:
        if own:
            teacher.close()
    log.info("judge: %d rows, %d correct", len(out), sum(v["ok"] is True for v in out.values()))
    return out
