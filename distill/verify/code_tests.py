"""Code answers: the final ```python block of the answer, run against the reference tests in
the sandbox. Pass = every test passes.

Test shapes (docs/corpus.md; `code_formats.py` reads each dataset's into them): {"inputs",
"outputs"} stdin/stdout cases (APPS, TACO, CodeContests, LiveCodeBench, open-r1; with "fn_name":
call-based), {"functional": program} (LeetCode-style), and {"test", "entry_point"} (HumanEval).
Solutions run after the imports LeetCode's judge provides.
"""

from __future__ import annotations

import json
import re
from typing import Any

from distill.verdict import Verdict, failed, passed, undecided
from distill.verify.sandbox import SandboxLimits, run_python

PREAMBLE = """\
from typing import *
import collections, math, itertools, heapq, bisect, functools, string, re, sys
from collections import *
from math import *
from itertools import *
from heapq import *
from bisect import *
from functools import *
"""
BLOCK = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
CALL_HARNESS = """

import json as _json
_inputs, _expected = _json.loads({payload!r})
_fn = Solution().{fn} if "Solution" in globals() else {fn}
_got = _fn(*_inputs)
try:
    _plain = _json.loads(_json.dumps(_got))  # tuples as lists, as the JSON reference has them
except (TypeError, ValueError):
    _plain = _got
# APPS/TACO wrap the return value in a one-element list (SkyThought compares outputs[0])
_wrapped = isinstance(_expected, list) and len(_expected) == 1
if not (_got == _expected or _plain == _expected
        or (_wrapped and (_got == _expected[0] or _plain == _expected[0]))):
    raise SystemExit(f"wrong output: {{_got!r}} != {{_expected!r}}")
"""


def extract_code(answer: str) -> str | None:
    """The last python (or unlabelled) fenced block; python-labelled blocks win."""
    blocks = BLOCK.findall(answer)
    labelled = [code for lang, code in blocks if lang]
    chosen = labelled or [code for _, code in blocks]
    return chosen[-1] if chosen else None


def outputs_match(got: str, expected: str) -> bool:
    """Line-wise, trailing whitespace ignored; numbers compared with a 1e-6 tolerance."""
    a, b = got.strip().split(), str(expected).strip().split()
    if a == b:
        return True
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        try:
            if abs(float(x) - float(y)) > 1e-6 * max(1.0, abs(float(y))):
                return False
        except ValueError:
            return False
    return True


def programs(solution: str, tests: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(program, stdin, expected stdout or None) per test run."""
    body = PREAMBLE + "\n" + solution
    if "test" in tests and "entry_point" in tests:
        return [(f"{body}\n\n{tests['test']}\n\ncheck({tests['entry_point']})\n", "", None)]
    if "functional" in tests:
        return [(f"{body}\n\n{tests['functional']}\n", "", None)]
    inputs, outputs = tests.get("inputs") or [], tests.get("outputs") or []
    if tests.get("fn_name"):
        return [
            (body + CALL_HARNESS.format(payload=json.dumps([i, o]), fn=tests["fn_name"]), "", None)
            for i, o in zip(inputs, outputs, strict=False)
        ]
    return [(body, str(i), str(o)) for i, o in zip(inputs, outputs, strict=False)]


def check_code(reference: str | None, answer: str, limits: SandboxLimits | None = None) -> Verdict:
    tests = json.loads(reference) if reference else None
    runs = programs("", tests) if isinstance(tests, dict) else []
    if not runs:
        return undecided("unverifiable_reference", tests=None)
    solution = extract_code(answer)
    if solution is None:
        return failed("no_answer", tests=len(runs))
    for i, (program, stdin, expected) in enumerate(programs(solution, tests)):
        result = run_python(program, stdin, limits)
        ok = result.status == "ok" and (expected is None or outputs_match(result.stdout, expected))
        if not ok:
            return failed(
                "wrong_answer",
                tests=len(runs),
                passed=i,
                failed_test=i,
                status=result.status if result.status != "ok" else "wrong_output",
                stderr=result.stderr[-500:],
                isolation=result.isolation,
            )
    return passed(tests=len(runs), passed=len(runs))


def count_tests(reference: str | None) -> int:
    try:
        tests = json.loads(reference) if reference else None
    except json.JSONDecodeError:
        return 0
    return len(programs("", tests)) if isinstance(tests, dict) else 0
