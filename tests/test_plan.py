"""`distill plan`: each memory term against its source, the six students, and measurements."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import UserError
from distill.memory import (
    GiB,
    Shape,
    model_shape,
    model_states,
    saved_per_token_layer,
    shape_from_config,
    train_terms,
)
from distill.plan import PlanConfig, plan, plan_for_recipe, render, stated_gb
from distill.students.bases import bases
from distill.students.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hub_id", sorted(bases()))
def test_parameter_count_from_shapes_equals_the_public_one(hub_id):
    assert model_shape(hub_id).params == bases()[hub_id]["param_count"]


def test_model_states_follow_their_sources():
    p = 7_615_616_512
    # DeepSpeed's estimate_zero3_model_states_mem_needs without offload: 18 bytes / param / GPU
    assert sum(model_states(p, "zero3", 8, 2).values()) == pytest.approx(18 * p / 8)
    assert model_states(p, "zero3_offload", 8, 2) == {}
    # accelerate's FSDP2 upcasts to fp32 master weights: 4 + 4 + 8 bytes, sharded
    assert sum(model_states(p, "fsdp2", 32, 2).values()) == pytest.approx(16 * p / 32)
    # accelerate's estimate-memory: Adam training is 4x the weights (fp32: 16 bytes / param)
    assert sum(model_states(p, "single", 1, 4).values()) == 16 * p
    assert sum(model_states(p, "ddp", 8, 2).values()) == 10 * p  # + DDP's gradient buckets


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_saved_activations_per_layer_equal_what_autograd_saves(dtype):
    """The per-layer count against the tensors a real Qwen2 layer saves for backward (SDPA,
    GQA), found with autograd's saved-tensor hooks; parameters and the rotary cos/sin (one pair
    shared by every layer) excluded."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    h, i, heads, kv, s = 256, 704, 4, 2, 128
    config = Qwen2Config(hidden_size=h, intermediate_size=i, num_attention_heads=heads,
                         num_key_value_heads=kv, num_hidden_layers=1, vocab_size=64)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype),
                                             attn_implementation="sdpa").train()  # fmt: skip
    x = torch.randn(1, s, h, dtype=model.dtype, requires_grad=True)
    pos = torch.arange(s)[None]
    cos_sin = model.model.rotary_emb(x, pos)
    skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *cos_sin)}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model.layers[0](x, position_ids=pos, position_embeddings=cos_sin)
    shape = shape_from_config({**config.to_dict(), "model_type": "qwen2"})
    b = 4 if dtype == "float32" else 2
    assert sum(saved.values()) == s * saved_per_token_layer(shape, b)


def test_checkpointing_and_the_fused_loss_change_what_they_should():
    shape = model_shape("Qwen/Qwen2.5-Math-7B")
    full = train_terms(shape, "zero3", 8, 32768, 2, checkpointing=False, fused=True)
    ckpt = train_terms(shape, "zero3", 8, 32768, 2, checkpointing=True, fused=True)
    plain = train_terms(shape, "zero3", 8, 32768, 2, checkpointing=True, fused=False)
    assert full["activations"] > 20 * ckpt["checkpoints"]
    # one hidden state per layer and token: 28 x 3584 x 2 B
    assert ckpt["checkpoints"] == 28 * 32768 * 3584 * 2
    # unfused: 12 B per logit of the 152k vocabulary (~56 GiB at 32k tokens)
    assert plain["loss head (logits)"] > 32768 * 152064 * 12
    assert sum(plain.values()) > sum(ckpt.values()) + 40 * GiB


def test_the_six_students_fit_their_own_gpus():
    result = plan(PlanConfig())
    assert [p["recipe"] for p in result["plans"]] == [
        "qwen2.5-math-1.5b", "qwen2.5-math-7b", "qwen2.5-14b", "qwen2.5-32b", "llama-3.1-8b",
        "llama-3.3-70b-instruct",
    ]  # fmt: skip
    for p in result["plans"]:
        recipe = load_recipe(p["recipe"])
        assert p["fits"], p["summary"]
        assert p["world"] == recipe.distributed.nodes * recipe.distributed.gpus_per_node
        # each recipe states the planned figure, rounded to a GiB
        assert abs(stated_gb(p["stated"]) - p["total"] / GiB) <= 0.6, (p["stated"], p["summary"])
    assert len(render(result).splitlines()) == 7


