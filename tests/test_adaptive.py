"""`distill generate --until-correct K`: rounds per problem, verified as samples come back."""

import json

import pytest
from conftest import write_jsonl
from servers import deepseek_server

from distill.generate import GenerateConfig, generate
from distill.problems import DatasetSpec
from distill.records import read_corpus, read_manifest
from distill.teachers import Sample
from distill.teachers.profile import load_profile


def answer(key: str, index: int) -> int:
    """p0-p3 always right; p4-p7 right on every 4th sample; p8-p9 never."""
    i = int(key[1:])
    right = 2 * i + 1
    if i < 4 or (i < 8 and index % 4 == 3):
        return right
    return right + 100


class Teacher:
    """Deterministic answers per (problem, sample index). `batch`: hold up to that many
    requests like an engine and answer them together; with `idle_requests`, a None from the
    stream answers what is held (the engine steps), else the stream is read to its end."""

    model_name = "scripted"

    def __init__(self, batch: int = 1, idle_requests: bool = False, fail_after: int | None = None):
        self.batch, self.idle_requests, self.fail_after = batch, idle_requests, fail_after
        self.requests: list = []
        self.nones = 0

    def _answer(self, req):
        return [
            Sample(
                req.key,
                i,
                f"work {req.key} #{i}\n</think>\n\nSo \\boxed{{{answer(req.key, i)}}}",
                "stop",
                7,
                10,
                req.prefill,
            )
            for i in req.sample_indices
        ]

    def generate(self, requests):
        held = []
        for req in requests:
            if req is None:
                self.nones += 1
                assert self.idle_requests and held, "None only while work is in flight"
            else:
                if self.fail_after is not None and len(self.requests) >= self.fail_after:
                    raise RuntimeError("teacher crashed")
                self.requests.append(req)
                held.append(req)
            if req is None or len(held) >= self.batch:
                for r in held:
                    yield self._answer(r)
                held = []
        for r in held:
            yield self._answer(r)

    def close(self):
        pass


@pytest.fixture
def ten(tmp_path):
    rows = [{"id": f"p{i}", "problem": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}
            for i in range(10)]  # fmt: skip
    return write_jsonl(tmp_path / "ten.jsonl", rows)


def run(data, out, teacher, **kw):
    cfg = GenerateConfig(output=out, data=DatasetSpec(dataset=str(data)), progress=False, **kw)
    return generate(cfg, load_profile("tiny"), teacher)


def per_problem(out):
    counts = {}
    for r in read_corpus(out).to_pylist():
        counts.setdefault(r["problem_id"], []).append(r)
    return counts


@pytest.mark.parametrize("teacher", [Teacher(), Teacher(batch=4, idle_requests=True)])
def test_easy_problems_stop_at_k_hard_ones_go_to_the_ceiling(ten, tmp_path, teacher):
    out = tmp_path / "c"
    stats = run(ten, out, teacher, samples=8, until_correct=2)
    rows = per_problem(out)
    for pid, rs in rows.items():
        i = int(pid[1:])
        passed = [r for r in rs if json.loads(r["verdict"])["passed"]]
        assert sorted(r["sample_index"] for r in rs) == list(range(len(rs)))  # exactly once
        if i < 4:
            assert len(rs) == 2 and len(passed) == 2  # one round of K
        elif i < 8:
            assert len(rs) == 8 and len(passed) == 2  # right on indices 3 and 7
        else:
            assert len(rs) == 8 and not passed  # the ceiling
    m = read_manifest(out)
    rates = m["pass_rates"]
    assert rates["p0"] == {"correct": 2, "verified": 2, "samples": 2, "passed": 2, "rounds": 1}
    assert (
        rates["p5"]["correct"] == 2 and rates["p5"]["samples"] == 8 and rates["p5"]["rounds"] >= 2
    )
    assert rates["p9"]["correct"] == 0 and rates["p9"]["samples"] == 8
    a = m["adaptive"]
    assert (a["reached_k"], a["at_least_one"], a["samples_drawn"]) == (8, 8, 2 * 4 + 8 * 6)
    assert a["teacher_tokens"] == 10 * 56 and stats["adaptive"]["idle_s"] >= 0
    assert m["until_correct"] == 2 and m["samples"] == 8
    bad = json.loads(rows["p9"][0]["verdict"])
    assert bad["reasons"] == ["wrong_answer"] and bad["checks"]["correctness"]["ok"] is False
    if teacher.idle_requests:
        assert teacher.nones > 0  # the stream waited for verdicts without ending


