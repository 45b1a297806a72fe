"""What `distill train` really does with the six R1 students, checked without their weights:
configs built on the meta device from the public config.json facts, the split it reads, the
world size it runs with, and a real 2-process FSDP2 run whose final folder must load."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train import corpus

from distill.errors import UserError
from distill.students.bases import bases, hub_config, template_tokens
from distill.students.data import build_dataset, load_rows
from distill.students.recipe import load_recipe, shipped_recipes, template_text
from distill.students.sft import check_context, load_model, load_tokenizer, training_config

REAL = [n for n in shipped_recipes() if load_recipe(n).base_model in bases()]
FSDP_ON_CPU = Path(__file__).parent / "fsdp_cpu"


def rope_inv_freq(config) -> torch.Tensor:
    """What the rotary embedding of a model built from `config` multiplies positions by."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return type(model.model.rotary_emb)(config=config).inv_freq  # on CPU: real values


def default_inv_freq(theta: float, head_dim: int) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim)


def test_the_six_students_are_in_the_facts():
    assert len(REAL) == 6, REAL


@pytest.mark.parametrize("name", REAL)
def test_each_student_builds_on_meta_with_what_its_recipe_promises(name):
    from transformers import AutoModelForCausalLM

    recipe = load_recipe(name)
    facts = bases()[recipe.base_model]
    config = training_config(hub_config(recipe.base_model), recipe.model_config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    assert params == facts["param_count"]  # the shapes are the public ones
    assert abs(params / 1e9 - recipe.params_b) / recipe.params_b < 0.02, params

    # context: every position the recipe trains on exists, and RoPE is what the recipe set
    max_length = recipe.sft["max_length"]
    check_context(config, max_length, name)
    assert config.max_position_embeddings >= max_length
    theta = recipe.model_config.get("rope_theta", facts["config"]["rope_theta"])
    assert config.rope_parameters["rope_theta"] == float(theta)
    if config.rope_parameters.get("rope_type", "default") == "default":
        head_dim = config.hidden_size // config.num_attention_heads
        assert torch.allclose(rope_inv_freq(config), default_inv_freq(float(theta), head_dim))

    # template tokens: eos and pad are single tokens, differ, and fit the embedding matrix
    tokens = facts["tokenizer"]["tokens"]
    assert recipe.eos_token in tokens and recipe.pad_token in tokens
    assert tokens[recipe.eos_token] != tokens[recipe.pad_token]
    for tok in template_tokens(template_text(recipe.chat_template)) | {recipe.eos_token}:
        assert tok in tokens, f"{tok} is not one token of {recipe.base_model}"
        assert tokens[tok] < config.vocab_size
    # <think> is plain text for these bases (several BPE pieces, as open-r1 trains them); the
    # R1-distill models added it as one token: a template must never assume it is special
    assert "<think>" not in tokens and "<think>" in template_text(recipe.chat_template)


def test_qwen_math_rope_extension_is_real_not_an_ignored_attribute():
    """The bug: setattr(config, "rope_theta", 3e5) leaves transformers 5's rotary at 1e4."""
    config = hub_config("Qwen/Qwen2.5-Math-7B")
    ignored = hub_config("Qwen/Qwen2.5-Math-7B")
    ignored.rope_theta = 300000  # what load_model did
    assert torch.allclose(rope_inv_freq(ignored), default_inv_freq(1e4, 128))
    fixed = training_config(config, load_recipe("qwen2.5-math-7b").model_config)
    assert torch.allclose(rope_inv_freq(fixed), default_inv_freq(3e5, 128))
    assert fixed.max_position_embeddings == 32768


def test_the_trained_model_and_its_saved_config_carry_the_extended_rope(tmp_path):
    from distill.config import bundled

    recipe = load_recipe(
        "tiny", {"model_config": {"rope_theta": 300000, "max_position_embeddings": 32768}}
    )
    model = load_model(bundled(recipe.base_model), recipe)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    assert torch.allclose(model.model.rotary_emb.inv_freq, default_inv_freq(3e5, head_dim))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # what vLLM reads (it takes rope_parameters over a stray top-level rope_theta)
    assert saved["rope_parameters"]["rope_theta"] == 300000.0
    assert saved["max_position_embeddings"] == 32768


def test_model_config_typos_and_too_long_sequences_are_one_line():
    with pytest.raises(
        UserError, match=r"model_config\.rope_thetta: not a field of the qwen2 config"
    ):
        training_config(hub_config("Qwen/Qwen2.5-Math-7B"), {"rope_thetta": 300000})
    with pytest.raises(
        UserError, match="max_length 32768 exceeds the model's max_position_embeddings 4096"
    ):
        check_context(hub_config("Qwen/Qwen2.5-Math-7B"), 32768, "recipe x")  # not extended


def hub_layout(folder: Path, splits: dict[str, int]) -> Path:
    """A dataset folder as a Hub download leaves it: data/<split>-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    for split, n in splits.items():
        rows = {"prompt": [f"{split} {i}: what is {i} + 1?" for i in range(n)],
                "completion": [f"<think>\n{i} + 1 = {i + 1}\n</think>\n\n\\boxed{{{i + 1}}}" for i in range(n)]}  # fmt: skip
        pq.write_table(pa.table(rows), folder / "data" / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text("# a dataset\n")
    return folder


def test_training_reads_the_train_split_never_test_by_default(tmp_path):
    from distill.config import bundled

    data = hub_layout(tmp_path / "ds", {"train": 5, "test": 3})
    rows, _ = load_rows(str(data))
    assert len(rows) == 5 and all(p.startswith("train") for p in rows["prompt"])
    rows, _ = load_rows(str(data), "test")
    assert len(rows) == 3
    with pytest.raises(UserError, match=r"no split 'validation' \(has train, test\)"):
        load_rows(str(data), "validation")
    only_test = hub_layout(tmp_path / "t", {"test": 3})
    with pytest.raises(UserError, match=r"no 'train' split \(has test\); pick one with --split"):
        load_rows(str(only_test))
    # the split reaches the tokenized dataset: --split travels to build_dataset
    tok = load_tokenizer(bundled("assets/tiny-base"), load_recipe("tiny"))
    _, counts = build_dataset(tok, str(data), 512, split="test")
    assert counts["kept"] == 3


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", "train", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})  # fmt: skip


def test_a_recipe_for_8_gpus_run_as_one_process_is_refused_in_one_line(tmp_path):
    data = hub_layout(tmp_path / "ds", {"train": 2})
    out = tmp_path / "out"
    r = run_cli("--student", "qwen2.5-math-7b", "--data", str(data), "--output", str(out))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert (
        "written for 8 processes (1 node(s) x 8 GPUs, global batch 128) but this run has 1 (global batch 16)"
        in r.stderr
    )
    assert not out.exists()
    # under the launcher's world size the check passes and the dry run says what will run
    r = run_cli("--student", "qwen2.5-math-7b", "--data", str(data), "--output", str(out), "--dry-run",
                env={"WORLD_SIZE": "8"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "global batch 128 = 2 per device x 8 accumulation x 8 processes" in r.stdout
    r = run_cli("--student", "qwen2.5-math-7b", "--data", str(data), "--output", str(out), "--dry-run",
                "--allow-world-size-change")  # fmt: skip
    assert (
        r.returncode == 0
        and "global batch 16 = 2 per device x 8 accumulation x 1 processes" in r.stdout
    )


def test_a_failed_run_leaves_the_model_folder_record_as_it_was(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "distill_train.yaml").write_text("old: record\n")
    data = corpus(tmp_path / "c", 4, pad_words=400)
    r = run_cli(
        "--student", "tiny", "--data", str(data), "--output", str(out), "--max_length", "16"
    )
    assert r.returncode == 2 and "every example is longer than max_length 16" in r.stderr, r.stderr
    assert (out / "distill_train.yaml").read_text() == "old: record\n"


@pytest.mark.slow
def test_fsdp2_on_two_processes_ends_with_one_consolidated_model(tmp_path):
    """A real 2-process FSDP2 run (gloo on CPU) through `distill train --launcher accelerate`
    with the shipped fsdp2.yaml (SHARDED_STATE_DICT, bf16 mixed precision): each process replays
    the resolved file, and the final folder is a bf16 safetensors model that loads."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from distill.config import bundled

    extra = tmp_path / "fsdp.yaml"
    extra.write_text(yaml.safe_dump({
        "torch_dtype": "bfloat16",
        "distributed": {"strategy": "fsdp2", "nodes": 1, "gpus_per_node": 2},
        "sft": {"use_cpu": False, "max_steps": 3, "learning_rate": 1e-2, "logging_steps": 1,
                "save_strategy": "steps", "save_steps": 2},
    }))  # fmt: skip
    out = tmp_path / "ckpt"
    env = {"DISTILL_TEST_FSDP_ON_CPU": "1", "PYTHONPATH": str(FSDP_ON_CPU), "OMP_NUM_THREADS": "1"}
    r = run_cli("--student", "tiny", "--data", str(corpus(tmp_path / "c", 8)), "--output", str(out),
                "--config", str(extra), "--launcher", "accelerate", env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    run = yaml.safe_load((out / "distill_train.yaml").read_text())
    assert run["world_size"] == 2 and run["global_batch"] == 1 * 4 * 2
    assert run["sft_effective"]["max_steps"] == 3 and run["sft_effective"]["max_grad_norm"] == 1.0
    # intermediate checkpoints stay sharded (DCP), the final folder is consolidated
    assert list((out / "checkpoint-2").glob("pytorch_model_fsdp_0/*.distcp"))
    shards = sorted(out.glob("model*.safetensors"))
    assert shards, sorted(p.name for p in out.iterdir())
    with safe_open(str(shards[0]), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    assert dtypes == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(bundled("assets/tiny-base"))
    moved = [n for n, p in trained.named_parameters()
             if not torch.equal(p.float(), base.get_parameter(n).float().to(torch.bfloat16).float())]  # fmt: skip
    assert (
        len(moved) > len(list(trained.parameters())) // 2
    )  # weights are the trained ones, all there
    assert "max_grad_norm | 1.0" in (out / "README.md").read_text()

    # and vLLM, the reader of `distill eval` and of the pipeline, serves it
    from distill.generate import GenerateConfig, generate
    from distill.problems import DatasetSpec
    from distill.records import read_corpus
    from distill.teachers.profile import load_profile

    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"id": "p0", "problem": "What is 1 + 2?", "answer": "3"}) + "\n")
    profile = load_profile("tiny", {"model": str(out), "sampling.max_tokens": 8, "engine.max_model_len": 256,
                                    "engine.gpu_memory_utilization": 0.1})  # fmt: skip
    generate(
        GenerateConfig(
            output=tmp_path / "gen", data=DatasetSpec(dataset=str(problems)), progress=False
        ),
        profile,
    )
    assert read_corpus(tmp_path / "gen").num_rows == 1


