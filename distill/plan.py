"""`distill plan`: memory per GPU, fit, and time of a run, before it spends GPU hours.

    distill plan                                    # the six students' recipes, one line each
    distill plan --student qwen2.5-math-7b          # one recipe, term by term
    distill plan --student qwen2.5-32b --max-length 16384 --nodes 2
    distill plan --stage generate --model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --max-length 34816
    distill plan --stage rl --student qwen2.5-math-7b --max-length 4608 --micro-batch 8

The memory terms are pure functions of the model's shape in `memory.py` (with their sources);
this module sums them into plans per stage, says whether they fit and what would, and the
time from a stated MFU.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.config import load_yaml, option, shipped_yaml, to_dict
from distill.errors import UserError
from distill.memory import (
    GiB,
    Shape,
    Strategy,
    flops_per_token,
    kv_per_token,
    model_shape,
    train_terms,
)
from distill.students.recipe import DistributedConfig, StudentRecipe, load_recipe

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
STUDENTS = ("qwen2.5-math-1.5b", "qwen2.5-math-7b", "qwen2.5-14b", "qwen2.5-32b",
            "llama-3.1-8b", "llama-3.3-70b-instruct")  # fmt: skip
RL_RECIPES = Path(__file__).parent / "rl" / "recipes"  # read as plain YAML: rl/ sits above this module
VLLM_RUNTIME = 1.0 * GiB  # CUDA graphs and NCCL outside vLLM's profiled peak (order of magnitude)


@dataclass
class PlanConfig:
    """What `distill plan` estimates; unset fields come from the recipe."""

    stage: Literal["train", "generate", "rl"] = option("train", help="train, generate or rl.")
    student: str | None = option(None, help="Student recipe (name or YAML); none: all six.")
    recipe: str | None = option(None, help="RL recipe (name or YAML) for --stage rl.")
    model: str | None = option(None, help="Hub id of a known base, or a folder with config.json.")
    nodes: int | None = option(None, help="Machines.")
    gpus_per_node: int | None = option(None, help="GPUs per machine.")
    strategy: Strategy | None = option(None, help="single, ddp, zero3, zero3_offload or fsdp2.")
    max_length: int | None = option(None, help="Tokens per sequence (rl: prompt + completion).")
    micro_batch: int | None = option(None, help="Sequences per GPU per forward.")
    gradient_checkpointing: bool | None = option(None, help="Recompute activations.")
    fused_loss: bool = option(True, help="TRL's fused LM head (no full logits).")
    gpu_memory: float = option(80.0, help="GiB per GPU (80 for an 80 GB H100 or A100).")
    usable: float = option(0.9, help="Share of it a plan may fill (context, NCCL, fragmentation).")
    tokens: float = option(1e9, help="Tokens to process, for the time estimate.")
    mfu: float = option(0.4, help="Model FLOPs utilization assumed for the time.")
    peak_tflops: float = option(989.0, help="Dense bf16 peak per GPU (H100 SXM: 989).")
    tensor_parallel: int = option(1, help="vLLM tensor parallel size (generate, rl).")
    vllm_memory: float | None = option(None, help="vLLM's GPU share (generate 0.9, rl 0.3).")
    max_num_seqs: int = option(256, help="vLLM: sequences decoded at once.")
    beta: float | None = option(None, help="rl: KL weight; > 0 keeps a reference model.")
    vllm_sleep: bool = option(False, help="rl: vLLM sleeps (frees its share) while training.")
    device: Literal["cuda", "cpu"] = option("cuda", help="Where it runs.", cli=False)


# --- plans ---------------------------------------------------------------------------------------


@dataclass
class Plan:
    stage: str
    model: str
    params: int
    strategy: str
    world: int
    tokens_per_forward: int
    terms: dict[str, float] = field(default_factory=dict)  # bytes per GPU
    total: float = 0.0
    capacity: float = 0.0
    fits: bool = True
    advice: str = ""
    hours: float = 0.0
    summary: str = ""


def _count(params: int) -> str:
    return f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def _finish(p: Plan, cfg: PlanConfig, fpt: float, advice: str = "", ok: bool = True) -> Plan:
    """Total, fit (and `ok`: vLLM has room for one sequence), time, and the one-line summary."""
    p.total = sum(p.terms.values())
    p.capacity = cfg.gpu_memory * cfg.usable * GiB
    p.fits = p.total <= p.capacity and ok
    p.advice = advice
    p.hours = cfg.tokens * fpt / (p.world * cfg.peak_tflops * 1e12 * cfg.mfu) / 3600
    verdict = "fits" if p.fits else "DOES NOT FIT"
    p.summary = (
        f"plan: {p.stage} {p.model} ({_count(p.params)}) {p.strategy} x {p.world} GPUs, "
        f"{p.tokens_per_forward:,} tokens per forward: {p.total / GiB:.1f} GiB per GPU of "
        f"{p.capacity / GiB:.0f} usable, {verdict}" + (f"; {advice}" if advice else "")
    )
    return p


def plan_train(cfg: PlanConfig, shape: Shape, name: str, recipe: StudentRecipe | None) -> Plan:
    sft = recipe.sft if recipe else {}
    dist = recipe.distributed if recipe else None
    nodes = cfg.nodes or (dist.nodes if dist else 1)
    world = nodes * (cfg.gpus_per_node or (dist.gpus_per_node if dist else 1))
    strategy = cfg.strategy or (dist.strategy if dist else "single" if world == 1 else "zero3")
    length = cfg.max_length or sft.get("max_length", 1024)
    micro = cfg.micro_batch or sft.get("per_device_train_batch_size", 1)
    ckpt = cfg.gradient_checkpointing
    ckpt = sft.get("gradient_checkpointing", False) if ckpt is None else ckpt
    wbytes = DTYPE_BYTES.get(recipe.torch_dtype if recipe else "bfloat16", 2)

    def terms(strat: str, mb: int, length: int = length) -> dict[str, float]:
        # padding-free flattens the micro-batch into one row; padded, it is mb x the longest
        return train_terms(shape, strat, world, mb * length, wbytes, ckpt, cfg.fused_loss,
                           cfg.device)  # fmt: skip

    p = Plan("train", name, shape.params, strategy, world, micro * length, terms(strategy, micro))
    capacity = cfg.gpu_memory * cfg.usable * GiB
    fpt = flops_per_token(shape, length)
    if sum(p.terms.values()) <= capacity:
        bigger = [m for m in range(micro + 1, 4 * micro + 1)
                  if sum(terms(strategy, m).values()) <= capacity]  # fmt: skip
        return _finish(p, cfg, fpt, f"micro-batch up to {bigger[-1]} fits" if bigger else "")
    order = (
        ["single", "zero3_offload"] if world == 1 else ["ddp", "zero3", "fsdp2", "zero3_offload"]
    )
    for strat in order:
        per_step = sft.get("gradient_accumulation_steps", 1) * micro
        # only micro-batches that divide the sequences per step keep the global batch exactly
        for mb in (m for m in range(micro, 0, -1) if per_step % m == 0):
            if sum(terms(strat, mb).values()) <= capacity:
                keep = f" --gradient_accumulation_steps {per_step // mb}" if mb != micro else ""
                return _finish(p, cfg, fpt, f"fits with --strategy {strat} "
                               f"--per_device_train_batch_size {mb}{keep}")  # fmt: skip
    short = length // 2
    while short >= 512 and sum(terms(order[-1], 1, short).values()) > capacity:
        short //= 2
    hint = f"at most --max_length {short} with {order[-1]}" if short >= 512 else "more GPUs"
    return _finish(p, cfg, fpt, f"needs {hint}")


def plan_generate(cfg: PlanConfig, shape: Shape, name: str) -> Plan:
    """vLLM: weights split by tensor parallelism, the profiled activation peak of one engine
    step (max_num_batched_tokens = 8192 through the MLP, fp32 logits of every sequence), and
    the KV cache filling the rest of `gpu_memory_utilization`."""
    tp, b = cfg.tensor_parallel, 2
    share = (cfg.vllm_memory or 0.9) * cfg.gpu_memory * GiB
    length = cfg.max_length or 32768
    terms = {"weights": shape.params * b / tp,
             "activations": 8192 * (2 * shape.intermediate / tp + 4 * shape.hidden) * b
             + cfg.max_num_seqs * shape.vocab * 4, "CUDA graphs, NCCL": VLLM_RUNTIME}  # fmt: skip
    kv = share - sum(terms.values())
    seqs = max(0.0, kv) / (kv_per_token(shape, b, tp) * length)
    terms["KV cache"] = max(0.0, kv)
    p = Plan("generate", name, shape.params, f"vLLM TP {tp}", tp, length, terms)
    advice = f"KV cache holds {seqs:.0f} sequences of {length:,} tokens at once"
    return _finish(p, dataclasses.replace(cfg, usable=cfg.vllm_memory or 0.9),
                   flops_per_token(shape, length // 2, training=False), advice, seqs >= 1)  # fmt: skip


def plan_rl(cfg: PlanConfig, shape: Shape, name: str, recipe: StudentRecipe | None) -> Plan:
    """GRPO with vLLM colocated: the training step (padded prompt + completion rows) plus a
    reference model when beta > 0, beside vLLM's share of the GPU (TRL default 0.3), which
    must hold its weights and the KV cache of this GPU's generations."""
    grpo: dict[str, Any] = {}
    length = cfg.max_length or 512 + 512  # TRL's default completion length, a short prompt
    generation, sleep = "vllm-colocate", cfg.vllm_sleep
    if cfg.recipe:
        # the recipe file read plainly: rl.py (which validates it) sits above this module
        rl = load_yaml(shipped_yaml(cfg.recipe, RL_RECIPES, "RL recipe"))
        grpo = rl.get("grpo", {})
        completion = grpo.get("max_completion_length", 512)
        length = cfg.max_length or rl.get("max_prompt_tokens", 512) + completion
        generation = rl.get("generation", "transformers")
        sleep = sleep or bool(grpo.get("vllm_enable_sleep_mode"))
        d = DistributedConfig(**rl.get("distributed", {}))
        if generation == "vllm-server":  # the GPUs that train (rl.training_share)
            served = rl.get("vllm_server_gpus", 1)
            d = dataclasses.replace(d, nodes=d.nodes - 1) if d.nodes > 1 else (
                dataclasses.replace(d, gpus_per_node=max(1, d.gpus_per_node - served)))  # fmt: skip
        recipe = StudentRecipe(base_model=name, torch_dtype=rl.get("torch_dtype", "bfloat16"),
                               distributed=d)  # fmt: skip
    micro = cfg.micro_batch or grpo.get("per_device_train_batch_size", 8)
    ckpt = cfg.gradient_checkpointing
    ckpt = grpo.get("gradient_checkpointing", True) if ckpt is None else ckpt
    sub = dataclasses.replace(
        cfg, max_length=length, micro_batch=micro, gradient_checkpointing=ckpt
    )
    train = plan_train(sub, shape, name, recipe)
    terms = dict(train.terms)
    beta = grpo.get("beta", 0.0) if cfg.beta is None else cfg.beta
    if beta > 0:
        sharded = train.strategy in ("zero3", "fsdp2")
        terms["reference model"] = shape.params * 2 / (train.world if sharded else 1)
    share = (cfg.vllm_memory or grpo.get("vllm_gpu_memory_utilization", 0.3)) * cfg.gpu_memory * GiB
    p = Plan("rl", name, shape.params, train.strategy, train.world, micro * length, terms)
    fpt = flops_per_token(shape, length) * (4 + (1 if beta > 0 else 0)) / 3
    if generation != "vllm-colocate":  # vLLM on GPUs of its own, or no vLLM at all
        where = "on its own GPUs" if generation == "vllm-server" else "not used"
        return _finish(p, cfg, fpt, f"vLLM {where}; these GPUs only train", True)
    if sleep:  # asleep while training: the peak is the larger of training and waking
        awake = sum(v for k, v in terms.items() if k in ("weights", "gradients", "optimizer"))
        terms["vLLM (asleep in training)"] = max(0.0, share + awake - sum(terms.values()))
    else:
        terms["vLLM share"] = share
    vllm_free = share - shape.params * 2 / cfg.tensor_parallel - VLLM_RUNTIME
    seqs = max(0.0, vllm_free) / (kv_per_token(shape, 2, cfg.tensor_parallel) * length)
    advice = f"vLLM's share holds {seqs:.0f} sequences of {length:,} tokens"
    return _finish(p, cfg, fpt, advice, seqs >= 1)


