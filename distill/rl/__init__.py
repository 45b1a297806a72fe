"""`distill rl`: R1's reinforcement-learning stage, GRPO with rule rewards on TRL's GRPOTrainer.

    distill rl --recipe r1-zero-qwen2.5-math-7b --data DigitalLearningGmbH/MATH-lighteval --output ckpt/zero-7b
    distill rl --recipe tiny --model runs/demo/students/filtered --data arith-demo --output ckpt/tiny-rl
    distill rl --recipe tiny --data corpus/arith --pass-rate-band 0.1,0.6 --max-steps 50 --output ckpt/x
    distill rl --recipe r1-distill-qwen-1.5b --data math500 --output ckpt/1.5b --launcher slurm --nodes 2 --dry-run

R1-Zero is this stage on a base model (rule rewards only); R1 runs it after a cold-start SFT
(`distill train`), adding the language-consistency reward. The rewards are distill's own checks
(`rewards.py`: the filter's correctness verdict through the verification service, the R1
format, the filter's language measure, DAPO's overlong penalty), weighted per recipe. Guards
stop a run that cannot learn (every group with the same reward, most completions truncated,
no parseable answer) with one line that says which and what to change.

The package: `config.py` (the recipe and run config, checked before any GPU is touched),
`data.py` (problems, pass-rate band, prompts), `reward_funcs.py` (the rewards in TRL's calling
convention), `monitor.py` (guards and progress), `trainer.py` (one GRPO run), `launch.py`
(accelerate / Slurm / `trl vllm-serve`), and here the entry `rl()`. TRL and transformers types
stay inside it; `from trl import GRPOTrainer` takes seconds, so it is imported inside the
functions that train, never at import time.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from distill.config import bundled, check_model_ref, load_yaml
from distill.errors import UserError
from distill.lock import output_lock
from distill.log import console
from distill.rl.config import (
    RECIPES_DIR,
    RESERVED,
    REWARDS,
    GuardTripped,
    RLConfig,
    RLRecipe,
    check_grpo_name,
    grpo_fields,
    load_rl_recipe,
    parse_grpo_args,
    shipped_rl_recipes,
    validate_grpo,
)
from distill.rl.data import build_prompt, load_rl_problems, pass_rates
from distill.rl.launch import launch, rl_args, shell_join, training_share
from distill.rl.trainer import run_grpo
from distill.students.sft import last_checkpoint

log = logging.getLogger(__name__)

__all__ = [
    "RECIPES_DIR", "RESERVED", "REWARDS", "GuardTripped", "RLConfig", "RLRecipe", "build_prompt",
    "grpo_fields", "load_rl_problems", "load_rl_recipe", "parse_grpo_args", "pass_rates", "rl",
    "shipped_rl_recipes", "training_share", "validate_grpo",
]  # fmt: skip


# --- the entry -------------------------------------------------------------------------------


def rl(
    cfg: RLConfig,
    recipe_overrides: dict[str, Any] | None = None,
    grpo_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or launch) GRPO; returns the run's stats, or with a launcher or --dry-run the
    command (the Slurm script) under "command". A tripped guard raises GuardTripped."""
    from distill.hub import check_token

    recipe_overrides, grpo_overrides = recipe_overrides or {}, grpo_overrides or {}
    extra = load_yaml(cfg.recipe_config) if cfg.recipe_config else None
    recipe = load_rl_recipe(cfg.recipe, extra, recipe_overrides)
    cfg.band()
    if cfg.max_seconds is not None and cfg.max_seconds <= 0:
        raise UserError(f"--max-seconds: expected a positive number of seconds, got {cfg.max_seconds:g}")
    if cfg.submit and cfg.launcher != "slurm":
        raise UserError("--submit goes with --launcher slurm")
    validate_grpo(recipe.grpo, f"recipe {recipe.name}")  # a typo fails now, not on 64 GPUs
    for name in grpo_overrides:
        check_grpo_name(name, grpo_fields(), f"--{name}: not a GRPOConfig field")
    model = cfg.model or recipe.base_model
    if cfg.launcher != "none" or cfg.dry_run:
        args = rl_args(cfg, recipe_overrides, grpo_overrides)
        head = plan_line(cfg, recipe, grpo_overrides) + "\n" if cfg.dry_run else ""
        if cfg.launcher == "none":
            return {"launcher": "none", "command": head + shell_join(["distill", "rl", *args])}
        return {"launcher": cfg.launcher, "command": head + launch(cfg, recipe, model, args)}
    check_model_ref(bundled(model), "--model" if cfg.model else "base_model")
    if cfg.push_to_hub:
        check_token()  # before hours of training, not after
    if os.environ.get("RANK", "0") != "0":  # a launched process; rank 0 holds the folder
        return _rl_here(cfg, recipe, grpo_overrides)
    with output_lock(cfg.output, "distill rl"):
        return _rl_here(cfg, recipe, grpo_overrides)


def _rl_here(cfg: RLConfig, recipe: RLRecipe, grpo_overrides: dict[str, Any]) -> dict[str, Any]:
    from distill.hub import push_model

    if cfg.output.is_dir() and last_checkpoint(cfg.output) and not cfg.resume:
        raise UserError(f"{cfg.output}: holds checkpoints of an earlier run; add --resume or pick a new --output")  # fmt: skip
    problems, info = load_rl_problems(cfg, keep_unreferenced=bool(recipe.reward_model))
    cfg.output.mkdir(parents=True, exist_ok=True)
    stats = run_grpo(cfg, recipe, grpo_overrides, problems, info)
    first, last = stats["first"], stats["last"]
    console.print(
        f"[bold]distill rl[/] → {cfg.output}: {stats['steps']} steps ({stats['s_per_step']} s/step), "
        f"reward {first.get('reward')} → {last.get('reward')}, pass rate "
        f"{first.get('accuracy/pass_rate')} → {last.get('accuracy/pass_rate')}, truncated "
        f"{last.get('completions/clipped_ratio')}"
    )
    if (cfg.output / "curves.png").is_file():
        console.print(f"reward curves: {cfg.output / 'curves.png'}", soft_wrap=True)
    if cfg.push_to_hub:
        push_model(cfg.output, cfg.push_to_hub, private=cfg.private)
    return stats


def plan_line(cfg: RLConfig, recipe: RLRecipe, grpo_overrides: dict[str, Any]) -> str:
    """`distill plan --stage rl`'s estimate of this run, as dry runs show it; a warning if it
    will not fit."""
    from distill.plan import PlanConfig, plan

    try:
        d, shipped = recipe.distributed, load_rl_recipe(cfg.recipe).distributed
        moved = (d.nodes, d.gpus_per_node) != (shipped.nodes, shipped.gpus_per_node)  # --nodes ...
        (p,) = plan(PlanConfig(stage="rl", recipe=cfg.recipe, model=cfg.model,
                               nodes=d.nodes if moved else None, gpus_per_node=d.gpus_per_node if moved else None,
                               micro_batch=grpo_overrides.get("per_device_train_batch_size")))["plans"]  # fmt: skip
    except UserError:
        return "# plan: model shapes unknown (not a shipped base nor a local folder)"
    if not p["fits"]:
        log.warning("this run will not fit in GPU memory: %s", p["summary"])
    return f"# {p['summary']}"
