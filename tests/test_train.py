"""`distill train` on real TRL with a tiny student on CPU."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.errors import UserError
from distill.records import FIELDS, CorpusWriter
from distill.students.recipe import ACCELERATE_DIR, load_recipe
from distill.train import TrainConfig, train

GOLDEN = Path(__file__).parent / "golden"
SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


def corpus(folder: Path, n: int = 8, pad_words: int = 0) -> Path:
    rows = []
    for i in range(n):
        reasoning = (
            f"First add {i} and {i + 1}. That gives {2 * i + 1}." + " Check." * pad_words * (i % 2)
        )
        answer = f"The answer is \\boxed{{{2 * i + 1}}}."
        msgs = [{"role": "user", "content": f"What is {i} + {i + 1}?\n{SUFFIX}"}]
        rows.append({f: None for f in FIELDS} | {
            "id": f"p{i}/0", "problem_id": f"p{i}", "sample_index": 0, "problem": f"What is {i} + {i + 1}?",
            "domain": "math", "reference": json.dumps(str(2 * i + 1)), "messages": json.dumps(msgs),
            "completion": f"<think>\n{reasoning}\n</think>\n\n{answer}", "reasoning": reasoning, "answer": answer,
            "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 20, "teacher": "t", "sampling": "{}",
        })  # fmt: skip
    w = CorpusWriter(folder, {})
    w.write_shard(rows)
    w.write_manifest()
    return folder


def test_labels_mask_the_prompt_and_keep_the_think_block(tiny_qwen, tmp_path):
    from trl import SFTTrainer

    from distill.students.data import build_dataset
    from distill.students.sft import load_model, load_tokenizer, sft_args

    recipe = load_recipe("tiny")
    tok = load_tokenizer(str(tiny_qwen), recipe)
    assert tok.pad_token_id != tok.eos_token_id and tok.eos_token == "<|im_end|>"
    data, counts = build_dataset(tok, str(corpus(tmp_path / "c", 4)), max_length=512)
    assert counts == {"examples": 4, "kept": 4, "dropped_too_long": 0, "tokens": counts["tokens"]}
    args = sft_args(
        recipe,
        tmp_path / "out",
        {"packing": False, "padding_free": False, "max_steps": 1},
        lora=False,
    )
    trainer = SFTTrainer(
        model=load_model(str(tiny_qwen), recipe, fresh=False),
        args=args,
        train_dataset=data,
        processing_class=tok,
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    text = tok.decode(ids)
    target = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    prompt = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == -100])
    assert text.startswith("<|im_start|>user\nWhat is 0 + 1?\n" + SUFFIX)
    # the prefill is prompt (no loss), the reasoning and </think> are in the target, which ends at eos
    # (the newline after <|im_end|> closes the turn: outside the loss, the last masked token)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n") and "What is 0 + 1?" in prompt
    assert (
        target
        == "First add 0 and 1. That gives 1.\n</think>\n\nThe answer is \\boxed{1}.<|im_end|>"
    )
    # inference renders the same text up to the prefill
    assert tok.apply_chat_template(
        [{"role": "user", "content": "q"}], tokenize=False, add_generation_prompt=True
    ).endswith("assistant\n<think>\n")


def test_packed_samples_do_not_attend_to_each_other(tiny_qwen):
    import torch

    from distill.students.sft import load_model

    model = load_model(str(tiny_qwen), load_recipe("tiny"), fresh=False)
    model.train()
    assert model.config.use_cache is False
    a, b = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[10, 11, 12, 13]])
    packed = model(
        input_ids=torch.cat([a, b], 1), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    ).logits
    alone = model(input_ids=b).logits
    assert torch.allclose(packed[0, 5:], alone[0], atol=1e-5)


def test_over_length_samples_are_dropped_and_counted(tiny_qwen, tmp_path):
    from distill.students.data import build_dataset
    from distill.students.sft import load_tokenizer

    tok = load_tokenizer(str(tiny_qwen), load_recipe("tiny"))
    data, counts = build_dataset(tok, str(corpus(tmp_path / "c", 8, pad_words=40)), max_length=120)
    assert counts["dropped_too_long"] == 4 and counts["kept"] == 4 and len(data) == 4
    assert max(len(x) for x in data["input_ids"]) <= 120


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_checkpoint_stops_at_eos_in_vllm(tiny_qwen, tmp_path):
    out = tmp_path / "ckpt"
    stats = train(
        TrainConfig(
            data=str(corpus(tmp_path / "c", 8)), output=out, student="tiny", model=str(tiny_qwen)
        ),
        sft_overrides={
            "num_train_epochs": 60,
            "learning_rate": 3e-3,
            "logging_steps": 5,
            "per_device_train_batch_size": 8,
        },
    )
    assert stats["final_loss"] < stats["first_loss"] / 3, stats
    assert stats["tokens_seen"] > 0 and stats["dropped_too_long"] == 0
    for name in (
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "README.md",
        "stats.json",
        "distill_train.yaml",
        "loss.png",
    ):
        assert (out / name).is_file(), name
    gen = json.loads((out / "generation_config.json").read_text())
    tok = json.loads((out / "tokenizer_config.json").read_text())
    assert gen["eos_token_id"] != gen["pad_token_id"] and tok["eos_token"] == "<|im_end|>"
    assert "<think>" in (out / "chat_template.jinja").read_text()

    from distill.generate import GenerateConfig, generate
    from distill.problems import DatasetSpec
    from distill.records import read_corpus
    from distill.teachers.profile import load_profile

    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps(
                {"id": f"p{i}", "problem": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}
            )
            + "\n"
            for i in range(4)
        )
    )
    profile = load_profile("tiny", {"model": str(out), "sampling.temperature": 0.0, "sampling.max_tokens": 200,
                                    "engine.gpu_memory_utilization": 0.1, "engine.max_model_len": 512})  # fmt: skip
    generate(
        GenerateConfig(
            output=tmp_path / "gen", data=DatasetSpec(dataset=str(problems)), progress=False
        ),
        profile,
    )
    rows = read_corpus(tmp_path / "gen").to_pylist()
    stopped = [r for r in rows if r["finish_reason"] == "stop"]
    assert len(stopped) >= 3, [(r["finish_reason"], r["completion"][:120]) for r in rows]
    assert all("</think>" in r["completion"] and "\\boxed{" in r["answer"] for r in stopped), [
        r["completion"] for r in rows
    ]


def test_lora_trains_adapters(tiny_qwen, tmp_path):
    out = tmp_path / "lora"
    train(TrainConfig(data=str(corpus(tmp_path / "c", 4)), output=out, student="tiny", model=str(tiny_qwen), lora=True),
          sft_overrides={"max_steps": 2})  # fmt: skip
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_kill_during_training_then_resume(tiny_qwen, tmp_path):
    out = tmp_path / "ckpt"
    data = corpus(tmp_path / "c", 16)
    args = [sys.executable, "-m", "distill.cli", "train", "--student", "tiny", "--model", str(tiny_qwen), "--data", str(data),
            "--output", str(out), "--max_steps", "40", "--save_strategy", "steps", "--save_steps", "5",
            "--per_device_train_batch_size", "1", "--packing", "false", "--padding_free", "false"]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    end = time.time() + 300
    while not (out / "checkpoint-10").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < end, "no checkpoint appeared"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the kill can land inside a checkpoint's writing: only finished ones may be resumed
    done = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/trainer_state.json"))
    torn = out / "checkpoint-39"  # stands for one a kill cut short: weights, no trainer state
    shutil.copytree(out / f"checkpoint-{done[-1]}", torn)
    (torn / "trainer_state.json").unlink()
    r = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["resumed_from"].endswith(f"checkpoint-{done[-1]}") and stats["steps"] == 40
    state = json.loads((out / f"checkpoint-{40}" / "trainer_state.json").read_text())
    assert state["global_step"] == 40


def _normalise(text: str, tmp: Path) -> str:
    return (
        text.replace(sys.executable, "<python>")
        .replace(str(ACCELERATE_DIR), "<accelerate>")
        .replace(str(tmp), "<tmp>")
    )


@pytest.mark.parametrize(
    "name, student, extra",
    [
        ("accelerate_zero3", "qwen2.5-math-7b", ["--launcher", "accelerate"]),
        ("accelerate_fsdp2", "qwen2.5-32b", ["--launcher", "accelerate"]),
        (
            "slurm_2_nodes",
            "llama-3.1-8b",
            [
                "--launcher",
                "slurm",
                "--nodes",
                "2",
                "--gpus-per-node",
                "8",
                "--learning_rate",
                "1e-5",
            ],
        ),
    ],
)
def test_dry_run_commands_match_golden_files(name, student, extra, tmp_path):
    r = subprocess.run([sys.executable, "-m", "distill.cli", "train", "--student", student, "--data", "open-r1/Mixture-of-Thoughts",
                        "--output", str(tmp_path / "ckpt"), *extra, "--dry-run"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = _normalise(r.stdout, tmp_path)
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("DISTILL_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text()
    assert not (tmp_path / "ckpt").exists()  # a dry run writes nothing


def test_bad_recipe_field_is_one_line_and_exit_2(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("sft:\n  learnng_rate: 1.0e-5\n")
    r = subprocess.run([sys.executable, "-m", "distill.cli", "train", "--student", "tiny", "--data", str(tmp_path), "--output",
                        str(tmp_path / "o"), "--config", str(extra)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "unknown SFTConfig field 'sft.learnng_rate' (did you mean 'learning_rate'?)" in r.stderr
    bad = tmp_path / "recipe.yaml"
    bad.write_text("base_model: x\ndistributed: {strategy: zero4}\n")
    with pytest.raises(UserError, match=r"distributed\.strategy' must be one of"):
        load_recipe(str(bad))
    r = subprocess.run([sys.executable, "-m", "distill.cli", "train", "--student", "tiny", "--data", str(tmp_path), "--output",
                        str(tmp_path / "o"), "--num_train_epochs", "three"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "--num_train_epochs: expected" in r.stderr
    assert not (tmp_path / "o").exists()