def plan_for_recipe(
    recipe: StudentRecipe,
    sft_overrides: dict[str, Any] | None = None,
    world_size: int | None = None,
    gpu_memory_gib: float = 80.0,
) -> Plan | None:
    """The training plan of a resolved recipe (for `distill train --dry-run`): `.summary` is one
    line, `.fits` says whether it fits. None when the model's shapes are unknown (a Hub id not
    in students/bases.json and not a local folder)."""
    try:
        shape = model_shape(recipe.base_model)
    except UserError:
        return None
    r = dataclasses.replace(recipe, sft={**recipe.sft, **(sft_overrides or {})})
    cfg = PlanConfig(gpu_memory=gpu_memory_gib)
    if world_size and world_size != r.distributed.nodes * r.distributed.gpus_per_node:
        cfg = dataclasses.replace(cfg, nodes=1, gpus_per_node=world_size)
    return plan_train(cfg, shape, r.base_model, r)


def stated_gb(text: str) -> float | None:
    """The figure a recipe's `memory_per_gpu` states first ("~45 GiB of 80 GB ..." -> 45)."""
    m = re.search(r"([\d.]+)\s*Gi?B", text)
    return float(m.group(1)) if m else None


def plan(cfg: PlanConfig) -> dict[str, Any]:
    """The entry: {"plans": [plan, ...], ...}, one plan per student when none is named."""
    if cfg.student or cfg.model:
        names: tuple[str | None, ...] = (cfg.student,)
    elif cfg.stage == "rl" and cfg.recipe:
        names = (None,)  # the RL recipe names its model
    elif cfg.stage == "train":
        names = STUDENTS
    else:
        raise UserError(f"--stage {cfg.stage}: name a --student or a --model")
    plans = []
    for name in names:
        recipe = load_recipe(name) if name else None
        ref = cfg.model or (recipe.base_model if recipe else "")
        if not ref:  # --stage rl --recipe alone
            ref = load_yaml(shipped_yaml(cfg.recipe or "", RL_RECIPES, "RL recipe"))["base_model"]
        shape = model_shape(ref)
        if cfg.stage == "generate":
            p = plan_generate(cfg, shape, ref)
        elif cfg.stage == "rl":
            p = plan_rl(cfg, shape, ref, recipe)
        else:
            p = plan_train(cfg, shape, ref, recipe)
        out = to_dict(p)
        if recipe and cfg.stage == "train":
            out["recipe"], out["stated"] = recipe.name, recipe.memory_per_gpu
        plans.append(out)
    return {"plans": plans, "tokens": cfg.tokens, "mfu": cfg.mfu, "peak_tflops": cfg.peak_tflops}


