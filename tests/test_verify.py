"""Correctness checks: maths (math-verify), multiple choice, and the killing pool."""

import json
import time
from typing import Any

import pytest
from conftest import SHARED_BENCHMARKS

from distill.verify import VerifyConfig, check_correctness
from distill.verify.choice import check_choice, extract_choice
from distill.verify.maths import check_math

BOX = "\\boxed{{{}}}"


@pytest.mark.parametrize(
    "gold, answer, ok",
    [
        ("\\frac{1}{2}", "So the answer is \\boxed{\\dfrac{1}{2}}.", True),
        ("\\frac{1}{2}", BOX.format("0.5"), True),
        ("0.5", BOX.format("\\frac12"), True),
        ("[2, 5)", "The interval is \\boxed{[2,5)}", True),
        ("(2, 5)", BOX.format("[2,5)"), False),
        ("7425000", BOX.format("7,425,000"), True),
        ("7,425,000", BOX.format("7425000"), True),
        ("5", BOX.format("5 \\text{ cm}"), True),
        ("12", BOX.format("12\\ \\text{meters}"), True),
        ("30^\\circ", BOX.format("30"), True),
        ("30", BOX.format("30^{\\circ}"), True),
        ("\\{1,2,3\\}", BOX.format("\\{3,2,1\\}"), True),
        (
            "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
            BOX.format("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
            True,
        ),
        ("\\sqrt{2}", BOX.format("2^{1/2}"), True),
        ("x^2+2x+1", BOX.format("(x+1)^2"), True),
        ("6", BOX.format("7"), False),
        ("\\frac{1}{3}", BOX.format("0.33"), False),
        ("-2", BOX.format("2"), False),
        ("42", "I think it is 42.", True),  # no box: math-verify's other extractors
        ("\\{2, 3\\}", "The roots are \\boxed{2} and \\boxed{3}", True),  # math-verify joins boxes
    ],
)
def test_math_equivalence(gold, answer, ok):
    verdict = check_math(json.dumps(gold), answer)
    assert verdict.ok is ok, verdict
    assert verdict.reason == (None if ok else "wrong_answer")


def test_gold_first_argument_order():
    # verify() is not symmetric: an inequality gold accepts an interval prediction, not the
    # reverse. open-r1 passed (prediction, gold) for months.
    assert check_math(json.dumps("1<x<2"), BOX.format("(1,2)")).ok is True
    assert check_math(json.dumps("(1,2)"), BOX.format("1<x<2")).ok is False


@pytest.mark.parametrize("gold", [None, "", "\\weird{{", "\\undefinedcommand{"])
def test_unparseable_gold_is_undecided_not_a_pass(gold):
    verdict = check_math(None if gold is None else json.dumps(gold), BOX.format("6"))
    assert verdict.ok is None and verdict.reason == "unverifiable_reference"


def test_no_answer():
    assert check_math(json.dumps("4"), "").reason == "no_answer"
    assert check_math(json.dumps("4"), "I cannot solve this.").reason == "no_answer"


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("So the answer is \\boxed{C}.", "C"),
        ("\\boxed{\\text{(D)}}", "D"),
        ("Answer: B", "B"),
        ("The correct answer is (A).", "A"),
        ("**Answer:** (J)", "J"),
        ("Looking at the options, (B) is wrong, so it must be (C).", "C"),
        ("After checking everything\nE", "E"),
        ("The final answer is: F.", "F"),
        ("I believe the answer is unclear.", None),
        ("Answer: I think so", None),
    ],
)
def test_choice_extraction(answer, letter):
    assert extract_choice(answer) == letter


def test_choice_verdicts():
    assert check_choice(json.dumps("C"), "\\boxed{C}").ok is True
    assert check_choice(json.dumps("C"), "\\boxed{A}").reason == "wrong_answer"
    assert check_choice(json.dumps("C"), "no idea").reason == "no_answer"
    assert check_choice(json.dumps("maybe"), "\\boxed{A}").reason == "unverifiable_reference"


def test_text_domain():
    cfg = VerifyConfig()
    no_ref = check_correctness({"domain": "text", "reference": None, "answer": "hi"}, cfg)
    assert no_ref.ok is None and no_ref.reason is None  # nothing to verify, not a failure
    with_ref = check_correctness(
        {"domain": "text", "reference": json.dumps("Paris"), "answer": "Paris"}, cfg
    )
    assert with_ref.reason == "unverifiable_reference"  # rules cannot decide: the judge can


