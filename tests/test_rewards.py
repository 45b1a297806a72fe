"""`distill rl`'s rewards on real traces: the tiny teacher's own outputs (right and wrong, as
`distill generate` wrote them), DeepSeek-R1-style responses to MATH-500 and HumanEval problems,
and R1-Zero's answer-tag layout. Accuracy must be the filter's verdict, row for row."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from distill.prompts import PREFILL, format_trace
from distill.rewards import (
    Parsed,
    Score,
    accuracy_score,
    accuracy_scores,
    format_score,
    language_score,
    overlong_score,
    parse,
)
from distill.verify import VerifyConfig

CFG = VerifyConfig(verify_timeout=5, workers=2)
CLOSE = "</" + "think>"  # spelled apart: the trace format has one home (prompts.py)

# --- real traces -----------------------------------------------------------------------------
# The bundled tiny teacher's outputs on the demo's problems (distill demo, seed 0), verbatim.
TEACHER_RIGHT = (
    "<think>\nSubtract column by column, starting from the ones digit.\n8 - 8 - 0 = 0, write 0, "
    "borrow 0.\n8 - 7 - 0 = 1, write 1, borrow 0.\nReading the written digits from last to first "
    f"gives 10.\n{CLOSE}\n\nThe final answer is \\boxed{{10}}"
)
TEACHER_WRONG = (  # a wrong times-table fact (4 x 4 = 15) carried through to the answer
    "<think>\nMultiply digit by digit, starting from the ones digit.\n4 × 4 + 0 = 15, write 5, "
    "carry 1.\n5 × 4 + 1 = 21, write 1, carry 2.\nThe last carry 2 is the leading digit.\nReading "
    f"the written digits from last to first gives 215.\n{CLOSE}\n\nThe final answer is \\boxed{{215}}"
)
# DeepSeek-R1's layout on MATH-500 (test/precalculus/807): a long English think block, then a
# summary that restates the answer in \boxed{}.
POLAR = "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$"  # fmt: skip
R1_POLAR = (
    "<think>\nOkay, so I need to convert the rectangular coordinates (0, 3) to polar coordinates. "
    "Hmm, polar coordinates are (r, θ), where r is the distance from the origin and θ is the angle "
    "from the positive x-axis. Let me recall the formulas: r = √(x² + y²) and θ = arctan(y/x).\n\n"
    "Here x = 0 and y = 3, so r = √(0 + 9) = 3. For θ, y/x is undefined because x is zero. Wait, "
    "the point lies on the positive y-axis, so the angle is π/2. Let me double-check: "
    "3cos(π/2) = 0 and 3sin(π/2) = 3. Yes, that matches.\n"
    f"{CLOSE}\n\nTo convert $(0, 3)$ to polar coordinates:\n\n1. $r = \\sqrt{{0^2 + 3^2}} = 3$.\n"
    "2. The point is on the positive $y$-axis, so $\\theta = \\frac{\\pi}{2}$.\n\n"
    "\\[\n\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}\n\\]"
)
POLAR_GOLD = "\\left( 3, \\frac{\\pi}{2} \\right)"
# R1-Zero's known readability problem (R1 paper, sec. 2.3): the reasoning drifts into Chinese.
R1_MIXED = (
    "<think>\nOkay, let me think. 首先，点 $(0,3)$ 在正 $y$ 轴上，所以 $r = 3$，角度是 "
    f"$\\frac{{\\pi}}{{2}}$。因此答案是 $(3, \\frac{{\\pi}}{{2}})$。\n{CLOSE}\n\n"
    "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}"
)
# HumanEval/0-style code answer in R1's layout: the code block after the reasoning.
ADD = "def add(a: int, b: int) -> int:\n    \"\"\"Return the sum of a and b.\"\"\"\n"
CODE_REF = {"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n", "entry_point": "add"}  # fmt: skip
CODE_RIGHT = format_trace("The sum is a + b.", "```python\ndef add(a, b):\n    return a + b\n```")
CODE_WRONG = format_trace("Subtract? No: keep it simple.", "```python\ndef add(a, b):\n    return a - b\n```")  # fmt: skip
ZERO_RIGHT = " <think> 3x + 5 = 20, so 3x = 15 and x = 5. </think> <answer> 5 </answer>"
ZERO_NO_TAGS = " <think> 3x + 5 = 20, so 3x = 15 and x = 5. </think> So x = 5."

TRACES = [  # (problem, domain, gold, completion, filter's correct)
    ("What is 88 - 78?", "math", "10", TEACHER_RIGHT, True),
    ("What is 54 × 4?", "math", "216", TEACHER_WRONG, False),
    (POLAR, "math", POLAR_GOLD, R1_POLAR, True),
    (POLAR, "math", POLAR_GOLD, R1_MIXED, True),  # correct, though the filter rejects its language
    (POLAR, "math", POLAR_GOLD, R1_POLAR.split(CLOSE)[0], False),  # truncated: no answer
    (ADD, "code", CODE_REF, CODE_RIGHT, True),
    (ADD, "code", CODE_REF, CODE_WRONG, False),
    ("Which is prime?\n\nA) 4\nB) 7\nC) 9\nD) 15", "choice", "B", format_trace("7 has no divisors but 1 and 7.", "\\boxed{B}"), True),
    ("Which is prime?\n\nA) 4\nB) 7\nC) 9\nD) 15", "choice", "B", format_trace("9 looks prime.", "\\boxed{C}"), False),
]


def rows_of(traces):
    return [{"problem": p, "domain": d, "reference": json.dumps(g)} for p, d, g, _, _ in traces]


def test_accuracy_is_the_filters_verdict_row_for_row(tmp_path: Path):
    from distill.filter import FilterConfig, filter_corpus
    from distill.filters.corpus_checks import CorpusConfig
    from distill.prompts import split_trace
    from distill.records import FIELDS, CorpusWriter, corpus_files, iter_rows, read_corpus

    rows = []
    for i, (problem, domain, gold, completion, _) in enumerate(TRACES):
        reasoning, answer = split_trace(completion)
        finish = "length" if CLOSE not in completion else "stop"
        rows.append({f: None for f in FIELDS} | {
            "id": f"p{i}/0", "problem_id": f"p{i}", "sample_index": 0, "problem": problem,
            "domain": domain, "reference": json.dumps(gold), "messages": "[]",
            "completion": completion, "reasoning": reasoning, "answer": answer,
            "finish_reason": finish, "prompt_tokens": 10, "completion_tokens": len(completion) // 4,
            "teacher": "t", "sampling": "{}",
        })  # fmt: skip
    w = CorpusWriter(tmp_path / "traces", {"teacher": {"model": "t"}})
    w.write_shard(rows)
    w.write_manifest()
    filter_corpus(FilterConfig(input=tmp_path / "traces", output=tmp_path / "out", verify=CFG,
                               corpus=CorpusConfig(dedup=False, near_dup_threshold=0.0),
                               progress=False, report=False))  # fmt: skip
    verdicts = {}
    for split in ("kept", "rejected"):
        for r in iter_rows(read_corpus(corpus_files(tmp_path / "out", split=split))):
            verdicts[r["problem_id"]] = (r["correct"], r["kept"])
    scores = accuracy_scores([parse(c, "r1") for *_, c, _ in TRACES], rows_of(TRACES), CFG)
    for i, ((*_, expected), score) in enumerate(zip(TRACES, scores, strict=True)):
        correct, kept = verdicts[f"p{i}"]
        assert correct is expected, (i, correct)
        assert score.value == (1.0 if correct else 0.0), (i, score)
        if kept:  # a sample the filter keeps always earns accuracy 1
            assert score.value == 1.0
    assert scores[4].reason == "no_answer" and scores[1].reason == "wrong_answer"


def test_accuracy_dedups_and_remembers_verdicts():
    cache: dict = {}
    parsed = [parse(TEACHER_RIGHT, "r1")] * 3 + [parse(TEACHER_WRONG, "r1")]
    rows = [{"problem": "What is 88 - 78?", "domain": "math", "reference": json.dumps("10")}] * 4
    first = accuracy_scores(parsed, rows, CFG, cache)
    assert [s.value for s in first] == [1.0, 1.0, 1.0, 0.0] and len(cache) == 2
    t = time.perf_counter()
    again = accuracy_scores(parsed, rows, CFG, cache)  # all cached: no worker is started
    assert again == first and time.perf_counter() - t < 0.05


def test_a_pathological_answer_costs_its_timeout_not_the_step():
    tower = format_trace("Power towers.", "\\boxed{9^{9^{9^{9^{9}}}}}")
    parsed = [parse(tower, "r1"), parse(TEACHER_RIGHT, "r1")]
    rows = [{"problem": "x", "domain": "math", "reference": json.dumps("5")},
            {"problem": "y", "domain": "math", "reference": json.dumps("10")}]  # fmt: skip
    t = time.monotonic()
    scores = accuracy_scores(parsed, rows, VerifyConfig(verify_timeout=2, workers=2))
    assert time.monotonic() - t < 2 + 10
    assert scores[0].value == 0.0 and scores[0].reason in ("verify_timeout", "wrong_answer")
    assert scores[1].value == 1.0


def test_accuracy_score_maps_verdicts():
    assert accuracy_score({"ok": True, "extracted": "5"}) == Score(1.0, "ok", {"extracted": "5"})
    assert accuracy_score({"ok": False, "reason": "verify_timeout"}).value == 0.0
    undecided = accuracy_score({"ok": None, "reason": "unverifiable_reference"})
    assert undecided.value is None and undecided.reason == "unverifiable_reference"


@pytest.mark.parametrize(
    "completion, style, value",
    [
        (TEACHER_RIGHT, "r1", 1.0),
        (R1_POLAR, "r1", 1.0),
        (R1_POLAR.split(CLOSE)[0], "r1", 0.0),  # truncated inside the reasoning
        (CODE_RIGHT, "r1", 0.0),  # a code answer has no \boxed{}: not the maths format
        (TEACHER_RIGHT.replace("<think>\n", ""), "r1", 0.0),  # prefill lost: no opening tag
        (TEACHER_RIGHT + "\n<think>\nagain\n" + CLOSE, "r1", 0.0),  # two think blocks
        (ZERO_RIGHT, "r1-zero", 1.0),
        (ZERO_NO_TAGS, "r1-zero", 0.0),
        (ZERO_RIGHT + " <answer> 6 </answer>", "r1-zero", 0.0),
        (" <think> </think> <answer> 5 </answer>", "r1-zero", 0.0),  # empty reasoning
    ],
)
def test_format(completion, style, value):
    score = format_score(parse(completion, style), style)
    assert score.value == value and (value or score.reason == "bad_format")


def test_format_does_not_apply_to_plain():
    assert format_score(parse("So the result is 5.", "plain"), "plain").value is None


def test_completions_from_trl_get_the_prefill_back():
    # TRL hands rewards the text after the prompt; the prompt ended with "<think>\n"
    generated = TEACHER_RIGHT.removeprefix(PREFILL)
    assert format_score(parse(generated, "r1"), "r1").value == 0.0
    assert format_score(parse(PREFILL + generated, "r1"), "r1").value == 1.0


def test_answers_per_style():
    assert parse(R1_POLAR, "r1").answer.endswith("\\]") and "Okay" in parse(R1_POLAR, "r1").reasoning
    assert parse(ZERO_RIGHT, "r1-zero").answer == "5"
    assert parse(ZERO_NO_TAGS, "r1-zero").answer == ""
    assert parse(" 12 + 3 = 15.\nSo the result is 15.", "plain").answer.endswith("15.")
    with pytest.raises(ValueError):
        parse("x", "chatml")


def test_r1_zero_and_plain_answers_verify():
    rows = [{"problem": "Solve 3x + 5 = 20.", "domain": "math", "reference": json.dumps("5")}] * 3
    parsed = [parse(ZERO_RIGHT, "r1-zero"), parse(ZERO_NO_TAGS, "r1-zero"),
              parse("3x = 15, so the result is 5.", "plain")]  # fmt: skip
    assert [s.value for s in accuracy_scores(parsed, rows, CFG)] == [1.0, 0.0, 1.0]


def test_language_consistency_is_the_filters_measure():
    from distill.filters.readability import LanguageMixing

    english = language_score(parse(R1_POLAR, "r1"), POLAR)
    mixed = language_score(parse(R1_MIXED, "r1"), POLAR)
    assert english.value == 1.0 and english.reason == "ok"
    assert mixed.value < 0.5 and mixed.reason == "language_mixing"
    # the same share the filter's language_mixing rule computes on the same trace
    p = parse(R1_MIXED, "r1")
    rule = LanguageMixing().check({"problem": POLAR, "reasoning": p.reasoning, "answer": p.answer})
    share = rule.details.get("reasoning_share", rule.details.get("share"))
    assert rule.reason == "language_mixing" and share == round(mixed.value, 4)
    # a Chinese problem reasoned in Chinese is consistent
    zh = "求满足 $3x + 5 = 20$ 的 $x$ 的值。"
    ok = language_score(Parsed("", "首先，$3x = 15$，所以 $x = 5$。", ""), zh)
    assert ok.value == 1.0


@pytest.mark.parametrize(
    "tokens, value", [(10, 0.0), (768, 0.0), (896, -0.5), (1024, -1.0), (2000, -1.0)]
)
def test_overlong_is_dapos_soft_punishment(tokens, value):
    assert overlong_score(tokens, 1024, 256).value == pytest.approx(value)


def test_overlong_matches_trl():
    from trl.rewards import get_soft_overlong_punishment

    trl_fn = get_soft_overlong_punishment(max_completion_len=100, soft_punish_cache=20)
    lengths = [10, 80, 81, 90, 100]
    assert trl_fn([[1] * n for n in lengths]) == pytest.approx(
        [overlong_score(n, 100, 20).value for n in lengths]
    )
