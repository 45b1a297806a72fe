"""`distill eval`: the metrics on hand-made verdict matrices, and the stage end to end."""

import json
import math
import subprocess
import sys

import pytest
from conftest import SHARED_BENCHMARKS, write_jsonl

from distill.metrics import benchmark_metrics, cons_at_k, majority, mean_and_stderr, pass_at_k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 1, 16) == 1.0 and pass_at_k(4, 4, 1) == 1.0
    for n in range(1, 20):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_cons_at_k_and_ties():
    assert majority(["7", "3", "7", None]) == "7"
    assert majority(["a", "b", "b", "a"]) == "a"  # a tie goes to the answer seen first
    assert majority([None, None]) is None
    assert cons_at_k(["a", "b", "b", "a"], [False, True, True, False]) is False
    assert cons_at_k(["b", "a", "a", "b"], [True, False, False, True]) is True
    assert (
        cons_at_k([None, "5", None, None], [None, True, None, None]) is True
    )  # no answer never outvotes
    assert cons_at_k([None, None], [None, None]) is False


def test_metrics_on_a_verdict_matrix():
    per_problem = {
        "p1": [(True, "2"), (True, "2"), (False, "3"), (True, "2")],  # 3/4
        "p2": [(False, "1"), (False, "1"), (True, "0"), (None, None)],  # 1/4, majority wrong
        "p3": [(False, "x"), (False, "y"), (False, "x"), (False, None)],  # 0/4
    }
    m = benchmark_metrics(per_problem)
    assert m["problems"] == 3 and m["samples"] == 4
    assert m["pass@1"] == pytest.approx((0.75 + 0.25 + 0.0) / 3)
    assert m["pass@1_stderr"] == pytest.approx(mean_and_stderr([0.75, 0.25, 0.0])[1])
    assert m["pass@4"] == pytest.approx(2 / 3) and m["pass@2"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["cons@4"] == pytest.approx(1 / 3)


def test_bad_benchmark_fails_before_the_engine_starts(tmp_path):
    r = subprocess.run([sys.executable, "-m", "distill.cli", "eval", "--model", str(tmp_path), "--benchmark",
                        str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "r")], capture_output=True, text=True)  # fmt: skip
    assert (
        r.returncode == 2
        and "missing.jsonl: no such file" in r.stderr
        and r.stderr.count("\n") == 1
    )
    r = subprocess.run([sys.executable, "-m", "distill.cli", "eval", "--benchmark", "aime24", "--output", str(tmp_path / "r")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "--model is required" in r.stderr


@pytest.mark.slow
def test_eval_end_to_end_on_a_local_benchmark(vllm_teacher, tiny_profile, tmp_path):
    from distill.evaluate import EvalConfig, evaluate
    from distill.records import read_corpus

    bench = write_jsonl(
        tmp_path / "arith.jsonl",
        [{"id": f"a{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)],
    )
    code = write_jsonl(tmp_path / "code.jsonl", [{"task_id": "T/0", "prompt": "def inc(x):\n", "entry_point": "inc",
                                                  "test": "def check(c):\n    assert c(1) == 2\n"}])  # fmt: skip
    cfg = EvalConfig(
        benchmark=[str(bench), str(code)], output=tmp_path / "results", samples=4, progress=False
    )
    report = evaluate(cfg, tiny_profile, vllm_teacher)
    arith = report["benchmarks"]["arith"]
    assert arith["problems"] == 6 and arith["samples"] == 4 and 0.0 <= arith["pass@1"] <= 1.0
    assert {"pass@1_stderr", "pass@4", "cons@4", "mean_response_tokens", "truncated_share"} <= set(
        arith
    )
    assert report["benchmarks"]["code"]["problems"] == 1
    samples = read_corpus(tmp_path / "results" / "samples" / "arith.parquet")
    assert samples.num_rows == 24 and {"correct", "extracted", "reason"} <= set(
        samples.column_names
    )
    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    assert saved["benchmarks"]["arith"]["pass@1"] == arith["pass@1"]
    assert "| arith | 6 | 4 |" in (tmp_path / "results" / "results.md").read_text()
    # resumable: a rerun generates nothing new and gives the same numbers
    again = evaluate(cfg, tiny_profile, vllm_teacher)
    assert again["benchmarks"] == report["benchmarks"]
    assert read_corpus(tmp_path / "results" / "generations" / "arith").num_rows == 24


@pytest.mark.skipif(not SHARED_BENCHMARKS.is_dir(), reason="../shared/benchmarks not present")
def test_benchmark_names_of_shared_files():
    from distill.evaluate import bench_name

    assert bench_name(str(SHARED_BENCHMARKS / "aime2024.jsonl")) == "aime2024"
    assert (
        bench_name("aime24") == "aime24"
        and bench_name("HuggingFaceH4/MATH-500") == "HuggingFaceH4__MATH-500"
    )