def render(result: dict[str, Any]) -> str:
    """What `distill plan` prints: one line per plan when several, term by term for one."""
    plans = result["plans"]
    if len(plans) > 1:
        rows = [f"{'recipe':24s} {'strategy':13s} {'GPUs':>4s} {'tokens/fwd':>10s} "
                f"{'planned':>9s}  {'fits':4s}  recipe states"]  # fmt: skip
        for p in plans:
            rows.append(
                f"{p.get('recipe', p['model']):24s} {p['strategy']:13s} {p['world']:4d} "
                f"{p['tokens_per_forward']:10,d} {p['total'] / GiB:5.1f} GiB  "
                f"{'yes' if p['fits'] else 'NO':4s}  {(p.get('stated') or '').split(' (')[0]}"
            )
        return "\n".join(rows)
    p = plans[0]
    lines = [p["summary"]]
    lines += [f"  {name:26s} {v / GiB:8.2f} GiB" for name, v in p["terms"].items()]
    lines.append(f"  {'total':26s} {p['total'] / GiB:8.2f} GiB of {p['capacity'] / GiB:.1f} usable")
    if p.get("stated"):
        lines.append(f"  recipe states: {p['stated']}")
    if p["advice"]:
        lines.append(f"  {p['advice']}")
    lines.append(
        f"  time: {_duration(p['hours'])} for {result['tokens']:.3g} tokens on {p['world']} GPUs at "
        f"{result['mfu']:.0%} MFU of {result['peak_tflops']:g} TFLOP/s"
    )
    return "\n".join(lines)