@pytest.mark.parametrize("name", REAL)
def test_real_recipes_set_what_a_reproduction_needs(name):
    sft = load_recipe(name).sft
    assert sft["max_grad_norm"] == 0.2  # open-r1's distill recipes; TRL's default is 1.0
    assert not sft.get("use_liger_kernel")  # TRL's fused LM head; Liger fails multi-node
    assert sft["warmup_steps"] < 1  # a ratio: transformers >= 5 (pyproject's floor)


def test_flash_attention_falls_back_to_sdpa_where_it_cannot_run(caplog):
    from distill.students.sft import attention

    assert attention("sdpa") == "sdpa"
    assert attention("flash_attention_2") == "sdpa"  # no CUDA, no flash-attn here
    assert "training with sdpa" in caplog.text


def test_launched_processes_replay_the_resolved_file(tmp_path):
    data = hub_layout(tmp_path / "ds", {"train": 2})
    out = tmp_path / "out"
    r = run_cli("--student", "qwen2.5-math-7b", "--data", str(data), "--output", str(out),
                "--launcher", "slurm", "--learning_rate", "1e-5", "--nodes", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    run = yaml.safe_load((out / "distill_train.launch.yaml").read_text())
    assert run["sft_overrides"] == {"learning_rate": 1e-5}
    assert run["recipe"]["distributed"]["nodes"] == 2 and run["train"]["data"] == str(data)
    script = (out / "train.sbatch").read_text()
    assert f"train --resolved {out}/distill_train.launch.yaml'" in script
    assert not (out / "distill_train.yaml").exists()  # the record comes with the model
    r = run_cli("--resolved", str(out / "distill_train.launch.yaml"), "--learning_rate", "2e-5")
    assert r.returncode == 2 and "--resolved replays a run file: give no other options" in r.stderr


def test_training_data_can_join_a_corpus_and_a_plain_sft_dataset(tmp_path):
    """R1's stage 3: the filtered reasoning corpus plus non-reasoning data, in one SFT run."""
    from distill.config import bundled

    plain = tmp_path / "chat.jsonl"
    plain.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"},
                                                       {"role": "assistant", "content": "Hello."}]}) + "\n"
                             for i in range(3)))  # fmt: skip
    tok = load_tokenizer(bundled("assets/tiny-base"), load_recipe("tiny"))
    joined = f"{corpus(tmp_path / 'c', 4)},{plain}"
    ds, counts = build_dataset(tok, joined, 512)
    assert len(ds) == counts["kept"] == 7


def test_the_screen_shows_one_display_and_the_log_file_keeps_the_rest(tmp_path):
    out = tmp_path / "o"
    r = run_cli("--student", "tiny", "--data", str(corpus(tmp_path / "c", 4)), "--output", str(out),
                "--max_steps", "2", "--logging_steps", "1", env={"COLUMNS": "120"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    screen = r.stdout + r.stderr
    for chatter in ("Loading weights", "it/s]", "{'loss'", "FutureWarning", "Writing model shards"):
        assert chatter not in screen, (chatter, screen[-2000:])
    assert "distill train →" in screen and "loss curve:" in screen
    (logfile,) = (out / "logs").glob("train-*.log")
    assert "step 2: {" in logfile.read_text()  # the raw step dicts are kept, in the log
