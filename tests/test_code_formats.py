"""Each code-test format the field uses, read into distill's reference shape and checked the
way a held-out grader would: the reference solution passes, a solution of another problem
fails. Rows are written in each dataset's exact layout (column names, JSON nesting, LCB's
compressed private tests)."""

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from distill.code_formats import code_reference, lcb_tests
from distill.errors import UserError
from distill.problems import DatasetSpec, lcb_files, load_problems
from distill.verify.code_tests import check_code

ADD = "def add(a, b):\n    return a + b\n"
TWO_SUM_SOLUTION = """class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""
STDIN_SUM = "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n"
STDIN_MAX = "import sys\nprint(max(map(int, sys.stdin.read().split())))\n"


def answer(code: str) -> str:
    return f"Here is the solution.\n```python\n{code}```"


def lcb_encode(tests: list[dict]) -> str:
    """LiveCodeBench's private_test_cases: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def lcb_rows() -> list[dict]:
    """Two problems in code_generation_lite's layout: an AtCoder stdin one and a LeetCode
    functional one, tests split public / private as LCB stores them."""
    stdin_public = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    stdin_private = [{"input": "10 20 30\n", "output": "60\n", "testtype": "stdin"},
                     {"input": "-5 5\n", "output": "0\n", "testtype": "stdin"}]  # fmt: skip
    fn_public = [{"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"}]
    fn_private = [{"input": "[3,2,4]\n6", "output": "[1, 2]", "testtype": "functional"},
                  {"input": "[3,3]\n6", "output": "[0, 1]", "testtype": "functional"}]  # fmt: skip
    common = {"contest_id": "x", "platform": "atcoder", "difficulty": "easy"}
    return [
        {**common, "question_title": "Sum", "question_id": "abc001_a", "contest_date": "2024-09-01T00:00:00",
         "question_content": "Print the sum of the integers on the input line.", "starter_code": "",
         "public_test_cases": json.dumps(stdin_public), "private_test_cases": lcb_encode(stdin_private),
         "metadata": "{}"},
        {**common, "platform": "leetcode", "question_title": "Two Sum", "question_id": "two-sum",
         "contest_date": "2024-12-01T00:00:00",
         "question_content": "Return the indices of the two numbers that add up to target.",
         "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
         "public_test_cases": json.dumps(fn_public), "private_test_cases": lcb_encode(fn_private),
         "metadata": json.dumps({"func_name": "twoSum"})},
        {**common, "question_title": "Old", "question_id": "abc000_a", "contest_date": "2023-05-01T00:00:00",
         "question_content": "Print the maximum.", "starter_code": "",
         "public_test_cases": json.dumps(stdin_public), "private_test_cases": lcb_encode(stdin_private),
         "metadata": "{}"},
    ]  # fmt: skip


