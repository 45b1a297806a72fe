"""R1's readability rules, each on hand-written traces."""

import pytest

from distill.filters import readability as R
from distill.filters.readability import RULES, RowChecksConfig

CFG = RowChecksConfig()
EN = "Find the value of $x$ such that $3x + 5 = 20$."
ZH = "求满足 $3x + 5 = 20$ 的 $x$ 的值。"


def row(
    problem=EN,
    reasoning="We subtract 5 and divide by 3, so x is 5.",
    answer="\\boxed{5}",
    domain="math",
    finish="stop",
):
    return {
        "problem": problem,
        "reasoning": reasoning,
        "answer": answer,
        "domain": domain,
        "completion": f"<think>\n{reasoning}\n</think>\n\n{answer}",
        "finish_reason": finish,
    }


def test_each_rule_is_one_unit():
    # a rule's name is the reason it reports, and the config holds its settings under that name
    assert CFG.checks == list(RULES)
    for name, rule in RULES.items():
        assert rule.name == name and rule.meaning and isinstance(getattr(CFG, name), rule)
    assert R.Truncated().check({"finish_reason": "length"}).reason == "truncated"


def test_truncated():
    assert CFG.truncated.check(row(finish="length")).reason == "truncated"
    assert CFG.truncated.check(row(finish="error")).reason == "truncated"
    assert CFG.truncated.check(row()).ok


@pytest.mark.parametrize(
    "completion, reasoning, answer, ok",
    [
        ("<think>\nr\n</think>\n\na", "r", "a", True),
        ("<think>\nr\n</think>\n\n", "r", "", False),  # no summary
        ("<think>\n\n</think>\n\na", "", "a", False),  # empty reasoning
        (
            "<think>\na\n</think>\nb\n<think>\nc\n</think>\n\nd",
            "a...c",
            "d",
            False,
        ),  # repeated tags
        ("<think>\nnever closed", "never closed", "", False),
        ("r\n</think>\n\na", "r", "a", False),  # no opening tag
    ],
)
def test_bad_format(completion, reasoning, answer, ok):
    verdict = CFG.bad_format.check(
        {"completion": completion, "reasoning": reasoning, "answer": answer}
    )
    assert verdict.ok is ok and (ok or verdict.reason == "bad_format")


def test_chinese_reasoning_on_english_problem_is_flagged():
    v = CFG.language_mixing.check(
        row(EN, "首先，我们有 $3x + 5 = 20$，所以 $3x = 15$，因此 $x = 5$。我们验证一下，正确。")
    )
    assert v.reason == "language_mixing" and v.details["reasoning_share"] < 0.1
    assert v.details["where"] == "reasoning"


def test_clean_reasoning_with_a_mixed_language_summary_after_think_is_flagged():
    summary = "So x = 5. 所以答案是五，我们已经验证过这个结果是正确的 and it checks out. \\boxed{5}"
    v = CFG.language_mixing.check(row(EN, answer=summary))
    assert v.reason == "language_mixing" and v.details["where"] == "answer"
    assert v.details["reasoning_share"] == 1.0 and v.details["answer_share"] < 0.95
    assert CFG.language_mixing.check(row(EN, answer="So $x = 5$. \\boxed{5}")).ok


def test_chinese_reasoning_on_chinese_problem_is_fine():
    v = CFG.language_mixing.check(
        row(
            ZH,
            "首先，我们有 $3x + 5 = 20$，所以 $3x = 15$，因此 $x = 5$。验证：3乘5加5等于20，正确。",
        )
    )
    assert v.ok and v.details["expected"] == ["han"]


