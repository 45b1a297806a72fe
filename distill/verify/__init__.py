"""Correctness checks: maths (math-verify), multiple choice, code (sandboxed), judge.

`check_correctness(row, cfg)` is pure: it reads the record's domain, reference and answer
and returns a Verdict (ok True / False / None with a reason name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from distill.config import option
from distill.verdict import Verdict, undecided
from distill.verify.sandbox import SandboxLimits


@dataclass
class VerifyConfig:
    """How correctness is decided."""

    verify_timeout: float = option(
        10.0,
        help="Wall-clock seconds per maths/choice row; a stuck worker is killed (verify_timeout).",
    )
    workers: int | None = option(None, help="Worker processes (default: every core).")
    judge: str | None = option(
        None, help="Teacher profile of a generative judge for rows rules cannot decide."
    )
    judge_max_tokens: int = option(2048, help="Most tokens of a judge reply.")
    judge_wrong: bool = option(
        False,
        help="Also send the judge maths rows math-verify calls wrong whose answer holds the "
        "gold's numbers in another form (OpenR1-Math's second pass); counted apart.",
    )
    keep_unverified: bool = option(
        False, help="Keep rows whose correctness cannot be decided (default: reject them)."
    )
    code: SandboxLimits = field(default_factory=SandboxLimits)


# The reasons a correctness verdict can give, as reports explain them.
REASONS = {
    "wrong_answer": "the verified answer differs from the reference (or a code test failed)",
    "no_answer": "no answer could be extracted from the text after the reasoning",
    "unverifiable_reference": "the reference cannot be parsed, so correctness is undecided",
    "verify_timeout": "verification exceeded its wall-clock limit and was killed",
    "verify_error": "the checker itself failed on this row",
    "judge_incorrect": "the generative judge said incorrect",
    "judge_unparseable": "the judge's reply did not follow the verdict format",
}


def load_reference(reference: Any) -> Any:
    """References are JSON; corpora made elsewhere may hold plain strings."""
    if reference is None or not isinstance(reference, str):
        return reference
    try:
        return json.loads(reference)
    except json.JSONDecodeError:
        return reference


def check_correctness(
    row: dict[str, Any], cfg: VerifyConfig, timeout: int | None = None
) -> Verdict:
    """`timeout`: math-verify's own limit; None when a pool enforces `verify_timeout`."""
    # the checkers come with the first check (the worker pool's fork server preloads them),
    # not with every import of VerifyConfig (`distill --help` among them)
    from distill.verify.choice import check_choice
    from distill.verify.code_tests import check_code
    from distill.verify.maths import check_math

    domain, answer = row.get("domain"), row.get("answer") or ""
    gold = load_reference(row.get("reference"))
    ref = None if gold is None else json.dumps(gold)
    if domain == "math":
        return check_math(ref, answer, timeout)
    if domain == "choice":
        return check_choice(ref, answer)
    if domain == "code":
        return check_code(ref, answer, cfg.code)
    if domain == "text":
        if gold in (None, ""):
            return Verdict(None, None, {"note": "no reference: correctness does not apply"})
        return undecided("unverifiable_reference", gold=gold)
    return undecided("unknown_domain", domain=domain)
