"""A synthetic maths task small enough for a from-scratch CPU teacher to *really* reason on.

Problems are column addition and subtraction of 2–5 digit numbers, and multiplication of one
by a single digit. The reference reasoning is the schoolbook working: one line per column
(ones digit first) with explicit carries/borrows, then the written digits read back in
reverse. A tiny model learns this well but not perfectly, and its mistakes live in the working
(a wrong times-table fact or column sum, a dropped carry, a digit taken from the wrong column,
a slip while reading the digits back) and propagate to the boxed answer: exactly the kind of
trace a correctness filter should remove.

Cheap to import (stdlib and the trace format), so the CLI and the tests can import it for free.
"""

from __future__ import annotations

import hashlib
import random
import re

from distill.prompts import format_trace

USER_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."

MIN_DIGITS, MAX_DIGITS = 2, 5
TEST_SHARE = 10  # one operand triple in TEST_SHARE belongs to the test split
_PROBLEM_RE = re.compile(r"What is (\d+) ([-+×]) (\d+)\?")


def _key(a: int, op: str, b: int) -> int:
    # The split is a pure function of the operands (not of the seed or of the draw order), so
    # train and test problems never overlap, whatever seeds and sizes are used.
    return int(hashlib.sha256(f"{a}{op}{b}".encode()).hexdigest()[:16], 16)


def _split_of(a: int, op: str, b: int) -> str:
    return "test" if _key(a, op, b) % TEST_SHARE == 0 else "train"


def _number(rng: random.Random, max_digits: int = MAX_DIGITS) -> int:
    # Draw the length first so short and long operands are equally common (uniform values
    # would make almost every operand 5 digits long).
    n = rng.randint(MIN_DIGITS, max_digits)
    return rng.randint(10 ** (n - 1), 10**n - 1)


def make_problems(
    n: int, seed: int, split: str = "train", max_digits: int = MAX_DIGITS, ops: str = "+-×"
) -> list[dict]:
    """`n` distinct problems of one split, deterministic for a seed: {"id", "problem", "answer"}.
    `max_digits` (2-5) and `ops` narrow the distribution (the demo uses shorter problems)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not MIN_DIGITS <= max_digits <= MAX_DIGITS or not ops or set(ops) - set("+-×"):
        raise ValueError(
            f"max_digits must be in {MIN_DIGITS}..{MAX_DIGITS} and ops a subset of '+-×'"
        )
    rng = random.Random(f"arith-{seed}-{split}")
    seen: set[tuple[int, str, int]] = set()
    out = []
    while len(out) < n:
        op = rng.choice(ops)
        a, b = _number(rng, max_digits), _number(rng, max_digits)
        if op == "×":
            b = rng.randint(2, 9)
        elif op == "-" and rng.random() < 0.2:
            # Close operands give leading zeros (1592 - 1194: 0398, so 398). Uniform draws make
            # them too rare for the model to learn to drop the zeros, so draw them on purpose.
            b = max(10, a - rng.randint(0, 10 ** (len(str(a)) - 1)))
        elif op == "-" and a < b:
            a, b = b, a  # keep answers non-negative
        if (a, op, b) in seen or _split_of(a, op, b) != split:
            continue
        seen.add((a, op, b))
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        out.append(
            {
                "id": f"arith-{_key(a, op, b):016x}",
                "problem": f"What is {a} {op} {b}?",
                "answer": str(answer),
            }
        )
    return out


def _parse(problem: dict) -> tuple[str, str, str]:
    m = _PROBLEM_RE.fullmatch(problem["problem"].strip())
    if m is None:
        raise ValueError(f"not an arithmetic problem: {problem['problem']!r}")
    return m.group(1), m.group(2), m.group(3)


def operation(problem: dict) -> str:
    """The problem's operation: '+', '-' or '×' (per-operation accuracy tables)."""
    return _parse(problem)[1]


def solve(problem: dict) -> str:
    """The reference step-by-step working for a problem (the reasoning, without the think block)."""
    a, op, b = _parse(problem)
    width = max(len(a), len(b))
    da, db = a.zfill(width)[::-1], b.zfill(width)[::-1]  # ones digit first, short one 0-padded
    written, carry = [], 0
    if op in "+×":
        # Addition pairs the columns; multiplication runs the single digit along the number.
        verb = "Add column by column" if op == "+" else "Multiply digit by digit"
        lines = [f"{verb}, starting from the ones digit."]
        pairs = zip(da, db, strict=True) if op == "+" else ((x, b) for x in a[::-1])
        for x, y in pairs:
            s = (int(x) + int(y) if op == "+" else int(x) * int(y)) + carry
            written.append(s % 10)
            lines.append(f"{x} {op} {y} + {carry} = {s}, write {s % 10}, carry {s // 10}.")
            carry = s // 10
        if carry:
            written.append(carry)
            lines.append(f"The last carry {carry} is the leading digit.")
    else:
        lines = ["Subtract column by column, starting from the ones digit."]
        for x, y in zip(da, db, strict=True):
            d = int(x) - int(y) - carry
            if d >= 0:
                lines.append(f"{x} - {y} - {carry} = {d}, write {d}, borrow 0.")
                written.append(d)
                carry = 0
            else:
                lines.append(
                    f"{x} - {y} - {carry} is negative, so 1{x} - {y} - {carry} = {d + 10}, "
                    f"write {d + 10}, borrow 1."
                )
                written.append(d + 10)
                carry = 1
    digits = "".join(str(d) for d in reversed(written))
    lines.append(f"Reading the written digits from last to first gives {digits}.")
    if len(digits) > 1 and digits.startswith("0"):
        lines.append(f"Dropping the leading zeros gives {int(digits)}.")
    return "\n".join(lines)


def format_completion(reasoning: str, answer: str) -> str:
    """An R1-format completion: the think block, then a one-line summary with the boxed answer."""
    return format_trace(reasoning, f"The final answer is \\boxed{{{answer}}}")
