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
from dataclasses import dataclass
from typing import Any

from distill.verdict import Verdict, failed, passed, undecided
from distill.verify.batch import run_each
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
# what PREAMBLE imports (and the harness of a batch imports once, before its forks)
PREAMBLE_MODULES = ("typing", "collections", "math", "itertools", "heapq", "bisect", "functools",
                    "string", "re", "sys", "json")  # fmt: skip
BLOCK = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
# Call-based tests (fn_name): the child calls the function on one test's arguments and prints
# the JSON of what it returned after a marker line; the comparison happens outside the
# sandbox, so a returned object with a forged __eq__ cannot pass.
RESULT_MARK = "\n@@distill-result@@\n"
CALL_EPILOGUE = """

import json as _json, sys as _sys
_args = _json.loads(_sys.stdin.read())
_fn = Solution().{fn} if "Solution" in globals() else {fn}
_got = _fn(*_args)
_sys.stdout.write({mark!r} + _json.dumps(_got, default=repr))
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


def programs(solution: str, tests: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(program, stdin, expected) per test: expected stdout (str), the expected return value
    of a call-based test (`CALL` + value), or None for a test program that asserts itself."""
    body = PREAMBLE + "\n" + solution
    if "test" in tests and "entry_point" in tests:
        return [(f"{body}\n\n{tests['test']}\n\ncheck({tests['entry_point']})\n", "", None)]
    if "functional" in tests:
        return [(f"{body}\n\n{tests['functional']}\n", "", None)]
    inputs, outputs = tests.get("inputs") or [], tests.get("outputs") or []
    if tests.get("fn_name"):
        program = body + CALL_EPILOGUE.format(fn=tests["fn_name"], mark=RESULT_MARK)
        return [(program, json.dumps(i), Call(o)) for i, o in zip(inputs, outputs, strict=False)]
    return [(body, str(i), str(o)) for i, o in zip(inputs, outputs, strict=False)]


@dataclass(frozen=True)
class Call:
    """The expected return value of a call-based test."""

    value: Any


def returned_match(stdout: str, expected: Any) -> bool:
    """What a call-based test returned (its JSON after the marker) against the expected value;
    APPS/TACO wrap the return value in a one-element list (SkyThought compares outputs[0])."""
    if RESULT_MARK not in stdout:
        return False
    try:
        got = json.loads(stdout.rsplit(RESULT_MARK, 1)[1])
    except ValueError:
        return False
    wrapped = isinstance(expected, list) and len(expected) == 1
    return got == expected or (wrapped and got == expected[0])


def _passes(expected: Any, status: str, stdout: str) -> bool:
    if status != "ok":
        return False
    if isinstance(expected, Call):
        return returned_match(stdout, expected.value)
    return expected is None or outputs_match(stdout, expected)


def check_code(reference: str | None, answer: str, limits: SandboxLimits | None = None) -> Verdict:
    tests = json.loads(reference) if reference else None
    runs = programs("", tests) if isinstance(tests, dict) else []
    if not runs:
        return undecided("unverifiable_reference", tests=None)
    solution = extract_code(answer)
    if solution is None:
        return failed("no_answer", tests=len(runs))
    cases = programs(solution, tests)
    if len(cases) > 1:  # one program, many stdins: one sandbox, a fresh process per test
        results, sandbox = run_each(
            cases[0][0], [stdin for _, stdin, _ in cases], limits,
            passed=lambda i, run: _passes(cases[i][2], run.status, run.stdout), preload=PREAMBLE_MODULES,
        )  # fmt: skip
        outcomes = [(r.status, r.stdout, r.stderr) for r in results]
        isolation = sandbox.isolation
    else:
        program, stdin, _ = cases[0]
        result = run_python(program, stdin, limits)
        outcomes, isolation = [(result.status, result.stdout, result.stderr)], result.isolation
    for i, (_, _, expected) in enumerate(cases):
        status, stdout, stderr = outcomes[i] if i < len(outcomes) else ("missing", "", "")
        if not _passes(expected, status, stdout):
            return failed(
                "wrong_answer",
                tests=len(runs),
                passed=i,
                failed_test=i,
                status=status if status != "ok" else "wrong_output",
                stderr=stderr[-500:],
                isolation=isolation,
            )
    return passed(tests=len(runs), passed=len(runs))


def count_tests(reference: str | None) -> int:
    try:
        tests = json.loads(reference) if reference else None
    except json.JSONDecodeError:
        return 0
    return len(programs("", tests)) if isinstance(tests, dict) else 0
