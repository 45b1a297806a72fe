import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_BENCHMARKS, write_jsonl

from distill.errors import UserError
from distill.problems import (
    DatasetSpec,
    in_shard,
    last_boxed,
    load_problems,
    parse_shard,
    stable_id,
)


def test_local_jsonl_autodetects_columns(math_jsonl):
    problems, info = load_problems(DatasetSpec(dataset=str(math_jsonl)))
    assert len(problems) == 12 and info["columns"] == {
        "problem": "problem",
        "answer": "answer",
        "id": "id",
    }
    assert problems[3].problem_id == "p3" and problems[3].domain == "math"
    assert json.loads(problems[3].reference) == "7"


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json-folder"])
def test_other_formats(tmp_path, fmt):
    rows = {"question": ["What is 2+2?", "What is 3+3?"], "final_answer": ["4", "6"]}
    if fmt == "parquet":
        path = tmp_path / "d.parquet"
        pq.write_table(pa.table(rows), path)
    elif fmt == "csv":
        path = tmp_path / "d.csv"
        path.write_text("question,final_answer\nWhat is 2+2?,4\nWhat is 3+3?,6\n")
    else:
        path = tmp_path / "folder"
        path.mkdir()
        write_jsonl(
            path / "a.jsonl",
            [{"question": q, "final_answer": a} for q, a in zip(*rows.values(), strict=True)],
        )
    problems, info = load_problems(DatasetSpec(dataset=str(path)))
    assert [json.loads(p.reference) for p in problems] == ["4", "6"]
    assert problems[0].problem_id == stable_id("What is 2+2?")
    assert info["columns"]["problem"] == "question"


def test_explicit_columns_limit_and_domain(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"q": f"say {i}", "a": str(i), "k": i} for i in range(5)]
    )
    problems, _ = load_problems(
        DatasetSpec(
            dataset=str(path),
            problem_column="q",
            answer_column="a",
            id_column="k",
            limit=2,
            domain="text",
        )
    )
    assert [(p.problem_id, p.domain) for p in problems] == [("0", "text"), ("1", "text")]


def test_gsm8k_and_solution_only_references(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q1", "answer": "Work.\n#### 1,234"}])
    (p,) = load_problems(DatasetSpec(dataset=str(path)))[0]
    assert json.loads(p.reference) == "1,234"
    path = write_jsonl(
        tmp_path / "m.jsonl", [{"problem": "q", "solution": "So it is $\\boxed{\\frac{1}{2}}$."}]
    )
    (p,) = load_problems(DatasetSpec(dataset=str(path)))[0]
    assert json.loads(p.reference) == "\\frac{1}{2}"
    assert last_boxed("a \\boxed{x^{2}} b \\boxed{\\{1,2\\}}") == "\\{1,2\\}"


def test_code_and_choice_domains(tmp_path):
    path = write_jsonl(
        tmp_path / "h.jsonl",
        [
            {
                "task_id": "T/0",
                "prompt": "def f(x):\n",
                "test": "def check(c): assert c(1) == 1",
                "entry_point": "f",
            }
        ],
    )
    (p,) = load_problems(DatasetSpec(dataset=str(path)))[0]
    assert p.domain == "code" and p.problem_id == "T/0"
    assert json.loads(p.reference) == {"test": "def check(c): assert c(1) == 1", "entry_point": "f"}
    path = write_jsonl(
        tmp_path / "apps.jsonl",
        [
            {
                "question": "read n",
                "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]}),
            }
        ],
    )
    (p,) = load_problems(DatasetSpec(dataset=str(path)))[0]
    assert json.loads(p.reference) == {"inputs": ["1\n"], "outputs": ["1\n"]}
    path = write_jsonl(
        tmp_path / "c.jsonl", [{"question": "Pick", "choices": ["x", "y", "z"], "answer": 2}]
    )
    (p,) = load_problems(DatasetSpec(dataset=str(path)))[0]
    assert p.domain == "choice" and json.loads(p.reference) == "C"
    assert p.problem.endswith("A) x\nB) y\nC) z")


def test_gpqa_style_choice_columns_shuffle_deterministically(tmp_path):
    rows = [
        {
            "Question": f"Q{i}",
            "Correct Answer": "right",
            "Incorrect Answer 1": "w1",
            "Incorrect Answer 2": "w2",
            "Incorrect Answer 3": "w3",
        }
        for i in range(20)
    ]
    path = write_jsonl(tmp_path / "gpqa.jsonl", rows)
    spec = DatasetSpec(
        dataset=str(path),
        choice_columns=[
            "Correct Answer",
            "Incorrect Answer 1",
            "Incorrect Answer 2",
            "Incorrect Answer 3",
        ],
    )
    problems, _ = load_problems(spec)
    letters = [json.loads(p.reference) for p in problems]
    assert len(set(letters)) > 1  # not always "A"
    for p, letter in zip(problems, letters, strict=True):
        assert f"{letter}) right" in p.problem
    assert letters == [json.loads(p.reference) for p in load_problems(spec)[0]]


@pytest.mark.parametrize(
    "rows, spec, message",
    [
        (None, {"dataset": "/nope/missing.jsonl"}, "/nope/missing.jsonl: no such file"),
        (
            [{"problem": "a"}],
            {"problem_column": "question"},
            "no column 'question' for the problem (columns: problem)",
        ),
        ([{"text": "a"}], {}, "no problem column found"),
        ([], {}, "empty"),
        ([{"id": 1, "problem": "a"}, {"id": 1, "problem": "b"}], {}, "row 1: duplicate id '1'"),
        ([{"problem": "a"}, {"problem": ""}], {}, "row 1: empty or non-text 'problem'"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, rows, spec, message):
    path = tmp_path / "d.jsonl"
    if rows is not None:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"dataset": str(path), **spec}
    with pytest.raises(UserError) as e:
        load_problems(DatasetSpec(**spec))
    assert message in str(e.value)


def test_duplicate_texts_without_ids_count_once(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"problem": "same"}, {"problem": "same"}, {"problem": "other"}]
    )
    assert len(load_problems(DatasetSpec(dataset=str(path)))[0]) == 2


def test_shards_cover_every_problem_once():
    ids = [f"p{i}" for i in range(1000)]
    parts = [[i for i in ids if in_shard(i, (k, 4))] for k in range(4)]
    assert sorted(i for part in parts for i in part) == sorted(ids)
    assert all(150 < len(p) < 350 for p in parts)
    for bad in ["4/4", "1", "a/b", "-1/2", "1/0"]:
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


@pytest.mark.skipif(not SHARED_BENCHMARKS.is_dir(), reason="../shared/benchmarks not present")
@pytest.mark.parametrize(
    "name, count, domain",
    [
        ("math500.jsonl", 500, "math"),
        ("aime2024.jsonl", 30, "math"),
        ("aime2025.jsonl", 30, "math"),
        ("amc23.jsonl", 40, "math"),
        ("gsm8k_test.jsonl", 1319, "math"),
        ("humaneval.jsonl", 164, "code"),
    ],
)
def test_shared_benchmark_files_load(name, count, domain):
    problems, _ = load_problems(DatasetSpec(dataset=str(SHARED_BENCHMARKS / name)))
    assert len(problems) == count and {p.domain for p in problems} == {domain}
    assert all(p.reference is not None for p in problems)
    if name == "gsm8k_test.jsonl":
        assert json.loads(problems[0].reference) == "18"
    if name == "math500.jsonl":
        assert problems[0].problem_id.startswith("test/")
