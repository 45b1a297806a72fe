import json

import pytest
from conftest import ScriptedTeacher

from distill.errors import UserError
from distill.generate import GenerateConfig, generate
from distill.problems import DatasetSpec
from distill.records import FIELDS, read_corpus, read_manifest, shard_paths
from distill.teachers.profile import load_profile


def cfg(data, out, **kw) -> GenerateConfig:
    return GenerateConfig(output=out, data=DatasetSpec(dataset=str(data)), progress=False, **kw)


def test_records_follow_the_design(math_jsonl, tmp_path):
    profile = load_profile("tiny")
    stats = generate(
        cfg(math_jsonl, tmp_path / "c", samples=3, chunk_size=5), profile, ScriptedTeacher()
    )
    table = read_corpus(tmp_path / "c")
    assert table.schema.names == FIELDS and table.num_rows == 36
    assert len(shard_paths(tmp_path / "c")) == 3  # 12 problems in chunks of 5
    rows = {r["id"]: r for r in table.to_pylist()}
    r = rows["p2/1"]
    assert r["problem_id"] == "p2" and r["sample_index"] == 1 and r["problem"] == "What is 2 + 3?"
    assert r["completion"] == "<think>\nworking on p2\n</think>\n\nSo \\boxed{2}"
    assert (r["reasoning"], r["answer"]) == ("working on p2", "So \\boxed{2}")
    assert json.loads(r["reference"]) == "5" and r["domain"] == "math"
    assert json.loads(r["messages"]) == [
        {
            "role": "user",
            "content": "What is 2 + 3?\nPlease reason step by step, and put your final answer within \\boxed{}.",
        }
    ]
    assert json.loads(r["sampling"])["temperature"] == 0.6 and r["teacher"] == "scripted"
    assert stats["rows"] == 36 and stats["finish_reasons"] == {"stop": 24, "length": 12}
    manifest = read_manifest(tmp_path / "c")
    assert manifest["counts"]["rows"] == 36 and manifest["samples"] == 3
    assert manifest["teacher"]["model"] == profile.model and manifest["source"]["fingerprint"]
    assert (tmp_path / "c" / "stats.json").is_file() and (tmp_path / "c" / "config.yaml").is_file()


def test_resume_asks_only_for_missing_samples(math_jsonl, tmp_path):
    out = tmp_path / "c"
    profile = load_profile("tiny")
    with pytest.raises(RuntimeError, match="crashed"):
        generate(
            cfg(math_jsonl, out, samples=2, chunk_size=4), profile, ScriptedTeacher(fail_after=6)
        )
    # the 6 finished problems were flushed (4 in a full chunk, 2 on the way out)
    assert read_corpus(out).num_rows == 12
    teacher = ScriptedTeacher()
    generate(cfg(math_jsonl, out, samples=2, chunk_size=4), profile, teacher)
    assert len(teacher.requests) == 6
    ids = read_corpus(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 24
    # more samples later: only the new indices are requested
    teacher = ScriptedTeacher()
    generate(cfg(math_jsonl, out, samples=3), profile, teacher)
    assert len(teacher.requests) == 12 and all(r.sample_indices == [2] for r in teacher.requests)
    # nothing left: no request at all
    teacher = ScriptedTeacher()
    generate(cfg(math_jsonl, out, samples=3), profile, teacher)
    assert teacher.requests == [] and read_manifest(out)["counts"]["rows"] == 36


def test_changed_settings_are_refused_unless_overwrite(math_jsonl, tmp_path):
    out = tmp_path / "c"
    generate(cfg(math_jsonl, out), load_profile("tiny"), ScriptedTeacher())
    with pytest.raises(
        UserError, match=r"made with other settings \(sampling.temperature: 0.6 -> 0.9\)"
    ):
        generate(
            cfg(math_jsonl, out),
            load_profile("tiny", {"sampling.temperature": 0.9}),
            ScriptedTeacher(),
        )
    with pytest.raises(UserError, match="teacher model"):
        generate(cfg(math_jsonl, out), load_profile("tiny", {"model": "other"}), ScriptedTeacher())
    generate(
        cfg(math_jsonl, out, overwrite=True),
        load_profile("tiny", {"sampling.temperature": 0.9}),
        ScriptedTeacher(),
    )
    assert read_manifest(out)["sampling"]["temperature"] == 0.9 and read_corpus(out).num_rows == 12


def test_output_that_is_not_a_corpus_is_refused(math_jsonl, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a distill corpus"):
        generate(cfg(math_jsonl, out), load_profile("tiny"), ScriptedTeacher())
    assert (out / "notes.txt").read_text() == "mine"


def test_shards_split_problems_and_merge(math_jsonl, tmp_path):
    from distill.records import merge_corpora

    parts = []
    for k in range(3):
        part = tmp_path / f"part-{k}"
        generate(
            cfg(math_jsonl, part, samples=2, shard=f"{k}/3"),
            load_profile("tiny"),
            ScriptedTeacher(),
        )
        parts.append(part)
    merged = merge_corpora(parts, tmp_path / "all")
    ids = read_corpus(tmp_path / "all").column("problem_id").to_pylist()
    assert merged["counts"]["rows"] == 24 and len(set(ids)) == 12


def test_without_prefill_the_completion_is_kept_as_returned(math_jsonl, tmp_path):
    generate(cfg(math_jsonl, tmp_path / "c"), load_profile("tiny"), ScriptedTeacher(prefill=False))
    row = read_corpus(tmp_path / "c").to_pylist()[0]
    assert row["completion"].startswith("<think>\nworking on")  # restored: </think> without <think>


def scripted_backend(profile):
    """A third backend's factory: takes the profile, returns a Teacher."""
    teacher = ScriptedTeacher()
    teacher.model_name = f"scripted:{profile.model}"
    return teacher


def test_a_registered_backend_is_usable_from_a_profile(math_jsonl, tmp_path, monkeypatch):
    from distill import teachers

    monkeypatch.setitem(teachers.BACKENDS, "scripted", "test_generate:scripted_backend")
    path = tmp_path / "scripted.yaml"
    path.write_text("model: my-model\nbackend: scripted\n")
    profile = load_profile(str(path))
    generate(cfg(math_jsonl, tmp_path / "c"), profile)  # no teacher passed: made from the profile
    rows = read_corpus(tmp_path / "c").to_pylist()
    assert len(rows) == 12 and {r["teacher"] for r in rows} == {"scripted:my-model"}
    assert "scripted" in teachers.backend_names()

    path.write_text("model: my-model\nbackend: scriptd\n")
    with pytest.raises(UserError, match=r"unknown backend 'scriptd' \(known: .*openai.*vllm"):
        load_profile(str(path))
    with pytest.raises(ValueError, match="module:Factory"):
        teachers.register_backend("x", "no_colon")
