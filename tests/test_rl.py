"""`distill rl`: recipes, flags, data selection, launch commands, and real GRPO runs on the tiny
models (a reward that rises, each guard tripped by a run built to trip it, resume after a kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_jsonl

from distill.errors import UserError
from distill.rl import (
    GuardTripped,
    RLConfig,
    load_rl_problems,
    load_rl_recipe,
    parse_grpo_args,
    rl,
    shipped_rl_recipes,
    validate_grpo,
)
from distill.synthetic import make_problems

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "vllm", "transformers", "trl", "datasets")
REAL = ["r1-zero-qwen2.5-math-7b", "qwen2.5-math-1.5b", "r1-distill-qwen-1.5b"]


def distill(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def arith(tmp_path_factory) -> Path:
    """Training problems the tiny models know: 2-3 digit column arithmetic."""
    path = tmp_path_factory.mktemp("rl") / "train.jsonl"
    return write_jsonl(path, make_problems(64, 7, "train", 3))


# --- recipes and flags -----------------------------------------------------------------------


def test_shipped_recipes_cite_sources_and_validate():
    names = shipped_rl_recipes()
    assert {"tiny", *REAL} <= set(names)
    for name in names:
        recipe = load_rl_recipe(name)
        text = (ROOT / "distill" / "rl" / "recipes" / f"{name}.yaml").read_text()
        assert text.startswith("#") and "loss" in text.lower(), name  # the loss choice is explained
        validate_grpo(recipe.grpo, name)
        assert recipe.grpo.get("loss_type") in ("grpo", "dr_grpo", "dapo"), name
    for name in REAL:
        text = (ROOT / "distill" / "rl" / "recipes" / f"{name}.yaml").read_text()
        assert any(s in text for s in ("open-r1", "understand-r1-zero", "simpleRL")), name


def test_grpo_flags_are_typed_and_typos_suggest():
    got = parse_grpo_args(["--max-steps", "5", "--learning_rate=1e-6", "--mask_truncated_completions",
                           "--loss-type", "dr_grpo"])  # fmt: skip
    assert got == {"max_steps": 5, "learning_rate": 1e-6, "mask_truncated_completions": True,
                   "loss_type": "dr_grpo"}  # fmt: skip
    with pytest.raises(UserError, match="did you mean 'num_generations'"):
        parse_grpo_args(["--num_generation", "8"])
    with pytest.raises(UserError, match="--accuracy-weight"):
        parse_grpo_args(["--reward_weights", "[1]"])
    with pytest.raises(UserError, match=r"unknown GRPOConfig field 'grpo\.lerning_rate'"):
        validate_grpo({"lerning_rate": 1}, "x.yaml")


def test_help_is_instant_and_imports_nothing_heavy():
    code = (
        "import sys; from distill.cli import app; import typer.testing as tt;"
        "r = tt.CliRunner().invoke(app, ['rl', '--help']); assert r.exit_code == 0, r.output;"
        "assert '--pass-rate-band' in r.output and '--accuracy-weight' in r.output, r.output;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "nope"], "unknown rl recipe 'nope'"),
        (["--pass-rate-band", "0.7,0.2"], "--pass-rate-band: expected LO,HI"),
        (["--lerning-rate", "1"], "did you mean 'learning_rate'"),
        (["--max-seconds", "0"], "--max-seconds: expected a positive number of seconds, got 0"),
        (["--accuracy-weight", "0", "--format-weight", "0", "--language-weight", "0"],
         "every reward weight is 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, arith, args, message):
    r = distill("rl", "--data", str(arith), "--output", str(tmp_path / "o"), *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_rl_recipes_lists_and_shows():
    r = distill("rl-recipes")
    assert r.returncode == 0 and "r1-zero-qwen2.5-math-7b" in r.stdout and "Qwen/Qwen2.5-Math-7B" in r.stdout
    r = distill("rl-recipes", "tiny")
    assert "template: r1" in r.stdout and "loss_type: dapo" in r.stdout


# --- launching -------------------------------------------------------------------------------


def test_dry_runs_build_accelerate_and_slurm(tmp_path):
    def command(launcher: str, recipe: dict | None = None, grpo: dict | None = None) -> str:
        cfg = RLConfig(recipe="r1-zero-qwen2.5-math-7b", data="math500", output=Path("ckpt/z"),
                       launcher=launcher, dry_run=True)  # fmt: skip
        return rl(cfg, recipe or {}, grpo or {})["command"]

    text = command("accelerate", grpo={"max_steps": 10})
    assert text.startswith("# plan: rl Qwen/Qwen2.5-Math-7B (7.62B) zero3 x 8 GPUs") and "fits" in text
    assert "accelerate.commands.launch" in text and "zero3.yaml" in text
    assert "--num_processes 8" in text and "distill.cli rl" in text
    assert "--max_steps 10" in text and "--launcher none" in text
    # vllm-server on one node: the last GPU serves (trl vllm-serve), the other seven train
    text = command("accelerate", {"generation": "vllm-server"})
    assert "CUDA_VISIBLE_DEVICES=7 trl vllm-serve" in text and "--num_processes 7" in text
    # several nodes under Slurm: the first serves, the others train against it
    text = command("slurm", {"distributed.nodes": 3, "generation": "vllm-server"})
    assert "#SBATCH --nodes=3" in text and "trl vllm-serve" in text
    assert "--num_machines 2" in text and "--vllm_server_host $VLLM_HOST" in text
    text = command("slurm", {"distributed.nodes": 2})
    assert "--num_machines 2 --num_processes 16" in text and "srun" in text and "x 16 GPUs" in text
    assert not (tmp_path / "ckpt").exists()
    # the command line builds the same (flags for recipe fields and GRPOConfig fields)
    r = distill("rl", "--recipe", "r1-zero-qwen2.5-math-7b", "--data", "math500", "--output", "ckpt/z",
                "--launcher", "slurm", "--nodes", "2", "--dry-run", "--learning-rate", "2e-6")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --nodes=2" in r.stdout and "--learning_rate 2e-06" in r.stdout


# --- data: datasets and pass-rate bands ------------------------------------------------------


def _filter_output(tmp: Path) -> Path:
    """A real `distill filter` output: 3 problems x 4 samples, 0, 2 and 4 of them right."""
    from distill.filter import FilterConfig, filter_corpus
    from distill.filters.corpus_checks import CorpusConfig
    from distill.prompts import format_trace, split_trace
    from distill.records import FIELDS, CorpusWriter
    from distill.verify import VerifyConfig

    rows = []
    for pid, (question, gold, right) in enumerate([("What is 2 + 2?", "4", 0), ("What is 3 + 3?", "6", 2),
                                                  ("What is 4 + 4?", "8", 4)]):  # fmt: skip
        for i in range(4):
            answer = gold if i < right else "0"
            completion = format_trace("Add the ones.", f"The final answer is \\boxed{{{answer}}}")
            reasoning, ans = split_trace(completion)
            rows.append({f: None for f in FIELDS} | {
                "id": f"p{pid}/{i}", "problem_id": f"p{pid}", "sample_index": i, "problem": question,
                "domain": "math", "reference": json.dumps(gold), "messages": "[]", "completion": completion,
                "reasoning": reasoning, "answer": ans, "finish_reason": "stop", "prompt_tokens": 5,
                "completion_tokens": 20, "teacher": "t", "sampling": "{}",
            })  # fmt: skip
    w = CorpusWriter(tmp / "traces", {"teacher": {"model": "t"}})
    w.write_shard(rows)
    w.write_manifest()
    filter_corpus(FilterConfig(input=tmp / "traces", output=tmp / "filtered",
                               verify=VerifyConfig(workers=2),
                               corpus=CorpusConfig(dedup=False, near_dup_threshold=0.0),
                               progress=False, report=False))  # fmt: skip
    return tmp / "filtered"


def test_pass_rate_band_keeps_problems_that_still_teach(tmp_path):
    out = _filter_output(tmp_path)
    problems, info = load_rl_problems(RLConfig(data=str(out), output=tmp_path / "o", pass_rate_band="0.1,0.6"))  # fmt: skip
    assert [p.problem for p in problems] == ["What is 3 + 3?"]
    assert info["pass_rate_band"] == {"band": [0.1, 0.6], "from": str(out), "kept": 1, "outside": 2, "unmeasured": 0}  # fmt: skip
    # the same band applied to a dataset `distill generate` read, rates from the filter run
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "p1", "problem": "What is 3 + 3?", "answer": "6"},
                                              {"id": "p2", "problem": "What is 4 + 4?", "answer": "8"},
                                              {"id": "p9", "problem": "What is 9 + 9?", "answer": "18"}])  # fmt: skip
    problems, info = load_rl_problems(RLConfig(data=str(data), output=tmp_path / "o",
                                               pass_rate_band="0,1", pass_rates=str(out)))  # fmt: skip
    assert [p.problem_id for p in problems] == ["p1", "p2"] and info["pass_rate_band"]["unmeasured"] == 1
    with pytest.raises(UserError, match="no problems left"):
        load_rl_problems(RLConfig(data=str(out), output=tmp_path / "o", pass_rate_band="0.3,0.4"))


def test_builtin_dataset_names_work_as_in_generate(tmp_path):
    problems, _info = load_rl_problems(RLConfig(data="arith-demo", output=tmp_path / "o", limit=5))
    assert len(problems) == 5 and problems[0].domain == "math" and problems[0].reference


def test_one_verifier_for_the_whole_run_keeps_the_timeouts():
    """distill rl verifies every step through one `verify_rows` that lives for the run: after
    the first batch a step pays for its checks only, and a pathological answer still costs
    its timeout (reward 0, verify_timeout), never the step."""
    from distill.rewards import accuracy_scores, parse
    from distill.rl.reward_funcs import RunVerifier
    from distill.verify import VerifyConfig

    cfg = VerifyConfig(verify_timeout=2, workers=2)
    runner = RunVerifier(cfg)
    try:
        times = []
        for k in range(4):
            parsed = [parse(f"<think>\nx\n</think>\n\n\\boxed{{{i + k}}}", "r1") for i in range(16)]
            rows = [{"problem": "p", "domain": "math", "reference": json.dumps(str(i))} for i in range(16)]
            t = time.perf_counter()
            scores = accuracy_scores(parsed, rows, cfg, {}, runner)
            times.append(time.perf_counter() - t)
            assert [s.value for s in scores] == [1.0 if k == 0 else 0.0] * 16
        assert max(times[1:]) < 0.5, times  # warm workers: no start-up per step
        tower = parse("<think>\nx\n</think>\n\n\\boxed{9^{9^{9^{9^{9}}}}}", "r1")
        t = time.monotonic()
        scores = accuracy_scores([tower], [{"problem": "p", "domain": "math", "reference": '"5"'}], cfg, {}, runner)
        assert time.monotonic() - t < 2 + 10 and scores[0].value == 0.0
        assert scores[0].reason in ("verify_timeout", "wrong_answer")
    finally:
        runner.close()


# --- real GRPO runs on the tiny models --------------------------------------------------------

FAST = {"max_steps": 4, "num_generations": 4, "per_device_train_batch_size": 16, "save_strategy": "no",
        "max_completion_length": 160}  # fmt: skip


@pytest.mark.slow
def test_grpo_raises_a_reward(tmp_path, arith):
    """DAPO's overlong penalty inside a tight budget (it starts at 40 tokens; the tiny teacher's
    traces run 75-130): a real GRPO run on the tiny teacher learns within a few steps to answer
    in fewer tokens, and the penalty, logged per step, rises towards 0. (Alone, with no accuracy
    reward, it is learnt the cheap way: stopping early. That is what the run shows.)"""
    cfg = RLConfig(data=str(arith), output=tmp_path / "run", progress=False)
    weights = {"rewards.accuracy": 0.0, "rewards.format": 0.0, "rewards.language": 0.0,
               "rewards.overlong": 1.0, "overlong_cache": 120, "guards.enabled": False}  # fmt: skip
    stats = rl(cfg, weights, {**FAST, "max_steps": 6, "learning_rate": 1e-3})
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    curve = [m["rewards/overlong/mean"] for m in metrics if "rewards/overlong/mean" in m]
    assert len(curve) == 6 and sum(curve[-2:]) / 2 > sum(curve[:2]) / 2 + 0.1, curve
    assert stats["steps"] == 6 and stats["guard"] is None
    assert stats["last"]["completions/mean_length"] < stats["first"]["completions/mean_length"]
    for name in ("config.json", "model.safetensors", "README.md", "curves.png", "stats.json"):
        assert (tmp_path / "run" / name).is_file(), name
    card = (tmp_path / "run" / "README.md").read_text()
    assert "overlong (weight 1.0)" in card and "## Training curves" in card


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, grpo, expect",
    [
        # only a reward that is the same for every completion: zero variance in every group
        ({"rewards.accuracy": 0.0, "rewards.format": 0.0, "rewards.language": 1.0}, {},
         "every group of 4 completions got the same reward for 3 steps"),
        # 12 tokens cannot hold the working: every completion truncated
        ({}, {"max_completion_length": 12}, "of completions hit --max-completion-length 12"),
        # R1-Zero's answer tags asked of a model that never writes them
        ({"template": "r1-zero", "prefill": "<think>\n"}, {}, "no answer could be extracted"),
    ],
)  # fmt: skip
def test_each_guard_trips_on_a_run_built_to_trip_it(tmp_path, arith, recipe, grpo, expect):
    cfg = RLConfig(data=str(arith), output=tmp_path / "run", progress=False)
    t = time.time()
    with pytest.raises(GuardTripped) as e:
        rl(cfg, recipe, {**FAST, "max_steps": 8, **grpo})
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert e.value.stats["steps"] == 3  # stopped at the third round, not at max_steps
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert time.time() - t < 120


@pytest.mark.slow
def test_max_seconds_stops_the_run_at_a_step_and_saves_the_model(tmp_path, arith):
    """A compute budget (`--max-seconds`): the run stops after the step that used it up, with
    the model saved as at the end of a run, and says so in its stats."""
    cfg = RLConfig(data=str(arith), output=tmp_path / "run", progress=False, max_seconds=0.01)
    stats = rl(cfg, {"guards.enabled": False}, {**FAST, "max_steps": 8})
    assert stats["steps"] == 1 and stats["out_of_time"] is True
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["out_of_time"] is True


def _budget_rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks: rank 0 has used up its budget, rank 1 has not (yet)."""
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist

    from distill.rl.monitor import make_callbacks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    monitor, _ = make_callbacks(load_rl_recipe("tiny"), False, max_seconds=2.0)
    args = SimpleNamespace(device=torch.device("cpu"))
    state, control = SimpleNamespace(max_steps=8, global_step=0), SimpleNamespace(should_training_stop=False)
    monitor.on_train_begin(args, state, control)
    seen = []
    for step, spent in ((1, 0.0), (2, 5.0 if rank == 0 else 0.0)):
        monitor.started = time.monotonic() - spent
        state.global_step = step
        monitor.on_step_end(args, state, control)
        seen.append(control.should_training_stop)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"stop": seen, "out_of_time": monitor.out_of_time}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_max_seconds_stops_every_rank_at_the_same_step(tmp_path):
    """Under several processes the budget is one decision: when one rank's clock runs out,
    every rank stops after that step (a rank that trained on would wait forever in the next
    collective). Two real gloo processes, one of them over budget."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_budget_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen == {"stop": [False, True], "out_of_time": True}, (rank, seen)


@pytest.mark.slow
def test_resume_after_a_kill(tmp_path, arith):
    out = tmp_path / "run"
    args = ["rl", "--data", str(arith), "--output", str(out), "--max-steps", "6", "--save-steps", "2",
            "--save_strategy", "steps", "--num-generations", "4", "--per-device-train-batch-size", "16",
            "--max-completion-length", "160"]  # fmt: skip
    env = {**os.environ, "DISTILL_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 200
    while not (out / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = distill(*args)  # the same command again: refused, the folder holds a run
    assert r.returncode == 2 and "--resume" in r.stderr
    r = distill(*args, "--resume")
    assert r.returncode == 0, r.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["steps"] == 6 and stats["resumed_from"].rsplit("-", 1)[1] in ("2", "4")


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory) -> Path:
    """A sequence-classification model with one output on the tiny base's shapes and tokenizer:
    random weights, so its scores mean nothing, but it is the kind of model stage 4 loads."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from distill.config import bundled

    base = bundled("assets/tiny-base")
    out = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(base, num_labels=1))
    tok = AutoTokenizer.from_pretrained(base)
    model.config.pad_token_id = tok.pad_token_id or tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_the_reward_model_scores_only_prompts_without_a_reference(tiny_reward_model):
    from distill.rl.reward_funcs import RewardModelReward

    rm = RewardModelReward(str(tiny_reward_model), prefill="<think>\n")
    completions = ["Two.\n</think>\n\n\\boxed{2}", "Short.\n</think>\n\nHello there, friend.", "x\n</think>\n\nBye."]
    values = rm(["p"] * 3, completions, [[1]] * 3, problem=["What is 1 + 1?", "Greet me.", "Say bye."],
                reference=['"2"', None, None])  # fmt: skip
    assert values[0] is None and all(isinstance(v, float) for v in values[1:])
    assert values[1] != values[2]  # different answers, different scores
    # the score reads the answer after the reasoning, in the reward model's own template
    assert rm.text("Greet me.", "Short.\n</think>\n\nHello.").count("Short.") == 0


