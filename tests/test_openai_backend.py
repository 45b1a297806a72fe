"""The OpenAI-compatible backend against real HTTP servers on loopback (no client mocks)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_jsonl
from servers import deepseek_server, fault_proxy

from distill.generate import GenerateConfig, generate
from distill.problems import DatasetSpec
from distill.records import FIELDS, read_corpus, read_manifest
from distill.teachers.openai_server import share_tokens
from distill.teachers.profile import load_profile

KEY = "sk-test-NEVER-WRITE-ME-8f3a9c"


@pytest.fixture
def sums(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "sums.jsonl",
        [
            {"id": f"s{i}", "problem": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)}
            for i in range(10)
        ],
    )


def test_deepseek_reasoning_content_becomes_a_think_block(sums, tmp_path, monkeypatch):
    server, seen = deepseek_server(KEY)
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    try:
        profile = load_profile("deepseek-r1-api", {"server.base_url": server.url})
        cfg = GenerateConfig(
            output=tmp_path / "c", data=DatasetSpec(dataset=str(sums)), samples=2, progress=False
        )
        generate(cfg, profile)
    finally:
        server.close()
    rows = {r["id"]: r for r in read_corpus(tmp_path / "c").to_pylist()}
    assert len(rows) == 20 and seen["requests"] == 20  # n_per_request off: one request per sample
    r = rows["s3/1"]
    assert r["completion"] == "<think>\n3 plus 5 is 8.\n</think>\n\nThe sum is \\boxed{8}."
    assert (r["reasoning"], r["answer"]) == ("3 plus 5 is 8.", "The sum is \\boxed{8}.")
    assert (
        r["finish_reason"] == "stop"
        and r["completion_tokens"] == 12
        and r["teacher"] == "deepseek-reasoner"
    )


def test_api_key_never_reaches_outputs_or_logs(sums, tmp_path):
    server, _ = deepseek_server(KEY, fail_every=3)  # error bodies echo the request headers
    out = tmp_path / "c"
    env = {**os.environ, "DEEPSEEK_API_KEY": KEY, "COLUMNS": "200"}
    args = [
        sys.executable,
        "-m",
        "distill.cli",
        "generate",
        "--teacher",
        "deepseek-r1-api",
        "--base-url",
        server.url,
        "--retries",
        "0",
        "--dataset",
        str(sums),
        "--samples",
        "2",
        "--output",
        str(out),
        "--verbose",
    ]
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        missing = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=300,
            env={k: v for k, v in env.items() if k != "DEEPSEEK_API_KEY"},
        )
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    rows = read_corpus(out).to_pylist()
    errors = [x for x in rows if x["finish_reason"] == "error"]
    assert errors and all(KEY not in x["error"] for x in errors), Counter(
        x["finish_reason"] for x in rows
    )
    assert any(
        "HTTP 500" in x["error"] and "Bearer ***" in x["error"] for x in errors
    )  # redacted, not dropped
    assert KEY not in r.stdout + r.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert (
        missing.returncode == 2
        and "DEEPSEEK_API_KEY" in missing.stderr
        and KEY not in missing.stderr
    )


# --- a real `vllm serve`, started once for the session through `distill serve` -------------


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited: {proc.stderr.read().decode()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError("vllm serve did not become ready")


@pytest.fixture(scope="session")
def vllm_server(tiny_profile_file):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "serve", "--teacher", str(tiny_profile_file), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_served_teacher_gives_the_same_corpus_shape(
    vllm_server, tiny_profile_file, vllm_teacher, math_jsonl, tmp_path
):
    served = load_profile(
        str(tiny_profile_file),
        {
            "backend": "openai",
            "server.base_url": vllm_server,
            "server.continue_final_message": True,
        },
    )
    local = load_profile(str(tiny_profile_file))
    for name, profile, teacher in (("http", served, None), ("local", local, vllm_teacher)):
        cfg = GenerateConfig(
            output=tmp_path / name,
            data=DatasetSpec(dataset=str(math_jsonl)),
            samples=3,
            progress=False,
        )
        generate(cfg, profile, teacher)
    http, local_rows = read_corpus(tmp_path / "http"), read_corpus(tmp_path / "local")
    assert http.schema == local_rows.schema and http.schema.names == FIELDS
    assert sorted(http.column("id").to_pylist()) == sorted(local_rows.column("id").to_pylist())
    for r in http.to_pylist():
        assert r["completion"].startswith("<think>\n") and r["finish_reason"] in ("stop", "length")
        assert r["prompt_tokens"] > 10 and r["completion_tokens"] > 0 and r["error"] is None
    assert read_manifest(tmp_path / "http")["teacher"]["backend"] == "openai"


@pytest.mark.slow
def test_faults_are_retried_and_a_rerun_fills_the_rest_exactly_once(
    vllm_server, tiny_profile_file, tmp_path
):
    proxy, faults = fault_proxy(vllm_server, stall_seconds=4)
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [{"id": f"q{i}", "problem": f"Compute {i} * 3.", "answer": str(3 * i)} for i in range(40)],
    )
    profile = load_profile(str(tiny_profile_file), {
        "backend": "openai", "server.base_url": proxy.url, "server.continue_final_message": True,
        "server.request_timeout": 2.0, "server.retries": 2, "server.backoff_max": 0.2, "server.max_concurrency": 8,
    })  # fmt: skip
    cfg = GenerateConfig(
        output=tmp_path / "c",
        data=DatasetSpec(dataset=str(data)),
        samples=2,
        chunk_size=4,
        progress=False,
    )
    try:
        first = generate(cfg, profile)
        first_rows = read_corpus(tmp_path / "c").to_pylist()
        second = generate(cfg, profile)
    finally:
        proxy.close()
    assert set(faults) == {"500", "429", "stall", "drop"}, faults
    failed = [r for r in first_rows if r["finish_reason"] == "error"]
    assert failed, "some requests should have failed past their retries on the first run"
    assert len(first_rows) == 80 and first["finish_reasons"].get("error") == len(failed)
    table = read_corpus(tmp_path / "c")
    keys = Counter(
        zip(
            table.column("problem_id").to_pylist(),
            table.column("sample_index").to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == 80 and set(keys.values()) == {1}
    assert "error" not in Counter(table.column("finish_reason").to_pylist())
    assert (
        second["rows_written_this_run"] == len(failed)
        and read_manifest(tmp_path / "c")["counts"]["rows"] == 80
    )


def test_serve_builds_the_vllm_serve_command():
    from distill.errors import UserError
    from distill.teachers.serve import serve_command

    cmd = serve_command(load_profile("deepseek-r1"), port=9000)
    text = " ".join(cmd)
    for part in (
        "--model deepseek-ai/DeepSeek-R1"
        if "api_server" in text
        else "serve deepseek-ai/DeepSeek-R1",
        "--tensor-parallel-size 8",
        "--pipeline-parallel-size 2",
        "--distributed-executor-backend ray",
        "--max-model-len 36864",
        "--enable-prefix-caching",
        "--port 9000",
        "--reasoning-parser deepseek_r1",
    ):
        assert part in text, part
    with pytest.raises(UserError, match="serve a vllm profile"):
        serve_command(load_profile("deepseek-r1-api"))
    r = subprocess.run([sys.executable, "-m", "distill.cli", "serve", "--teacher", "qwq-32b", "--dry-run", "--max-model-len", "8192"],
                       capture_output=True, text=True)  # fmt: skip
    assert (
        r.returncode == 0
        and "--max-model-len 8192" in r.stdout
        and "--tensor-parallel-size 2" in r.stdout
    )


def test_one_usage_is_shared_over_n_choices_without_zeros():
    # A served tiny model sometimes stops right after the prefill: its choice is empty
    # but still cost a token, and plain rounding gave it 0 (a CI failure).
    assert share_tokens(61, [0, 180, 175]) == [1, 30, 30]
    for total, sizes in [(61, [0, 180, 175]), (7, [5, 5, 5]), (100, [0, 0]), (3, [1, 1, 1])]:
        shares = share_tokens(total, sizes)
        assert sum(shares) == total and min(shares) >= 1, (total, sizes, shares)
    assert share_tokens(40, [10]) == [40]
    assert share_tokens(0, [3, 4]) == [0, 0]  # a server that reports no usage


def test_max_tokens_over_the_servers_context_is_lowered_not_failed(
    sums, tmp_path, monkeypatch, caplog
):
    """A server that refuses prompt + max_tokens over its context (vLLM before 0.10, SGLang):
    every request would fail; the backend asks again for what fits and warns once."""
    server, seen = deepseek_server(KEY, context=4096)
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    try:
        profile = load_profile(
            "deepseek-r1-api", {"server.base_url": server.url, "sampling.max_tokens": 32768}
        )
        cfg = GenerateConfig(
            output=tmp_path / "c", data=DatasetSpec(dataset=str(sums)), progress=False
        )
        generate(cfg, profile)
    finally:
        server.close()
    rows = read_corpus(tmp_path / "c").to_pylist()
    assert len(rows) == 10 and all(r["finish_reason"] == "stop" for r in rows)
    assert seen["overflow"] == 10 and seen["requests"] == 20
    assert sum("max_tokens lowered to 4076" in m for m in caplog.messages) == 1
