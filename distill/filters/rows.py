"""Per-row checks, run together in a worker process: correctness, then readability."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from distill.config import option
from distill.verify import VerifyConfig, check_correctness

# math-verify logs the whole offending input on a timeout (100k characters of LaTeX ...).
CHECKS = [
    "truncated",
    "bad_format",
    "language_mixing",
    "long_paragraph",
    "code_block",
    "repetition",
    "too_long",
]
for _name in ("math_verify", "latex2sympy2_extended"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


@dataclass
class RowChecksConfig:
    """R1's readability rules and the length budget: thresholds of the per-row checks."""

    checks: list[str] = option(
        default_factory=lambda: list(CHECKS),
        help="Readability checks to run: " + ", ".join(CHECKS) + ".",
    )
    language_threshold: float = option(
        0.95, help="language_mixing: least share of reasoning words in the problem's language."
    )
    language_id: bool = option(
        False, help="language_mixing: also tell same-script languages apart (extra 'langid')."
    )
    max_paragraph_chars: int = option(3000, help="long_paragraph: longest paragraph allowed.")
    max_line_repeats: int = option(10, help="repetition: times one line (>= 8 chars) may repeat.")
    dup_ngram: int = option(10, help="repetition: n of the duplicated word n-grams measured.")
    max_dup_ngram_frac: float = option(
        0.5, help="repetition: most share of characters inside duplicated n-grams (Gopher)."
    )
    repetition_prefilter: float = option(
        0.2,
        help="repetition: share of text in repeated sentences above which the n-gram measure runs.",
    )
    max_tokens: int = option(32768, help="too_long: token budget of a completion.")
    tokenizer: str | None = option(
        None, help="too_long: the student's tokenizer (Hub id or path); else a character proxy."
    )
    chars_per_token: float = option(3.6, help="too_long: characters per token of the proxy.")

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(
                f"rows.checks: unknown check '{unknown[0]}' (known: {', '.join(CHECKS)})"
            )


def check_row(
    payload: tuple[dict[str, Any], VerifyConfig, RowChecksConfig],
) -> dict[str, dict[str, Any]]:
    """Every per-row verdict of one record, as plain dicts (what `checks` stores)."""
    from distill.filters import readability

    row, verify_cfg, rows_cfg = payload
    out = {"correctness": check_correctness(row, verify_cfg).as_dict()}
    for name in rows_cfg.checks:
        out[name] = readability.CHECKS[name](row, rows_cfg).as_dict()
    return out