def test_killed_run_resumes_exactly_once(ten, tmp_path):
    out = tmp_path / "c"
    with pytest.raises(RuntimeError, match="crashed"):
        run(ten, out, Teacher(fail_after=12), samples=8, until_correct=2, chunk_size=3)
    before = read_corpus(out).num_rows
    assert before > 0
    teacher = Teacher()
    run(ten, out, teacher, samples=8, until_correct=2)
    ids = read_corpus(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 2 * 4 + 8 * 6
    # nothing left: a rerun asks for nothing
    teacher = Teacher()
    run(ten, out, teacher, samples=8, until_correct=2)
    assert teacher.requests == []
    m = read_manifest(out)
    assert m["adaptive"]["reached_k"] == 8 and m["pass_rates"]["p9"]["samples"] == 8


def test_a_fixed_corpus_is_verified_and_topped_up(ten, tmp_path):
    out = tmp_path / "c"
    run(ten, out, Teacher(), samples=1)  # no verdict column
    teacher = Teacher()
    run(ten, out, teacher, samples=4, until_correct=1)
    # p0-p3 passed on sample 0: nothing more; the others up to index 3
    asked = {r.key for r in teacher.requests}
    assert asked == {f"p{i}" for i in range(4, 10)}
    assert all(0 not in r.sample_indices for r in teacher.requests)
    rates = read_manifest(out)["pass_rates"]
    assert rates["p0"]["samples"] == 1 and rates["p5"]["samples"] == 4
    # the first run's rows got their verdicts too, and the topped-up corpus loads as documented
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    assert len(ds) == 4 + 6 * 4 and all(json.loads(v)["checks"] for v in ds["verdict"])


@pytest.mark.parametrize("distinct", [False, True])
def test_served_teacher_over_http(ten, tmp_path, monkeypatch, distinct):
    # the server always answers right with the same text: K = 2 in one round, unless identical
    # completions do not count (--distinct), when every problem goes to the ceiling in rounds
    server, seen = deepseek_server("k", delay=0.01)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "k")
    try:
        profile = load_profile("deepseek-r1-api", {"server.base_url": server.url})
        cfg = GenerateConfig(output=tmp_path / "c", data=DatasetSpec(dataset=str(ten)), samples=5,
                             until_correct=2, distinct=distinct, progress=False)  # fmt: skip
        generate(cfg, profile)
    finally:
        server.close()
    a = read_manifest(tmp_path / "c")["adaptive"]
    if distinct:
        assert seen["requests"] == 50 and a["reached_k"] == 0 and a["at_least_one"] == 10
        assert a["rounds_max"] >= 2
    else:
        assert seen["requests"] == 20 and a["reached_k"] == 10 and a["rounds_max"] == 1


def test_until_correct_must_fit_under_samples(ten, tmp_path):
    with pytest.raises(ValueError, match="until_correct"):
        GenerateConfig(output=tmp_path / "c", samples=2, until_correct=3)


@pytest.mark.slow
def test_real_vllm_engine_waits_for_verdicts_without_ending_its_stream(
    vllm_teacher, tiny_profile, math_jsonl, tmp_path
):
    # a random model never answers right: every problem goes to the ceiling over several rounds,
    # the engine stream staying open across them (None = nothing now)
    out = tmp_path / "c"
    cfg = GenerateConfig(output=out, data=DatasetSpec(dataset=str(math_jsonl)), samples=5,
                         until_correct=1, progress=False)  # fmt: skip
    generate(cfg, tiny_profile, vllm_teacher)
    ids = read_corpus(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 12 * 5
    m = read_manifest(out)
    assert m["adaptive"]["rounds_max"] >= 2 and m["adaptive"]["reached_k"] == 0
    assert all(r["samples"] == 5 and r["verified"] == 5 for r in m["pass_rates"].values())