def _check(payload):
    from distill.verify import VerifyConfig, check_correctness

    return check_correctness(payload, VerifyConfig()).as_dict()


def test_adversarial_maths_is_bounded_by_the_timeout():
    from distill.verify.pool import run_pool

    tower = "\\boxed{9^{9^{9^{9^{9}}}}}"
    huge = "\\boxed{" + "+".join(f"\\frac{{{i}}}{{{i + 1}}}x^{{{i}}}" for i in range(4000)) + "}"
    assert len(huge) > 60_000
    rows = {
        "tower": {"domain": "math", "reference": json.dumps("5"), "answer": tower},
        "huge": {"domain": "math", "reference": json.dumps("5"), "answer": huge},
        **{
            f"ok{i}": {"domain": "math", "reference": json.dumps(str(i)), "answer": BOX.format(i)}
            for i in range(20)
        },
    }
    t = time.monotonic()
    outcomes = {
        o.key: o for o in run_pool(_check, ((k, r, 3.0) for k, r in rows.items()), workers=2)
    }
    elapsed = time.monotonic() - t
    assert all(outcomes[f"ok{i}"].value["ok"] is True for i in range(20))
    for key in ("tower", "huge"):
        o = outcomes[key]
        assert o.failure == "timeout" or (o.value and o.value["ok"] is False), o
    # two adversarial rows in parallel on two workers: about one timeout, never their sum of hours
    assert elapsed < 3.0 * 2 + 10, elapsed


def test_verify_rows_is_the_one_service_filter_and_eval_call(tmp_path):
    from distill.filters.readability import RowChecksConfig
    from distill.prompts import format_trace
    from distill.verify.service import verify_rows

    def row(key, domain, reference, answer, reasoning="Thinking."):
        return {"id": key, "problem": f"Problem {key}", "domain": domain, "finish_reason": "stop",
                "reference": json.dumps(reference), "reasoning": reasoning, "answer": answer,
                "completion": format_trace(reasoning, answer)}  # fmt: skip

    rows = [
        row("right", "math", "2", BOX.format("2")),
        row("wrong", "math", "2", BOX.format("3")),
        row("letter", "choice", "B", BOX.format("B")),
        row(
            "code",
            "code",
            {"inputs": ["3\n"], "outputs": ["6\n"]},
            "```python\nprint(2 * int(input()))\n```",
        ),
        row("empty", "math", "2", BOX.format("2"), reasoning=""),
    ]
    cfg = VerifyConfig(verify_timeout=5, workers=2)
    plain = verify_rows(rows, cfg, show_progress=False)  # eval and RL: correctness only, in memory
    assert {k: v["correctness"]["ok"] for k, v in plain.items()} == {
        "right": True, "wrong": False, "letter": True, "code": True, "empty": True,
    }  # fmt: skip
    assert plain["wrong"]["correctness"]["reason"] == "wrong_answer"
    assert all(set(v) == {"correctness"} for v in plain.values())

    # the filter adds its readability rules, run in the same worker, and a cache
    rules = RowChecksConfig(checks=["bad_format"])
    first = verify_rows(rows, cfg, also=rules, cache_dir=tmp_path / "cache", show_progress=False)
    assert (
        first["empty"]["bad_format"]["reason"] == "bad_format"
        and first["right"]["bad_format"]["ok"]
    )
    shards = sorted((tmp_path / "cache").glob("verdicts-*.parquet"))
    again = verify_rows(rows, cfg, also=rules, cache_dir=tmp_path / "cache", show_progress=False)
    assert again == first and sorted((tmp_path / "cache").glob("verdicts-*.parquet")) == shards


@pytest.mark.skipif(not SHARED_BENCHMARKS.is_dir(), reason="../shared/benchmarks not present")
@pytest.mark.parametrize("name", ["math500", "aime2024", "aime2025", "amc23", "gsm8k_test"])
def test_every_real_gold_boxed_as_an_answer_verifies_against_itself(name):
    """A gold math-verify cannot parse rejects every sample of its problem (MATH-500's `\\$36`)."""
    from distill.problems import DatasetSpec, load_problems

    problems, _ = load_problems(DatasetSpec(dataset=str(SHARED_BENCHMARKS / f"{name}.jsonl")))
    wrong = []
    for p in problems:
        gold = json.loads(p.reference)
        for cached in (True, False):  # the boxed shortcut and math-verify's full path
            verdict = check_math(
                p.reference, f"The answer is $\\boxed{{{gold}}}$.", gold_cache=cached
            )
            if verdict.ok is not True:
                wrong.append((p.problem_id, gold, cached, verdict.reason))
    assert not wrong, f"{len(wrong)} of {len(problems)}: {wrong[:10]}"


