"""`distill filter` end to end on hand-made corpora: verdicts, splits, report, rerun."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_BENCHMARKS, write_jsonl

from distill.errors import UserError
from distill.filter import FilterConfig, filter_corpus
from distill.filters.corpus_checks import CorpusConfig
from distill.filters.readability import LanguageMixing, RowChecksConfig
from distill.records import FIELDS, CorpusWriter, read_corpus
from distill.verify import VerifyConfig
from distill.verify.sandbox import SandboxLimits


def think(reasoning: str, answer: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def record(
    pid: str,
    idx: int,
    problem: str,
    gold,
    completion: str,
    domain: str = "math",
    finish: str = "stop",
) -> dict:
    from distill.prompts import split_trace

    reasoning, answer = split_trace(completion)
    return {f: None for f in FIELDS} | {
        "id": f"{pid}/{idx}", "problem_id": pid, "sample_index": idx, "problem": problem, "domain": domain,
        "reference": json.dumps(gold), "messages": "[]", "completion": completion, "reasoning": reasoning,
        "answer": answer, "finish_reason": finish, "prompt_tokens": 10, "completion_tokens": len(completion) // 4,
        "teacher": "t", "sampling": "{}",
    }  # fmt: skip


def make_corpus(folder: Path, rows: list[dict]) -> Path:
    w = CorpusWriter(folder, {"teacher": {"model": "t"}})
    w.write_shard(rows)
    w.write_manifest()
    return folder


def run(inp: Path, out: Path, **kw) -> dict:
    corpus = kw.pop("corpus", CorpusConfig())
    verify = kw.pop(
        "verify",
        VerifyConfig(verify_timeout=5, workers=2, code=SandboxLimits(timeout=3, cpu_seconds=2)),
    )
    return filter_corpus(
        FilterConfig(input=inp, output=out, verify=verify, corpus=corpus, progress=False, **kw)
    )


def splits(out: Path) -> dict[str, dict]:
    rows = {}
    for split in ("kept", "rejected"):
        for r in read_corpus(out / split).to_pylist():
            rows[r["id"]] = r | {"split": split}
    return rows


@pytest.fixture
def mixed(tmp_path) -> Path:
    loop = "\n".join(["Wait, I should recompute this sum again now."] * 30)
    rows = [
        record("half", 0, "What is 1/2 + 1/2?", "1", think("Halves add to one.", "So \\boxed{1}.")),
        record("half", 1, "What is 1/2 + 1/2?", "1", think("Halves add to two.", "So \\boxed{2}.")),
        record(
            "half",
            2,
            "What is 1/2 + 1/2?",
            "1",
            think("Adding the two halves gives one whole, so one.", "\\boxed{\\dfrac{2}{2}}"),
        ),
        record("four", 0, "What is 2+2?", "4", think("Hmm.", "I do not know.")),
        record("odd", 0, "What is 3+3?", "\\weird{{", think("Six.", "\\boxed{6}")),
        record("cut", 0, "What is 5+5?", "10", "<think>\nI keep thinking", finish="length"),
        record(
            "zh",
            0,
            "What is 6+6?",
            "12",
            think("六加六等于十二。我们再检查一下，结果正确。", "\\boxed{12}"),
        ),
        record("loop", 0, "What is 7+7?", "14", think(loop, "\\boxed{14}")),
        record(
            "py",
            0,
            "What is 8+8?",
            "16",
            think("Sixteen.", "\\boxed{16}\n```python\nprint(16)\n```"),
        ),
        record(
            "abc",
            0,
            "Pick one.\nA) 1\nB) 2",
            "B",
            think("Two it is.", "The answer is (B)."),
            domain="choice",
        ),
        record(
            "add",
            0,
            "def add(a, b):",
            {"test": "def check(c):\n    assert c(2, 3) == 5", "entry_point": "add"},
            think("Easy.", "```python\ndef add(a, b):\n    return a + b\n```"),
            domain="code",
        ),
        record(
            "add",
            1,
            "def add(a, b):",
            {"test": "def check(c):\n    assert c(2, 3) == 5", "entry_point": "add"},
            think("Loop.", "```python\ndef add(a, b):\n    while True:\n        pass\n```"),
            domain="code",
        ),
    ]
    return make_corpus(tmp_path / "traces", rows)


def test_every_row_gets_a_verdict_and_the_report_adds_up(mixed, tmp_path):
    report = run(mixed, tmp_path / "out")
    rows = splits(tmp_path / "out")
    assert len(rows) == 12
    expect = {
        "half/0": [], "half/1": ["wrong_answer"], "half/2": [], "four/0": ["no_answer"],
        "odd/0": ["unverifiable_reference"], "cut/0": ["no_answer", "truncated", "bad_format"],
        "zh/0": ["language_mixing"], "loop/0": ["repetition"], "py/0": ["code_block"], "abc/0": [],
        "add/0": [], "add/1": ["wrong_answer"],
    }  # fmt: skip
    for row_id, reasons in expect.items():
        r = rows[row_id]
        assert sorted(r["reasons"]) == sorted(reasons), (row_id, r["reasons"])
        assert r["kept"] is (not reasons) and (r["split"] == "kept") is (not reasons)
        checks = json.loads(r["checks"])
        assert "correctness" in checks and "language_mixing" in checks
    assert rows["odd/0"]["correct"] is None and rows["half/1"]["correct"] is False
    assert all(r["correct"] is True for r in rows.values() if r["kept"])
    assert json.loads(rows["add/1"]["checks"])["correctness"]["status"] == "timeout"

    c = report["counts"]
    assert (c["in"], c["kept"], c["rejected"]) == (12, 4, 8) and c["kept_fraction"] == round(
        4 / 12, 4
    )
    assert sum(d["in"] for d in report["domains"].values()) == 12
    assert sum(d["kept"] for d in report["domains"].values()) == 4
    assert all(d["in"] == d["kept"] + d["rejected"] for d in report["domains"].values())
    every_reason = [x for r in rows.values() for x in r["reasons"]]
    assert report["reasons"] == {k: every_reason.count(k) for k in set(every_reason)}
    assert set(report["problems"]["nothing_passed"]) == {"four", "odd", "cut", "zh", "loop", "py"}
    assert report["lengths_tokens"]["kept"]["count"] == 4
    out = tmp_path / "out"
    for name in (
        "report.json",
        "report.md",
        "stats.json",
        "config.yaml",
        "lengths.png",
        "kept/manifest.json",
    ):
        assert (out / name).is_file(), name
    assert "| `wrong_answer` | 2 |" in (out / "report.md").read_text()
    import datasets

    kept = datasets.load_dataset(
        "parquet", data_files=str(out / "kept" / "*.parquet"), split="train"
    )
    assert kept.num_rows == 4 and {"correct", "kept", "reasons", "checks"} <= set(kept.column_names)


def test_rerun_skips_finished_work(mixed, tmp_path):
    out = tmp_path / "out"
    t = time.monotonic()
    first = run(mixed, out)
    first_time = time.monotonic() - t
    shards = sorted((out / ".work").glob("verdicts-*.parquet"))
    t = time.monotonic()
    second = run(mixed, out)
    assert time.monotonic() - t < first_time  # the 3 s sandbox timeout is not paid again
    assert sorted((out / ".work").glob("verdicts-*.parquet")) == shards  # nothing re-verified
    assert second["counts"] == first["counts"] and second["reasons"] == first["reasons"]
    # changed row-check settings reuse nothing stale: verdicts are recomputed
    third = run(mixed, out, rows=RowChecksConfig(language_mixing=LanguageMixing(threshold=0.0)))
    assert first["reasons"]["language_mixing"] == 1 and "language_mixing" not in third["reasons"]


def test_corpus_made_elsewhere_needs_only_four_columns(tmp_path):
    table = pa.table({
        "problem": ["What is 2+2?", "What is 2+2?", "Name the capital of France."],
        "domain": ["math", "math", "text"],
        "reference": ['"4"', "4", None],
        "completion": [think("Two and two.", "\\boxed{4}"), think("Hmm.", "\\boxed{5}"), think("Easy.", "Paris.")],
    })  # fmt: skip
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "data.parquet")
    report = run(tmp_path / "in", tmp_path / "out")
    rows = splits(tmp_path / "out")
    assert len(rows) == 3 and report["counts"]["kept"] == 2
    ids = sorted(rows)
    assert ids[0].endswith("/0") and ids[1].endswith("/1")  # problem_id/sample_index derived
    text = next(r for r in rows.values() if r["domain"] == "text")
    assert text["kept"] and text["correct"] is None  # nothing to verify without a reference


def test_the_last_pass_writes_the_same_rows_with_or_without_reading_the_texts(mixed, tmp_path):
    """A distill corpus (reasoning, answer, token counts all there) is written without its
    texts ever becoming Python strings; a batch where one must be derived takes the full
    path. The same corpus both ways gives the same files, column for column."""
    table = read_corpus(mixed)
    reasoning = table.column("reasoning").to_pylist()
    reasoning[0] = None  # derived again from the completion: the whole batch reads its texts
    other = tmp_path / "derived"
    other.mkdir()
    pq.write_table(table.set_column(table.column_names.index("reasoning"), "reasoning", pa.array(reasoning)),
                   other / "shard-00000.parquet")  # fmt: skip
    texts = tmp_path / "text-counts"  # token counts written as text: lengths from the text
    texts.mkdir()
    i = table.column_names.index("completion_tokens")
    pq.write_table(table.set_column(i, "completion_tokens", table.column(i).cast(pa.string())),
                   texts / "shard-00000.parquet")  # fmt: skip
    run(mixed, tmp_path / "lean")
    run(other, tmp_path / "full")
    run(texts, tmp_path / "text")
    for split in ("kept", "rejected"):
        lean, full = read_corpus(tmp_path / "lean" / split), read_corpus(tmp_path / "full" / split)
        assert lean.num_rows and lean.schema == full.schema and lean.equals(full), split
        assert lean.equals(read_corpus(tmp_path / "text" / split)), split
        assert lean.column_names[-6:] == ["correct", "kept", "reasons", "checks", "problem_correct", "problem_verified"]


def test_prefetched_batches_keep_order_raise_the_readers_error_and_stop_with_the_reader():
    import threading

    from distill.filters.inputs import prefetched

    assert list(prefetched(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise OSError("disk read failed")

    with pytest.raises(OSError, match="disk read failed"):
        list(prefetched(broken()))
    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    for i in prefetched(endless()):
        if i == 3:
            break
    time.sleep(0.5)
    assert len(produced) <= 7 and not [t for t in threading.enumerate() if t.name == "distill-prefetch"]


def test_bad_input(tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"problem": ["p"], "domain": ["math"], "completion": ["c"]}),
        tmp_path / "in" / "x.parquet",
    )
    with pytest.raises(UserError, match=r"x\.parquet: missing column .reference."):
        run(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    r = subprocess.run([sys.executable, "-m", "distill.cli", "filter", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")],
                       capture_output=True, text=True)  # fmt: skip
    assert (
        r.returncode == 2 and r.stderr.count("\n") == 1 and "missing column 'reference'" in r.stderr
    )
    assert not (tmp_path / "out").exists()
    r = subprocess.run([sys.executable, "-m", "distill.cli", "filter", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o2"), "--keep", "best"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "corpus.keep must be" in r.stderr


def samples_corpus(tmp_path: Path) -> Path:
    rows = []
    for p in range(3):
        for i, n in enumerate([3, 1, 4, 2]):
            rows.append(record(f"p{p}", i, f"Problem number {p} asks for {p} plus zero.", str(p),
                               think("Thinking. " * n + f"variant {i}", f"\\boxed{{{p}}}")))  # fmt: skip
    return make_corpus(tmp_path / "samples", rows)


@pytest.mark.parametrize(
    "policy, expected", [("all", [0, 1, 2, 3]), ("first", [0]), ("shortest", [1]), ("longest", [2])]
)
def test_selection_policies(tmp_path, policy, expected):
    report = run(
        samples_corpus(tmp_path),
        tmp_path / "out",
        corpus=CorpusConfig(keep=policy, near_dup_threshold=0),
    )
    rows = splits(tmp_path / "out")
    for p in range(3):
        kept = sorted(
            r["sample_index"] for r in rows.values() if r["kept"] and r["problem_id"] == f"p{p}"
        )
        assert kept == expected
    assert report["counts"]["kept"] == 3 * len(expected)
    assert report["reasons"].get("not_selected", 0) == 3 * (4 - len(expected))


def test_random_k_is_seeded(tmp_path):
    picks = []
    corpus = samples_corpus(tmp_path)
    for seed in (0, 0, 1):
        out = tmp_path / f"out{len(picks)}"
        run(corpus, out, corpus=CorpusConfig(keep="random:2", seed=seed, near_dup_threshold=0))
        picks.append(sorted(k for k, r in splits(out).items() if r["kept"]))
    assert len(picks[0]) == 6 and picks[0] == picks[1]


def test_duplicates_exact_and_reworded(tmp_path):
    speed = (
        "A train leaves the station at noon and travels 60 miles in 1.5 hours along a straight track. "
        "After a short stop it returns along the same track at 40 miles per hour. What is the average "
        "speed of the train, in miles per hour, for the whole round trip, ignoring the stop?"
    )
    reworded = speed.replace("What is the average", "Find the average")  # word 3-gram Jaccard 0.86
    rows = [
        record("a", 0, speed, "48", think("Harmonic mean of 60 and 40.", "\\boxed{48}")),
        record("a", 1, speed, "48", think("Harmonic mean of 60 and 40.", "\\boxed{48}")),
        record(
            "b", 0, reworded, "48", think("Both legs: 120 miles over 2.5 hours.", "\\boxed{48}")
        ),
        record(
            "c",
            0,
            "How many primes are less than 20?",
            "8",
            think("2,3,5,7,11,13,17,19.", "\\boxed{8}"),
        ),
    ]
    report = run(
        make_corpus(tmp_path / "d", rows), tmp_path / "out", corpus=CorpusConfig(dedup=True)
    )
    r = splits(tmp_path / "out")
    assert (
        r["a/1"]["reasons"] == ["duplicate"]
        and json.loads(r["a/1"]["checks"])["duplicate"]["of"] == "a/0"
    )
    assert r["b/0"]["reasons"] == ["duplicate"]
    near = json.loads(r["b/0"]["checks"])["duplicate"]
    assert near["kind"] == "problem" and near["of"] == "a" and near["jaccard"] >= 0.8
    assert r["a/0"]["kept"] and r["c/0"]["kept"]
    assert report["near_duplicate_problems"][0]["problem_id"] == "b"


def test_decontamination_names_benchmark_and_ngram(tmp_path):
    bench = write_jsonl(
        tmp_path / "bench.jsonl",
        [{"problem": "Let $f(x) = 3x^2 - 5$ and find the value of $f(f(1))$ for this function."}],
    )
    rows = [
        record(
            "x",
            0,
            "Hard one: let $f(x) = 3x^2 - 5$ and find the value of $f(f(1))$ for this function, please.",
            "7",
            think("f(1)=-2, f(-2)=7", "\\boxed{7}"),
        ),
        record(
            "y",
            0,
            "What is the sum of the first ten positive integers?",
            "55",
            think("n(n+1)/2.", "\\boxed{55}"),
        ),
    ]
    report = run(
        make_corpus(tmp_path / "c", rows),
        tmp_path / "out",
        corpus=CorpusConfig(decontaminate=[str(bench)]),
    )
    r = splits(tmp_path / "out")
    hit = json.loads(r["x/0"]["checks"])["contaminated"]
    assert r["x/0"]["reasons"] == ["contaminated"] and hit["benchmark"] == str(bench)
    assert len(hit["ngram"].split()) == 8 and r["y/0"]["kept"]
    assert report["contaminated"] == [
        {"problem_id": "x", **{k: hit[k] for k in ("benchmark", "ngram")}}
    ]
    assert "## Contaminated problems" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.skipif(
    not (SHARED_BENCHMARKS / "math500.jsonl").is_file(), reason="../shared/benchmarks not present"
)
def test_planted_math500_problem_is_found(tmp_path):
    planted = json.loads((SHARED_BENCHMARKS / "math500.jsonl").read_text().splitlines()[123])[
        "problem"
    ]
    rows = [
        record("planted", 0, planted, "1", think("x", "\\boxed{1}")),
        record(
            "clean",
            0,
            "Compute the number of ordered pairs of distinct socks in a drawer of nine.",
            "72",
            think("9*8.", "\\boxed{72}"),
        ),
    ]
    report = run(
        make_corpus(tmp_path / "c", rows),
        tmp_path / "out",
        corpus=CorpusConfig(decontaminate=[str(SHARED_BENCHMARKS / "math500.jsonl")]),
    )
    assert [c["problem_id"] for c in report["contaminated"]] == ["planted"]


def test_judge_decides_rows_rules_cannot(tmp_path):
    from conftest import ScriptedTeacher

    from distill.teachers import Sample
    from distill.verify.judge import needs_judge, parse_verdict, run_judge

    class Judge(ScriptedTeacher):
        def generate(self, requests):
            for req in requests:
                self.requests.append(req)
                text = req.messages[-1]["content"]
                reference = text.split("Reference answer:\n")[1].split("\n")[0]
                answer = text.split("Answer to grade (its final part):\n")[1].split("\n")[0]
                verdict = "CORRECT" if answer == reference else "INCORRECT"
                yield [Sample(req.key, 0, f"Checking.\nVERDICT: {verdict}", "stop")]

    rows = [
        {
            "id": "a",
            "problem": "Capital of France?",
            "reference": '"Paris"',
            "answer": "Paris",
            "domain": "text",
        },
        {
            "id": "b",
            "problem": "Capital of Spain?",
            "reference": '"Madrid"',
            "answer": "Paris",
            "domain": "text",
        },
    ]
    undecided = {"ok": None, "reason": "unverifiable_reference"}
    assert all(needs_judge(r, undecided, VerifyConfig()) for r in rows)
    assert not needs_judge(rows[0], {"ok": True, "reason": None}, VerifyConfig())
    judge = Judge()
    verdicts = run_judge(VerifyConfig(judge="tiny"), rows, teacher=judge)
    assert verdicts["a"]["ok"] is True and verdicts["b"]["reason"] == "judge_incorrect"
    assert "VERDICT: INCORRECT" in verdicts["b"]["judge"]["reply"]
    assert judge.requests[0].prefill == "" and judge.requests[0].messages[0]["role"] == "user"
    assert parse_verdict("<think>VERDICT: INCORRECT?</think>\n\nVERDICT: CORRECT") is True
    assert parse_verdict("I am not sure.") is None


def test_judge_second_pass_on_wrong_maths_that_differs_only_in_form():
    """OpenR1-Math's pass: math-verify's `wrong_answer` on an answer holding the gold's numbers
    in another form goes to the judge when asked; other wrong answers never cost a call."""
    from distill.teachers import Sample
    from distill.verify.judge import differs_only_in_form, needs_judge, run_judge

    assert differs_only_in_form("18", "18 \\text{ cm}") and differs_only_in_form(
        "3, 5", "\\{5, 3\\}"
    )
    assert not differs_only_in_form("18", "19") and not differs_only_in_form("2, 2", "2")
    row = {
        "id": "u",
        "problem": "Length?",
        "reference": '"18"',
        "answer": "\\boxed{18 cm}",
        "domain": "math",
    }
    wrong = {"ok": False, "reason": "wrong_answer", "extracted": "18 cm"}
    assert not needs_judge(row, wrong, VerifyConfig())  # off by default
    assert needs_judge(row, wrong, VerifyConfig(judge_wrong=True))
    assert not needs_judge(row, {**wrong, "extracted": "17"}, VerifyConfig(judge_wrong=True))

    class Judge:
        model_name = "judge"

        def generate(self, requests):
            for req in requests:
                yield [Sample(req.key, 0, "VERDICT: CORRECT", "stop")]

        def close(self):
            pass

    out = run_judge(
        VerifyConfig(judge="tiny", judge_wrong=True), [row], {"u": wrong}, teacher=Judge()
    )
    assert out["u"]["ok"] is True and out["u"]["overturned"] is True
    assert out["u"]["rule"]["reason"] == "wrong_answer"


def test_bad_row_is_named_by_its_position_in_the_file(tmp_path):
    (tmp_path / "in").mkdir()
    problems = [f"Problem {i}" for i in range(1500)]
    problems[1400] = None  # deep in the second read batch
    table = pa.table({"problem": problems, "domain": ["math"] * 1500, "reference": ['"1"'] * 1500,
                      "completion": [think("r", "\\boxed{1}")] * 1500})  # fmt: skip
    pq.write_table(table, tmp_path / "in" / "big.parquet")
    with pytest.raises(UserError, match=r"big\.parquet: row 1400: 'problem' must be text"):
        run(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["duplicate", "completion"])
def test_bad_row_is_refused_before_any_row_is_verified(tmp_path, monkeypatch, bad):
    """A duplicate id or a null completion deep in a big corpus: one line, nothing verified."""
    import distill.filter

    def never(*a, **k):
        raise AssertionError("verification started before the bad row was refused")

    monkeypatch.setattr(distill.filter, "verify_rows", never)
    (tmp_path / "in").mkdir()
    ids = [f"p{i}/0" for i in range(1500)]
    completions = [think("r", "\\boxed{1}")] * 1500
    if bad == "duplicate":
        ids[1400] = "p7/0"
        want = r"big\.parquet: row 1400: duplicate id 'p7/0' \(also at .*big\.parquet: row 7\)"
    else:
        completions[1400] = None
        want = r"big\.parquet: row 1400: 'completion' must be text, got None"
    table = pa.table({"id": ids, "problem": [f"Problem {i}" for i in range(1500)], "domain": ["math"] * 1500,
                      "reference": ['"1"'] * 1500, "completion": completions})  # fmt: skip
    pq.write_table(table, tmp_path / "in" / "big.parquet")
    with pytest.raises(UserError, match=want):
        run(tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()
