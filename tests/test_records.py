import json

import pytest

from distill.errors import UserError
from distill.records import (
    FIELDS,
    CorpusWriter,
    corpus_files,
    done_index,
    merge_corpora,
    read_corpus,
    read_manifest,
    shard_paths,
)


def row(pid: str, idx: int, **kw) -> dict:
    base = {f: None for f in FIELDS}
    base.update(
        id=f"{pid}/{idx}",
        problem_id=pid,
        sample_index=idx,
        problem="p",
        domain="math",
        completion="<think>\nr\n</think>\n\na",
        reasoning="r",
        answer="a",
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=5,
        teacher="t",
        sampling="{}",
    )
    base.update(kw)
    return base


def test_writer_shards_manifest_and_index(tmp_path):
    out = tmp_path / "c"
    w = CorpusWriter(out, {"teacher": {"model": "t"}})
    w.write_shard([row("a", 0), row("a", 1)])
    w.write_shard([row("b", 0, finish_reason="length")])
    w.write_manifest()
    assert [p.name for p in shard_paths(out)] == ["shard-00000.parquet", "shard-00001.parquet"]
    assert done_index(out) == {"a": {0, 1}, "b": {0}}
    counts = read_manifest(out)["counts"]
    assert counts == {
        "rows": 3,
        "problems": 2,
        "shards": 2,
        "completion_tokens": 15,
        "finish_reasons": {"stop": 2, "length": 1},
    }
    # a reopened writer continues the numbering and drops temp files a kill left behind
    (out / ".shard-00002.parquet.tmp-123").write_bytes(b"half")
    w2 = CorpusWriter(out, read_manifest(out))
    assert not list(out.glob(".*tmp*"))
    assert w2.write_shard([row("c", 0)]).name == "shard-00002.parquet"


def test_loads_with_datasets(tmp_path):
    import datasets

    out = tmp_path / "c"
    w = CorpusWriter(out, {})
    w.write_shard([row("a", 0)])
    w.write_shard([row("b", 0, error="boom", finish_reason="error")])
    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    assert ds.num_rows == 2 and set(ds.column_names) == set(FIELDS)


def test_merge_parts_exactly_once(tmp_path):
    parts = []
    for k, pids in enumerate([["a", "b"], ["c"]]):
        part = tmp_path / f"part-{k}"
        w = CorpusWriter(
            part, {"teacher": {"model": "t"}, "sampling": {"t": 0.6}, "shard": f"{k}/2"}
        )
        w.write_shard([row(p, i) for p in pids for i in range(2)])
        w.write_manifest()
        parts.append(part)
    assert read_corpus(tmp_path).num_rows == 6  # the reader joins part folders too
    manifest = merge_corpora(parts, tmp_path / "all")
    assert manifest["counts"]["rows"] == 6 and manifest["duplicates_dropped"] == 0
    assert sorted(read_corpus(tmp_path / "all").column("id").to_pylist()) == sorted(
        f"{p}/{i}" for p in "abc" for i in range(2)
    )
    with pytest.raises(UserError, match="already exists"):
        merge_corpora(parts, tmp_path / "all")
    other = tmp_path / "other"
    CorpusWriter(other, {"teacher": {"model": "t"}, "sampling": {"t": 1.0}})
    with pytest.raises(UserError, match="sampling differs"):
        merge_corpora([parts[0], other], tmp_path / "bad")


def test_corrupt_inputs(tmp_path):
    with pytest.raises(UserError, match="no such corpus folder"):
        corpus_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no parquet shards"):
        corpus_files(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "shard-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="unreadable parquet shard"):
        read_corpus(bad)
    (bad / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="invalid JSON"):
        read_manifest(bad)
    json.loads(json.dumps(row("a", 0)))
