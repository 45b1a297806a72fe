"""`distill filter` beyond one machine: the local run, a local Ray instance and 3 Slurm-style
shards + the reduce step decide every row alike; per-problem pass rates in the report and rows."""

import json
import os

import pytest
from test_filter import make_corpus, record, run, splits, think

from distill.errors import UserError
from distill.filters.corpus_checks import CorpusConfig

ADD = {"test": "def check(c):\n    assert c(2, 3) == 5", "entry_point": "add"}
STDIO = {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}


def corpus_rows() -> list[dict]:
    rows = []
    golds = ["1", "\\frac{1}{2}", "[2, 5)", "12", "\\sqrt{2}", "x^2+1", "\\weird{{"]
    for p, gold in enumerate(golds):
        for i in range(4):
            said = gold if (p + i) % 3 else "7"
            text = think(f"Problem {p}, attempt {i}: I work it out carefully.", f"So \\boxed{{{said}}}.")
            rows.append(record(f"m{p}", i, f"Problem number {p}: compute the value {p * 17}.", gold, text))
    # an exact duplicate completion and a near-duplicate problem
    rows.append(record("m0", 4, rows[1]["problem"], "1", rows[1]["completion"]))
    rows.append(record("m9", 0, "Problem number 0: compute the value 0.", "1", think("x", "\\boxed{1}")))
    for i, body in enumerate(["return a + b", "return a - b", "while True:\n        pass", "return b + a"]):
        rows.append(record("add", i, "def add(a, b):", ADD,
                           think("Easy.", f"```python\ndef add(a, b):\n    {body}\n```"), domain="code"))  # fmt: skip
    for i, body in enumerate(["a, b = map(int, input().split())\nprint(a + b)", "print(3)"]):
        rows.append(record("io", i, "Read two ints, print their sum.", STDIO,
                           think("Sum.", f"```python\n{body}\n```"), domain="code"))  # fmt: skip
    rows.append(record("abc", 0, "Pick one.\nA) 1\nB) 2", "B", think("Two.", "The answer is (B)."), domain="choice"))
    rows.append(record("abc", 1, "Pick one.\nA) 1\nB) 2", "B", think("One.", "The answer is (A)."), domain="choice"))
    return rows


def verdicts(out) -> dict[str, tuple]:
    return {
        k: (r["split"], r["correct"], tuple(r["reasons"]), r["problem_correct"], r["problem_verified"])
        for k, r in splits(out).items()
    }


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("scale") / "traces", corpus_rows())


@pytest.fixture(scope="module")
def local(traces, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    report = run(traces, out, corpus=CorpusConfig(keep="shortest"))
    return out, report


def test_pass_rates_in_the_report_and_on_every_row(local):
    out, report = local
    rates = report["pass_rates"]
    assert rates["add"] == {"correct": 2, "verified": 4, "samples": 4}
    assert rates["io"] == {"correct": 1, "verified": 2, "samples": 2}
    assert rates["m6"] == {"correct": 0, "verified": 0, "samples": 4}  # unparseable gold
    assert rates["m0"]["samples"] == 5 and rates["m0"]["verified"] == 5
    assert sum(report["pass_rate_histogram"].values()) == report["problems"]["total"]
    assert json.loads((out / "report.json").read_text())["pass_rates"] == rates
    assert json.loads((out / "kept" / "manifest.json").read_text())["pass_rates"] == rates
    for r in splits(out).values():
        rate = rates[r["problem_id"]]
        assert (r["problem_correct"], r["problem_verified"]) == (rate["correct"], rate["verified"])
    # rl.py's pass_rates(folder) counts the same from the rows
    from distill.rl import pass_rates

    assert pass_rates(out) == {k: (v["correct"], v["verified"]) for k, v in rates.items()}


def test_shards_then_reduce_agree_row_by_row_with_one_machine(traces, local, tmp_path):
    out = tmp_path / "sharded"
    with pytest.raises(UserError, match="no shard verdicts"):
        run(traces, out, reduce=True, corpus=CorpusConfig(keep="shortest"))
    done = [run(traces, out, shard=f"{i}/3") for i in range(3)]
    assert sum(d["rows"] for d in done) == len(corpus_rows())
    assert not (out / "kept").exists()  # a shard writes verdicts only
    report = run(traces, out, reduce=True, corpus=CorpusConfig(keep="shortest"))
    assert verdicts(out) == verdicts(local[0])
    assert report["pass_rates"] == local[1]["pass_rates"]
    assert report["counts"] == local[1]["counts"] and report["reasons"] == local[1]["reasons"]


def test_reduce_refuses_a_missing_shard(traces, tmp_path):
    out = tmp_path / "partial"
    run(traces, out, shard="0/3")
    run(traces, out, shard="2/3")
    with pytest.raises(UserError, match=r"shard\(s\) 1/3 not finished"):
        run(traces, out, reduce=True)
    assert not (out / "kept").exists()


def test_ray_executor_agrees_row_by_row_with_one_machine(traces, local, tmp_path):
    ray = pytest.importorskip("ray", reason='Ray not installed (pip install -e ".[ray]")')
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        out = tmp_path / "ray"
        report = run(traces, out, executor="ray", corpus=CorpusConfig(keep="shortest"))
    finally:
        ray.shutdown()
    assert verdicts(out) == verdicts(local[0])
    assert report["pass_rates"] == local[1]["pass_rates"]