def test_latex_heavy_maths_is_not_mixing():
    heavy = (
        "We have $\\frac{\\sqrt{3}}{2} = \\sin(\\theta)$, so $\\theta = \\frac{\\pi}{3}$. "
        "\\[ \\int_0^1 x^2 \\, dx = \\frac{1}{3} \\] Then α + β = π and x_1, y_2 satisfy \\begin{align} a &= b \\end{align}."
    )
    assert CFG.language_mixing.check(row(EN, heavy)).ok
    # on a Chinese problem the same LaTeX does not count as English words
    zh = (
        "因为 $\\frac{\\sqrt{3}}{2} = \\sin(\\theta)$，所以 $\\theta = \\frac{\\pi}{3}$。"
        "\\[ \\int_0^1 x^2 \\, dx = \\frac{1}{3} \\] 设 x 和 y 满足 \\begin{align} a &= b \\end{align}，所以答案是三分之一。"
    )
    assert CFG.language_mixing.check(row(ZH, zh)).ok


def test_mixing_within_a_trace_and_other_scripts():
    mixed = "首先我们需要计算这个值，然后 let me double check the arithmetic here again carefully。所以答案是五。"
    v = CFG.language_mixing.check(row(ZH, mixed))
    assert v.reason == "language_mixing" and 0.3 < v.details["reasoning_share"] < 0.95
    assert (
        CFG.language_mixing.check(row(EN, "Сначала решим уравнение и проверим ответ.")).reason
        == "language_mixing"
    )
    jp = "まず、方程式を解きます。答えは5です。"
    assert CFG.language_mixing.check(row("方程式 $3x+5=20$ を解きなさい。", jp)).ok


def test_long_paragraph():
    short = "\n\n".join(["A normal paragraph of reasoning. " * 10] * 20)
    assert CFG.long_paragraph.check(row(reasoning=short)).ok
    long = short + "\n\n" + "This paragraph just goes on. " * 200
    v = CFG.long_paragraph.check(row(reasoning=long))
    assert v.reason == "long_paragraph" and v.details["chars"] > CFG.long_paragraph.max_chars


def test_code_block():
    v = CFG.code_block.check(
        row(answer="So \\boxed{5}.\n```python\nprint(5)\n```")
    )  # python in a maths answer
    assert v.reason == "code_block" and v.details["where"] == "answer"
    assert (
        CFG.code_block.check(row(reasoning="Let me code it:\n```\nx=1\n```")).reason == "code_block"
    )
    assert CFG.code_block.check(row(answer="```python\nprint(5)\n```", domain="code")).ok


def test_looping_trace_is_repetition():
    loop = "Let me start.\n" + "\n".join(["Wait, I need to recompute the total sum again."] * 30)
    v = CFG.repetition.check(row(reasoning=loop))
    assert v.reason == "repetition" and v.details["repeats"] > 10
    inline_loop = (
        "First, 2 + 2 = 4. "
        + "So the answer is 4 and then we check that 2 + 2 = 4 again and " * 120
    )
    v = CFG.repetition.check(row(reasoning=inline_loop))
    assert v.reason == "repetition" and v.details["dup_10gram_frac"] > 0.9
    ordinary = "\n\n".join(
        f"Step {i}: multiply {i} by {i + 3} to get {i * (i + 3)}, then add {7 * i}."
        for i in range(200)
    )
    assert CFG.repetition.check(row(reasoning=ordinary)).ok


def test_too_long_character_proxy_and_tokenizer(tiny_qwen):
    assert CFG.too_long.check(row(reasoning="x" * 1000)).ok
    v = CFG.too_long.check(row(reasoning="x " * 100_000))
    assert v.reason == "too_long" and v.details["counted_by"] == "chars/3.6"
    rule = R.TooLong(max_tokens=50, tokenizer=str(tiny_qwen))
    v = rule.check(row(reasoning="word " * 100))
    assert v.reason == "too_long" and v.details["counted_by"] == str(tiny_qwen)


def test_gopher_duplicate_ngram_fraction():
    assert R.duplicate_ngram_fraction(" ".join(str(i) for i in range(200)), 10) == 0.0
    assert R.duplicate_ngram_fraction("a b c d e f g h i j k l " * 5, 10) == 1.0


def test_unknown_check_is_a_config_error():
    with pytest.raises(ValueError, match="unknown check 'spelling'"):
        RowChecksConfig(checks=["spelling"])