def test_a_reward_model_needs_its_weight_and_the_weight_its_model():
    with pytest.raises(UserError, match="--reward-model-weight"):
        load_rl_recipe("tiny", None, {"reward_model": "some/rm"})
    with pytest.raises(UserError, match="--reward-model"):
        load_rl_recipe("tiny", None, {"rewards.reward_model": 1.0})


@pytest.mark.slow
def test_grpo_with_a_reward_model_on_general_prompts_beside_rule_rewards(tmp_path, arith, tiny_reward_model):
    """R1's stage 4 on the tiny models: reasoning problems (rule rewards) and general prompts
    without a reference (the reward model) in one run; `--data` takes both, comma-separated."""
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"prompt": f"Write a greeting for friend number {i}."}) + "\n" for i in range(8)))
    cfg = RLConfig(data=f"{arith},{general}", output=tmp_path / "run", progress=False)
    recipe = {"reward_model": str(tiny_reward_model), "rewards.reward_model": 1.0, "guards.enabled": False}
    stats = rl(cfg, recipe, {**FAST, "max_steps": 2})
    assert stats["data"]["problems"] == 64 + 8 and stats["data"]["no_reference"] == 8
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rm = [m["rewards/reward_model/mean"] for m in metrics if "rewards/reward_model/mean" in m]
    acc = [m["rewards/accuracy/mean"] for m in metrics if "rewards/accuracy/mean" in m]
    assert rm and acc and all(v == v for v in rm + acc)  # both rewards scored rows (no NaN)
    card = (tmp_path / "run" / "README.md").read_text()
    assert "reward_model (weight 1.0)" in card