@pytest.mark.parametrize("name", ["r1-zero-qwen2.5-math-7b", "qwen2.5-math-1.5b", "r1-distill-qwen-1.5b", "r1-qwen2.5-math-7b"])
def test_the_rl_recipes_state_what_the_plan_says(name):
    """vLLM's share is counted only where it shares the GPU: a `trl vllm-serve` recipe trains on
    the GPUs the server leaves, with no vLLM term; colocated sleep-mode recipes peak while
    generating."""
    from distill.rl import load_rl_recipe, training_share

    recipe = load_rl_recipe(name)
    (p,) = plan(PlanConfig(stage="rl", recipe=name))["plans"]
    nodes, gpus = training_share(recipe)
    assert p["fits"] and p["world"] == nodes * gpus
    vllm = {k for k in p["terms"] if k.startswith("vLLM")}
    assert bool(vllm) == (recipe.generation == "vllm-colocate")
    assert abs(stated_gb(recipe.memory_per_gpu) - p["total"] / GiB) <= 0.6, recipe.memory_per_gpu


def test_a_run_that_does_not_fit_says_what_would():
    (p,) = plan(PlanConfig(student="qwen2.5-32b", nodes=1, gpus_per_node=1))["plans"]
    assert not p["fits"] and "DOES NOT FIT" in p["summary"]
    assert p["advice"].startswith(("fits with", "needs"))
    (p,) = plan(PlanConfig(student="qwen2.5-math-7b", max_length=131072, micro_batch=4))["plans"]
    assert not p["fits"] and "--per_device_train_batch_size" in p["advice"]


def test_plan_for_recipe_is_the_dry_run_line():
    recipe = load_recipe("qwen2.5-math-7b")
    p = plan_for_recipe(recipe)
    assert p.fits and "\n" not in p.summary and p.summary.startswith("plan: train")
    assert plan_for_recipe(recipe, world_size=1).world == 1
    assert not plan_for_recipe(recipe, {"max_length": 131072}, world_size=1).fits
    assert plan_for_recipe(load_recipe("tiny")).fits  # the bundled model's own config.json
    unknown = load_recipe("tiny", overrides={"base_model": "someone/unknown-model"})
    assert plan_for_recipe(unknown) is None


def test_generate_and_rl_plans():
    one = PlanConfig(stage="generate", model="Qwen/Qwen2.5-32B", max_length=65536)
    (p,) = plan(one)["plans"]
    assert not p["fits"]  # bf16 weights (61 GiB) leave no room for one 64k-token KV cache
    (p,) = plan(PlanConfig(**{**one.__dict__, "tensor_parallel": 2}))["plans"]
    assert p["fits"] and "sequences" in p["advice"]
    rl = PlanConfig(stage="rl", student="qwen2.5-math-7b", max_length=4608, micro_batch=8)
    (p,) = plan(rl)["plans"]
    assert p["terms"]["vLLM share"] == 0.3 * 80 * GiB and p["fits"]
    (p,) = plan(PlanConfig(stage="rl", recipe="tiny"))["plans"]
    assert p["model"] == "assets/tiny-teacher" and p["fits"]
    with pytest.raises(UserError, match="shapes unknown"):
        plan(PlanConfig(model="nobody/nothing"))


def test_cli_prints_a_plan():
    r = subprocess.run([sys.executable, "-m", "distill.cli", "plan", "--student",
                        "qwen2.5-math-7b", "--max-length", "16384"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # padding-free: the recipe's micro-batch of 2 sequences is one row of 2 x 16,384 tokens
    assert "32,768 tokens per forward" in r.stdout and "fits" in r.stdout


@pytest.mark.slow
def test_planned_memory_agrees_with_measured_training_steps():
    """The quick grid of benchmarks/plan_memory.py: real fp32 training steps of small Qwen2
    models on this CPU, peak resident memory against the plan, within 15%."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plan_memory.py"), "--quick",
                        "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert rows
    for row in rows:
        assert 0.85 <= row["ratio"] <= 1.15, row


def test_shape_of_a_llama_config_has_no_biases():
    shape = shape_from_config(bases()["meta-llama/Llama-3.1-8B"]["config"])
    assert isinstance(shape, Shape) and not shape.qkv_bias and shape.kv_heads == 8