ANSWER_SHAPES = [
    "The answer is $\\boxed{%s}$.",
    "\\boxed{%s}",
    "So the final answer is \\[\\boxed{%s}\\]",
    "Answer: 5. Thus \\boxed{%s}.",
    "$\\boxed{%s}$$",
    "\\boxed{%s} and \\boxed{7}",
    "\\boxed{%s}, so x = 5",
    "The final answer is \\boxed{%s}. I hope it is correct.",
    "\\boxed{%s",
    "%s",
]


@pytest.mark.parametrize("box", ["\\sqrt{}", "5 \\div", "x=", "\\begin{array}", "5,,", "^5", "{}", "7"])
def test_a_box_that_does_not_parse_alone_takes_the_full_path(box):
    """math-verify reads such an answer at its other anchors (here the earlier "answer is
    $5$"), which the box alone lacks: the shortcut must not answer for it."""
    answer = f"My answer is $5$ so the final box is $\\boxed{{{box}}}$."
    fast = check_math(json.dumps("5"), answer, None).as_dict()
    assert fast == check_math(json.dumps("5"), answer, None, gold_cache=False).as_dict()


@pytest.mark.skipif(not SHARED_BENCHMARKS.is_dir(), reason="../shared/benchmarks not present")
def test_the_boxed_shortcut_gives_math_verifys_verdict_on_real_golds():
    """An answer whose only, final box parses alone gets the verdict math-verify gives that
    box; every other answer takes the full path. Same verdict, detail for detail, as parsing
    every row."""
    from distill.problems import DatasetSpec, load_problems

    golds = []
    for name in ("math500", "aime2024", "aime2025", "amc23"):
        problems, _ = load_problems(DatasetSpec(dataset=str(SHARED_BENCHMARKS / f"{name}.jsonl")))
        golds += [json.loads(p.reference) for p in problems]
    differ = []
    for i, gold in enumerate(golds):
        other = golds[(i + 7) % len(golds)]  # a wrong answer in the same shapes
        for shape in ANSWER_SHAPES:
            for said in (gold, other):
                answer = shape.replace("%s", str(said))
                fast = check_math(json.dumps(gold), answer, None).as_dict()
                slow = check_math(json.dumps(gold), answer, None, gold_cache=False).as_dict()
                if fast != slow:
                    differ.append((gold, answer, fast, slow))
    assert not differ, f"{len(differ)} answers: {differ[:5]}"


def test_a_plain_integer_is_the_object_math_verifys_parse_gives():
    """The integer shortcut (no ANTLR parse) against math-verify itself, for a gold and for a
    boxed answer: the same objects, of the same types, so every verdict is the same."""
    import random

    from math_verify import parse

    from distill.verify.maths import _integer, _only_box, _parsed_box, parse_gold

    rng = random.Random(0)
    numbers = ["0", "-0", "7", "-3", "007", "-0042", "2024", "1000000", "9" * 40, "-" + "1" * 25]
    numbers += [str(rng.randint(-(10 ** rng.randint(1, 30)), 10 ** rng.randint(1, 30))) for _ in range(150)]
    for text in numbers:
        assert _integer(text) is not None, text
        gold = parse_gold(text, None)
        assert [_integer(text)] == gold and type(gold[0]) is type(_integer(text)), text
        box = parse(f"\\boxed{{{text}}}", extraction_config=_only_box(), parsing_timeout=None)
        fast = list(_parsed_box(text, None))
        assert fast == box and [type(x) for x in fast] == [type(x) for x in box], text
    for other in ("1.5", "1,000", "+5", " 7", "٣", "2^{10}", "10!", "3x", ""):
        assert _integer(other) is None, other  # these take math-verify's own parse


def test_the_numeric_precheck_stays_within_math_verifys_alarm():
    """A wrong answer that sympy cannot evaluate in time (a power tower) is bounded by the
    in-process timeout the eval and RL paths use, and gets the full path's verdict."""
    tower = "\\boxed{9^{9^{9^{9^{9}}}}}"
    t = time.monotonic()
    fast = check_math(json.dumps("5"), tower, 1).as_dict()
    assert time.monotonic() - t < 10
    assert fast == check_math(json.dumps("5"), tower, 1, gold_cache=False).as_dict()
    assert fast["ok"] is False


