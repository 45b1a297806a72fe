"""Publishing through huggingface_hub's real upload code, against a stand-in Hub on loopback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_standin import TOKEN, HubStandIn
from test_filter import make_corpus, record, think

from distill.filter import FilterConfig, filter_corpus


@pytest.fixture
def hub(tmp_path):
    standin = HubStandIn(tmp_path / "hub")
    yield standin
    standin.close()


def cli(
    hub: HubStandIn, *args: str, token: str | None = TOKEN, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(Path(hub.root).parent / "hf-home"), HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_TELEMETRY="1", COLUMNS="200")  # fmt: skip
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=cwd,
    )


@pytest.fixture
def filtered(tmp_path) -> Path:
    rows = [record(f"p{i}", j, f"What is {i} + {j}?", str(i + j), think(f"Adding {i} and {j}.", f"\\boxed{{{i + j + (j == 1)}}}"))
            for i in range(6) for j in range(2)]  # fmt: skip
    corpus = make_corpus(tmp_path / "traces", rows)
    filter_corpus(FilterConfig(input=corpus, output=tmp_path / "corpus", progress=False))
    return tmp_path / "corpus"


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_filtered_corpus_becomes_a_loadable_dataset_with_a_card(hub, filtered, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    r = cli(
        hub,
        "push",
        str(filtered),
        "--repo",
        "tester/r1-math-traces",
        "--private",
        "--license",
        "mit",
    )
    assert r.returncode == 0, r.stderr
    repo = hub.repo_dir("dataset", "tester/r1-math-traces")
    names = sorted(p.relative_to(repo).as_posix() for p in every_file(repo))
    assert "README.md" in names and "report.json" in names
    assert [n for n in names if n.startswith("data/")] == [
        "data/kept-00000-of-00001.parquet",
        "data/rejected-00000-of-00001.parquet",
    ]
    assert "create_repo dataset tester/r1-math-traces private=True" in hub.calls

    card = DatasetCard.load(repo / "README.md")
    meta = card.data.to_dict()
    assert {"distill", "reasoning", "synthetic"} <= set(meta["tags"]) and meta["license"] == "mit"
    assert [s["split"] for s in meta["configs"][0]["data_files"]] == ["kept", "rejected"]
    assert "`wrong_answer` | 6 |" in card.text and "## Provenance" in card.text

    ds = datasets.load_dataset(str(repo))
    assert ds["kept"].num_rows == 6 and ds["rejected"].num_rows == 6
    assert set(ds["kept"]["kept"]) == {True} and "reasons" in ds["rejected"].column_names

    # pushing again updates in place: same files, no stale shards
    r = cli(hub, "push", str(filtered), "--repo", "tester/r1-math-traces")
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(repo).as_posix() for p in every_file(repo)) == names
    for path in [*every_file(repo), *every_file(filtered)]:
        assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in r.stdout + r.stderr


def test_raw_traces_push_as_one_train_split(hub, tmp_path):
    import datasets

    corpus = make_corpus(
        tmp_path / "traces",
        [record("a", 0, "What is 1+1?", "2", think("One and one.", "\\boxed{2}"))],
    )
    r = cli(hub, "push", str(corpus), "--repo", "tester/raw", "--revision", "v1")
    assert r.returncode == 0, r.stderr
    repo = hub.repo_dir("dataset", "tester/raw", "v1")
    assert datasets.load_dataset(str(repo))["train"].num_rows == 1
    assert "create_branch dataset tester/raw v1" in hub.calls


def test_missing_or_invalid_token_fails_before_any_work(hub, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    out = tmp_path / "out"
    r = cli(
        hub,
        "generate",
        "--dataset",
        str(data),
        "--output",
        str(out),
        "--push-to-hub",
        "tester/x",
        token=None,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no Hugging Face token" in r.stderr
    r = cli(
        hub,
        "generate",
        "--dataset",
        str(data),
        "--output",
        str(out),
        "--push-to-hub",
        "tester/x",
        token="hf_wrong_token_1234",
    )
    assert (
        r.returncode == 2
        and "rejected (HTTP 401)" in r.stderr
        and "hf_wrong_token_1234" not in r.stderr
    )
    assert not out.exists()
    r = cli(hub, "push", str(tmp_path), "--repo", "tester/x", token=None)
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr


def test_model_push_with_card_eval_results_and_checkpoint_revisions(hub, tiny_qwen, tmp_path):
    from huggingface_hub import ModelCard
    from test_train import corpus as train_corpus

    out = tmp_path / "ckpt"
    r = cli(hub, "train", "--student", "tiny", "--model", str(tiny_qwen), "--data", str(train_corpus(tmp_path / "c", 4)),
            "--output", str(out), "--push-to-hub", "tester/student", "--max_steps", "4", "--save_strategy", "steps",
            "--save_steps", "2", "--logging_steps", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    main = hub.repo_dir("model", "tester/student")
    names = {p.name for p in every_file(main)}
    assert {
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "README.md",
        "chat_template.jinja",
    } <= names
    assert not any(
        n.startswith("checkpoint-")
        for n in (p.relative_to(main).parts[0] for p in every_file(main))
    )
    assert json.loads((main / "generation_config.json").read_text())["eos_token_id"] is not None
    assert {"step-000002", "step-000004"} <= {
        p.name for p in (hub.root / "model" / "tester" / "student").iterdir()
    }

    card = ModelCard.load(main / "README.md")
    assert (
        card.data.to_dict()["library_name"] == "transformers"
        and "distill" in card.data.to_dict()["tags"]
    )
    assert "temperature 0.6" in card.text and "<think>" in card.text and "final_loss" in card.text

    (out / "eval_results.md").write_text("| benchmark | pass@1 |\n|---|---|\n| arith | 87.5 |\n")
    r = cli(hub, "push", str(out), "--repo", "tester/student")
    assert r.returncode == 0, r.stderr
    assert "| arith | 87.5 |" in (main / "README.md").read_text()
    assert "tester/student" in (main / "README.md").read_text()
    for path in [*every_file(hub.root), *every_file(out)]:
        assert TOKEN.encode() not in path.read_bytes(), path