FORMATS = {
    # APPS / TACO: input_output JSON; call-based outputs wrapped in a one-element list
    "taco_call_based": (
        {"question": "Add two numbers.", "starter_code": "def add(a, b):\n\t",
         "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [5, -5]], "outputs": [[3], [0]]})},
        ADD, "def add(a, b):\n    return a - b\n"),
    "apps_stdin": (
        {"question": "Sum the numbers.", "input_output": json.dumps({"inputs": ["1 2\n", "4 5 6\n"], "outputs": ["3\n", "15\n"]})},
        STDIN_SUM, STDIN_MAX),
    # open-r1 (verifiable-coding-problems, codeforces-cots): verification_info
    "open_r1": (
        {"problem": "Sum the numbers.", "verification_info": json.dumps(
            {"language": "python", "test_cases": [{"input": "1 2\n", "output": "3", "type": "stdin_stdout"},
                                                  {"input": "7 8\n", "output": "15", "type": "stdin_stdout"}]})},
        STDIN_SUM, STDIN_MAX),
    # LeetCode-style functional test program
    "leetcode_functional": (
        {"problem": "Implement add.", "test": json.dumps({"functional": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"})},
        ADD, "def add(a, b):\n    return a * b\n"),
    "livecodebench_stdin": (lcb_rows()[0], STDIN_SUM, STDIN_MAX),
    "livecodebench_functional": (lcb_rows()[1], TWO_SUM_SOLUTION, "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 0]\n"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_reference_solution_passes_and_a_swapped_one_fails(name):
    row, good, bad = FORMATS[name]
    reference = json.dumps(code_reference(row, name))
    assert check_code(reference, answer(good)).ok is True, name
    verdict = check_code(reference, answer(bad))
    assert verdict.ok is False and verdict.reason == "wrong_answer", (name, verdict)


def test_humaneval_reference_solutions_pass_and_swapped_ones_fail():
    from conftest import SHARED_BENCHMARKS

    path = SHARED_BENCHMARKS / "humaneval.jsonl"
    if not path.is_file():
        pytest.skip("../shared/benchmarks not present")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:6]]
    for i, row in enumerate(rows):
        reference = json.dumps(code_reference(row))
        own = row["prompt"] + row["canonical_solution"]
        other = rows[(i + 1) % len(rows)]  # another task's solution, renamed to this entry point
        swapped = (
            other["prompt"]
            + other["canonical_solution"]
            + f"\n{row['entry_point']} = {other['entry_point']}\n"
        )
        assert check_code(reference, answer(own)).ok is True, row["task_id"]
        assert check_code(reference, answer(swapped)).ok is False, row["task_id"]


def test_call_based_wrapped_output_is_accepted_exactly_as_apps_stores_it():
    """The bug: `add` returning 3 against TACO's [3] was rejected as wrong."""
    reference = json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]})
    assert check_code(reference, answer(ADD)).ok is True
    lists = json.dumps({"fn_name": "pair", "inputs": [[1]], "outputs": [[1, 1]]})
    assert (
        check_code(lists, answer("def pair(x):\n    return (x, x)\n")).ok is True
    )  # tuple vs list
    assert check_code(lists, answer("def pair(x):\n    return [x]\n")).ok is False


def test_lcb_private_tests_decode_and_hostile_pickles_are_refused(tmp_path):
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert lcb_tests(lcb_encode(tests), "row") == tests
    assert lcb_tests(json.dumps(tests), "row") == tests  # some copies store plain JSON

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    hostile = base64.b64encode(zlib.compress(pickle.dumps(Boom()))).decode()
    with pytest.raises(UserError, match="refusing to load pathlib"):
        lcb_tests(hostile, "row 3")
    assert not (tmp_path / "pwned").exists()
    not_a_string = base64.b64encode(zlib.compress(pickle.dumps([1, 2]))).decode()
    with pytest.raises(UserError, match="holds a list, not a JSON string"):
        lcb_tests(not_a_string, "row 4")


def hub_cache(root: Path, rows: list[dict]) -> Path:
    """LiveCodeBench's Hub files as `hf_hub_download` caches them (read offline)."""
    repo = root / "datasets--livecodebench--code_generation_lite"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in lcb_files("release_v6"):
        chunk = rows if name == "test6.jsonl" else []
        (snap / name).write_text("".join(json.dumps(r) + "\n" for r in chunk))
    return root


def test_livecodebench_builtin_reads_the_release_window_and_lcb_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "hub", lcb_rows())))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    problems, _ = load_problems(DatasetSpec(dataset="livecodebench"))
    # R1's window 2024-08..2025-01: the 2023 problem is out
    assert [p.problem_id for p in problems] == ["abc001_a", "two-sum"]
    stdin, functional = problems
    assert stdin.domain == "code" and "Read the inputs from stdin" in stdin.problem
    assert "### Question:\nPrint the sum" in stdin.problem and "# YOUR CODE HERE" in stdin.problem
    assert "You will use the following starter code" in functional.problem
    assert "def twoSum(self, nums: List[int], target: int)" in functional.problem
    ref = json.loads(functional.reference)
    assert (
        ref["fn_name"] == "twoSum"
        and ref["inputs"][1] == [[3, 2, 4], 6]
        and len(ref["outputs"]) == 3
    )
    assert check_code(functional.reference, answer(TWO_SUM_SOLUTION)).ok is True
    # another window, another release
    problems, _ = load_problems(
        DatasetSpec(dataset="livecodebench", date_from="2023-01-01", date_to="2023-12-31")
    )
    assert [p.problem_id for p in problems] == ["abc000_a"]
    with pytest.raises(UserError, match=r"expected release_v1\.\.release_v6"):
        load_problems(DatasetSpec(dataset="livecodebench", release="v9"))