# (gold, answer, the same?): math-verify's simplify says yes to the identities; the precheck
# must never answer for those, and answers for the rest without calling simplify
SYMBOLIC = [
    ("1", "\\sin^2 x + \\cos^2 x", True), ("x+1", "\\frac{x^2-1}{x-1}", True), ("|x|", "\\sqrt{x^2}", True),
    ("2x", "x+x", True), ("\\frac{1}{x}", "x^{-1}", True), ("x^{1/3}", "\\sqrt[3]{x}", True),
    ("\\tan x", "\\frac{\\sin x}{\\cos x}", True), ("x^2-y^2", "(x-y)(x+y)", True),
    ("\\sin 2x", "2\\sin x\\cos x", True), ("\\sin(x+y)", "\\sin x\\cos y+\\cos x\\sin y", True),
    ("x+1", "x+2", False), ("x^2-y^2", "(x-y)^2", False), ("\\cot x", "\\tan x", False),
    ("2^x", "x^2", False), ("x^3+3x-6", "12", False), ("7", "p - q", False), ("a+b", "\\frac{a+b}{2}", False),
]  # fmt: skip


@pytest.mark.parametrize("gold, said, same", SYMBOLIC)
def test_the_symbolic_precheck_gives_math_verifys_verdict(gold, said, same):
    """A wrong answer in symbols is proved wrong at one point instead of by simplify; an
    identity is zero there, so math-verify decides it."""
    from distill.verify.maths import _differ_numerically, _parsed_box, _parsed_gold

    answer = f"So the answer is $\\boxed{{{said}}}$."
    fast = check_math(json.dumps(gold), answer, None).as_dict()
    assert fast == check_math(json.dumps(gold), answer, None, gold_cache=False).as_dict()
    assert fast["ok"] is same
    pred = _parsed_box(said, None)
    assert _differ_numerically(list(_parsed_gold(gold, None)), list(pred), None) is not same


def _near_miss(gold: str) -> str:
    """A wrong answer of the gold's own shape, as R1's wrong answers mostly are: a digit changed."""
    i = next((i for i, c in enumerate(gold) if c.isdigit()), None)
    return f"{gold}+1" if i is None else gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1 :]


@pytest.mark.skipif(not SHARED_BENCHMARKS.is_dir(), reason="../shared/benchmarks not present")
def test_near_misses_of_real_golds_get_math_verifys_verdict():
    """Every MATH-500/AIME/AMC gold against a near miss of itself, boxed: the fast path (the
    numeric and symbolic prechecks included) gives the full path's verdict, detail for
    detail, and the symbolic precheck answers for many of them."""
    from distill.problems import DatasetSpec, load_problems
    from distill.verify.maths import _differ_numerically, _parsed_box, _parsed_gold

    differ, symbolic = [], 0
    for name in ("math500", "aime2024", "aime2025", "amc23"):
        problems, _ = load_problems(DatasetSpec(dataset=str(SHARED_BENCHMARKS / f"{name}.jsonl")))
        for p in problems:
            gold = json.loads(p.reference)
            answer = f"The answer is $\\boxed{{{_near_miss(gold)}}}$."
            fast = check_math(p.reference, answer, None).as_dict()
            if fast != check_math(p.reference, answer, None, gold_cache=False).as_dict():
                differ.append((gold, answer))
            g, pred = list(_parsed_gold(gold, None)), _parsed_box(_near_miss(gold), None)
            if pred is not None and g and getattr(g[0], "free_symbols", None):
                symbolic += _differ_numerically(g, list(pred), None)
    assert not differ, f"{len(differ)} answers: {differ[:5]}"
    assert symbolic >= 20, symbolic


def _parses(texts: list[str]) -> list[Any]:
    """math-verify's parse of each text as a gold and as a boxed answer, comparable exactly."""
    from math_verify import parse
    from math_verify.parser import extract_latex, parse_latex_cached
    from sympy import srepr

    from distill.verify.maths import _only_box, parse_gold

    parse_latex_cached.cache_clear()  # math-verify's own caches would answer for the other mode
    extract_latex.cache_clear()
    out = []
    for text in texts:
        for got in (parse_gold(text, None), parse(f"\\boxed{{{text}}}", extraction_config=_only_box(), parsing_timeout=None)):  # fmt: skip
            out.append([x if isinstance(x, str) else (type(x).__name__, srepr(x)) for x in got])
    return out


