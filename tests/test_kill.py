"""SIGKILL `distill generate` at different moments; each rerun resumes, exactly once."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import write_jsonl

from distill.records import read_corpus, read_manifest, shard_paths

pytestmark = pytest.mark.slow
PROBLEMS, SAMPLES = 300, 4


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "generate", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen) -> None:
    engine = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)  # the main process only, as `kill -9 PID` would
    proc.wait()
    # vLLM's engine processes would outlive it holding their memory; distill's reaper ends them
    _gone, alive = psutil.wait_procs(engine, timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert not alive, f"orphaned engine processes: {[p.name() for p in alive]}"


def wait_for(cond, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(
                f"generate ended before the kill point: {proc.stderr.read().decode()[-2000:]}"
            )
        time.sleep(0.05)
    pytest.fail("kill point never reached")


def test_sigkill_at_several_moments_then_resume(tiny_llama, tmp_path):
    profile = tmp_path / "llama.yaml"
    profile.write_text(
        f"model: {tiny_llama}\nengine:\n  dtype: float32\n  max_model_len: 512\n"
        "  gpu_memory_utilization: 0.1\n  enforce_eager: true\n"
        "  extra: {kv_cache_memory_bytes: 268435456}\nsampling:\n  max_tokens: 64\n"
    )
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": f"q{i}", "problem": f"Compute {i} * 7.", "answer": str(7 * i)}
            for i in range(PROBLEMS)
        ],
    )
    out = tmp_path / "out"
    args = [
        "--teacher",
        str(profile),
        "--dataset",
        str(data),
        "--samples",
        str(SAMPLES),
        "--chunk-size",
        "8",
        "--output",
        str(out),
    ]

    # 1. while the engine is still starting (nothing on disk yet)
    proc = start(args)
    time.sleep(4)
    kill(proc)
    assert not shard_paths(out)
    # 2. right after the first shard lands (possibly before its manifest update)
    proc = start(args)
    wait_for(lambda: len(shard_paths(out)) >= 1, proc)
    kill(proc)
    first = len(shard_paths(out))
    # 3. well into the run
    proc = start(args)
    wait_for(lambda: len(shard_paths(out)) >= first + 5, proc)
    kill(proc)
    assert 0 < read_corpus(out).num_rows < PROBLEMS * SAMPLES
    # 4. the rerun that finishes
    proc = start(args)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-3000:]

    table = read_corpus(out)
    counts = Counter(
        zip(
            table.column("problem_id").to_pylist(),
            table.column("sample_index").to_pylist(),
            strict=True,
        )
    )
    assert len(counts) == PROBLEMS * SAMPLES and set(counts.values()) == {1}
    manifest = read_manifest(out)
    assert (
        manifest["counts"]["rows"] == PROBLEMS * SAMPLES
        and manifest["counts"]["problems"] == PROBLEMS
    )
    assert manifest["counts"]["shards"] == len(shard_paths(out))
    assert not list(Path(out).glob(".*tmp*"))
