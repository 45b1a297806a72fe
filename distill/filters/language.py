"""R1's language-consistency measure: the share of a text's words in the expected language.

Used by the filter's `language_mixing` rule and by `distill rl`'s language-consistency reward,
so the two agree on every trace. Words are counted per script (Latin, Cyrillic, Arabic,
Hebrew, Devanagari, Thai, Hangul; Han and Kana per character); maths, LaTeX, code, numbers and
single-letter variables belong to no language. The problem's own text decides the expected
script (Kana means Japanese, Hangul Korean). Greek letters are maths.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

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
NEUTRAL = re.compile(
    r"```.*?(?:```|$)|`[^`\n]*`"  # code
    r"|\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)"  # display and inline maths
    r"|\\begin\{(\w+\*?)\}.*?\\end\{\1\}"  # environments
    r"|\\[A-Za-z]+"  # commands (\frac, \sqrt, ...)
    r"|(?<![A-Za-z])(?:[A-Za-z]|sin|cos|tan|cot|sec|csc|log|ln|exp|lim|max|min|gcd|lcm|mod|det"
    r"|arcsin|arccos|arctan)(?![A-Za-z])",  # variables and function names, even next to CJK
    re.S,
)


@lru_cache(maxsize=1)
def _script_table() -> Any:
    """Code point (BMP) -> script number (0: none); numpy is imported on first use only."""
    import numpy as np

    table = np.zeros(0x10000, dtype=np.uint8)
    for i, name in enumerate(SCRIPTS, start=1):
        for lo, hi in SCRIPT_RANGES[name]:
            table[lo : hi + 1] = i
    return table


def script_words(text: str) -> Counter[str]:
    """Words per script in `text` (maths, code and numbers already removed by the caller)."""
    import numpy as np

    if not text:
        return Counter()
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    sid = _script_table()[np.minimum(cp, 0xFFFF)]
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
    words = script_words(NEUTRAL.sub(" ", problem))
    if not words:
        return {"latin"}
    if words.get("kana"):
        return {"kana", "han"}  # Japanese
    if words.get("hangul"):
        return {"hangul", "han"}  # Korean
    return {words.most_common(1)[0][0]}


def language_share(text: str, expected: set[str]) -> tuple[float, Counter[str]]:
    """R1's language-consistency measure: share of the text's words in the expected scripts."""
    if expected == {"latin"} and (text.isascii() or not _NON_LATIN.search(text)):
        return 1.0, Counter()  # the common case, decided by one scan
    words = script_words(NEUTRAL.sub(" ", text))
    total = sum(words.values())
    if total == 0:
        return 1.0, words
    return sum(words[s] for s in expected) / total, words