@pytest.mark.skipif(not SHARED_BENCHMARKS.is_dir(), reason="../shared/benchmarks not present")
def test_two_stage_parsing_gives_what_ll_alone_gives():
    """SLL first, LL where SLL fails (`_two_stage_parsing`): the same sympy objects, type and
    structure, as LL alone for every gold of the five benchmarks, a near miss of each, and
    malformed LaTeX (which both reject)."""
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    from distill.problems import DatasetSpec, load_problems
    from distill.verify.maths import _two_stage_parsing

    texts = ["\\frac{1}{", "(1, 2", "x^{", "\\sqrt[3]", "1,,2", "\\begin{pmatrix} 1 & \\end{pmatrix}", "[a, b) \\cup"]
    for name in ("math500", "aime2024", "aime2025", "amc23", "gsm8k_test"):
        problems, _ = load_problems(DatasetSpec(dataset=str(SHARED_BENCHMARKS / f"{name}.jsonl")))
        texts += [t for p in problems for t in (json.loads(p.reference), _near_miss(json.loads(p.reference)))]
    texts = sorted(set(texts))
    _two_stage_parsing()
    two_stage = _Latex2Sympy.create_parser
    try:
        fast = _parses(texts)
        _Latex2Sympy.create_parser = two_stage.__wrapped__
        full = _parses(texts)
    finally:
        _Latex2Sympy.create_parser = two_stage
    differ = [(t, a, b) for t, a, b in zip([t for t in texts for _ in (0, 1)], fast, full, strict=True) if a != b]
    assert not differ, f"{len(differ)} of {len(fast)}: {differ[:3]}"
    assert sum(1 for x in full if x and not isinstance(x[0], str)) > 1500  # parsed, not only errors


def _slow_or_dead(payload):
    import os
    import time

    if payload == "hang":
        time.sleep(60)
    if payload == "die":
        os._exit(1)
    if payload == "raise":
        raise ValueError("bad row")
    return payload.upper()


def test_a_group_is_answered_item_by_item_and_a_stuck_item_fails_alone():
    """A group travels to one worker; the item that hangs, kills its worker or raises is the
    only one that fails, each item of the group keeps its own deadline, the rest are answered."""
    from distill.verify.pool import run_pool

    groups = [
        [("a0", "a", 1.0), ("hang", "hang", 1.0), ("a2", "b", 1.0), ("a3", "c", 1.0)],
        [("b0", "d", 1.0), ("die", "die", 1.0), ("b2", "e", 1.0)],
        ("single", "f", 1.0),
        [("c0", "g", 1.0), ("raise", "raise", 1.0), ("c2", "h", 1.0)],
    ]
    t = time.monotonic()
    out = {o.key: o for o in run_pool(_slow_or_dead, groups, workers=2)}
    assert time.monotonic() - t < 1.0 + 10  # one deadline, not the group's sum or the sleep
    assert out["hang"].failure == "timeout"
    assert out["die"].failure == "crash: worker died"
    assert out["raise"].failure.startswith("crash: ValueError")
    answered = {k: o.value for k, o in out.items() if o.failure is None}
    assert answered == {"a0": "A", "a2": "B", "a3": "C", "b0": "D", "b2": "E", "single": "F",
                        "c0": "G", "c2": "H"}  # fmt: skip


def test_a_workers_pipe_holds_the_two_groups_it_is_sent_without_blocking_the_dispatcher():
    # 16 long traces are ~256 KB; a 64 KB pipe made every send wait for the worker's reader
    # thread, which gets the GIL only between checks (2.7 s of 12 on the benchmark corpus)
    import fcntl
    import multiprocessing as mp

    from distill.verify.pool import _Slot

    slot = _Slot(mp.get_context("forkserver"), _slow_or_dead)
    try:
        assert fcntl.fcntl(slot.tasks.fileno(), fcntl.F_GETPIPE_SZ) >= 1 << 20
    finally:
        slot.kill()


def test_a_problems_maths_samples_are_grouped_and_code_goes_alone():
    from distill.verify.service import GROUP, _grouped

    rows = [{"problem_id": "p", "domain": "math"}] * (GROUP + 2)
    rows += [{"problem_id": "q", "domain": "math"}, {"problem_id": "c", "domain": "code"}] * 2
    rows += [{"problem_id": None, "domain": "math"}]
    out = list(_grouped((r, (i, r, 1.0)) for i, r in enumerate(rows)))
    sizes = [len(x) if isinstance(x, list) else 1 for x in out]
    assert sizes == [GROUP, 2, 1, 1, 1, 1, 1]
    assert [i for x in out for i, _, _ in (x if isinstance(x, list) else [x])] == list(range(len(rows)))
