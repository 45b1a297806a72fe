"""`distill train`: SFT of a Qwen/Llama student on traces, from one CPU to many nodes.

    distill train --student qwen2.5-math-7b --data corpus/math/kept --output ckpt/r1-distill-7b
    distill train --student qwen2.5-32b --data corpus/math/kept --output ckpt/32b --launcher slurm --dry-run
    distill train --student tiny --data corpus/demo/kept --output ckpt/tiny --learning_rate 5e-4

One process is the default (what `accelerate launch` then runs once per GPU);
`--launcher accelerate|slurm` builds that command from the recipe's distributed set-up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distill.config import (
    bundled,
    check_model_ref,
    dump_yaml,
    from_dict,
    load_yaml,
    option,
    to_dict,
)
from distill.errors import UserError
from distill.hub import check_token, push_model, refresh_model_card
from distill.lock import output_lock
from distill.log import console
from distill.plan import plan_for_recipe
from distill.records import atomic_write_bytes, atomic_write_json
from distill.students.launch import accelerate_command, command_text, slurm_script, write_sbatch
from distill.students.recipe import StudentRecipe, load_recipe, sft_fields, validate_sft
from distill.students.sft import run_sft

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """What `distill train` does; the recipe holds the hyperparameters."""

    data: str = option(
        help="Training data: a corpus folder (kept/), a file or Hub dataset with messages or "
        "prompt/completion; several, comma-separated, are joined."
    )
    output: Path = option(help="Checkpoint folder (resumable, then the final model).")
    student: str = option("tiny", help="Student recipe: a shipped name or a YAML file.")
    model: str | None = option(
        None, help="Train this checkpoint (path or Hub id) instead of the recipe's base model."
    )
    split: str | None = option(None, help="Split of a Hub dataset.")
    launcher: Literal["none", "accelerate", "slurm"] = option(
        "none", help="How to start: in this process, accelerate launch, or a Slurm job."
    )
    dry_run: bool = option(
        False, help="Print the launch command (or Slurm script) instead of running it."
    )
    submit: bool = option(False, help="With --launcher slurm: submit the script with sbatch.")
    lora: bool = option(False, help="Train LoRA adapters (peft) instead of all weights.")
    qlora: bool = option(False, help="LoRA on a 4-bit quantized base model (bitsandbytes, CUDA).")
    resume: bool = option(False, help="Continue from the last checkpoint in --output.")
    push_to_hub: str | None = option(
        None, help="Push checkpoints (to revisions step-N) and the final model to this Hub repo."
    )
    private: bool = option(False, help="Create the Hub repo private.")
    recipe_config: str | None = option(
        None, help="A YAML of recipe fields merged into the recipe (--config).", cli=False
    )
    allow_world_size_change: bool = option(
        False,
        help="Run a recipe with another number of processes than it was written for "
        "(the global batch changes with it).",
    )
    resolved: Path | None = option(
        None,
        help="Replay a resolved run file (what --launcher writes and each launched process reads).",
    )


LAUNCH_FILE = "distill_train.launch.yaml"


def world_size() -> int:
    """Processes in this run, as the launcher (accelerate, torchrun, srun) told each of them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def recipe_world_size(recipe: StudentRecipe) -> int:
    d = recipe.distributed
    return 1 if d.strategy == "single" else d.nodes * d.gpus_per_node


def global_batch(
    recipe: StudentRecipe, sft_overrides: dict[str, Any], world: int
) -> tuple[int, str]:
    """Sequences per optimizer step, and how it is made."""
    fields = sft_fields()
    sft = {**validate_sft(recipe.sft, f"recipe {recipe.name}"), **sft_overrides}
    per = sft.get("per_device_train_batch_size", fields["per_device_train_batch_size"].default)
    accum = sft.get("gradient_accumulation_steps", fields["gradient_accumulation_steps"].default)
    max_len = sft.get("max_length", fields["max_length"].default)
    total = per * accum * world
    return total, (
        f"global batch {total} = {per} per device x {accum} accumulation x {world} processes, "
        f"sequences of <= {max_len} tokens"
    )


def check_world_size(cfg: TrainConfig, recipe: StudentRecipe, sft_overrides: dict[str, Any]) -> str:
    """A recipe written for 8 GPUs run as 1 process trains with a global batch 8x smaller (or
    runs out of memory): refuse unless asked for, and say what it would mean."""
    want, have = recipe_world_size(recipe), world_size()
    batch, line = global_batch(recipe, sft_overrides, have)
    if want != have and not cfg.allow_world_size_change:
        d = recipe.distributed
        planned, _ = global_batch(recipe, sft_overrides, want)
        raise UserError(
            f"recipe {recipe.name} is written for {want} processes ({d.nodes} node(s) x "
            f"{d.gpus_per_node} GPUs, global batch {planned}) but this run has {have} (global batch "
            f"{batch}): use --launcher accelerate|slurm, or --allow-world-size-change to run anyway"
        )
    return line


def launch(cfg: TrainConfig, recipe: StudentRecipe, resolved: Path) -> str:
    """Start (or with --dry-run, show) the launcher; each launched process replays `resolved`."""
    args = ["--resolved", str(resolved)]
    if cfg.launcher == "accelerate":
        text = command_text(accelerate_command(recipe, args))
        if cfg.dry_run:
            return text
        console.print(f"[bold]launching[/]: {text}")
        code = subprocess.call(text, shell=True)
        if code:
            raise SystemExit(code)
        return text
    script = slurm_script(recipe, args, cfg.output)
    if cfg.dry_run:
        return script
    return write_sbatch(script, cfg.output / "train.sbatch", cfg.submit)


def resolve(
    cfg: TrainConfig, recipe_overrides: dict[str, Any], sft_overrides: dict[str, Any]
) -> tuple[TrainConfig, StudentRecipe, dict[str, Any]]:
    """The run as every process will see it: a --resolved file, or the recipe with --config
    and flags merged in. Everything a typo can break is checked here, before any work."""
    if cfg.resolved:
        data = load_yaml(cfg.resolved)
        where = str(cfg.resolved)
        run = from_dict(TrainConfig, {**data.get("train", {}), "launcher": "none", "dry_run": False,
                                      "submit": False, "resolved": None}, where)  # fmt: skip
        recipe = from_dict(StudentRecipe, data.get("recipe", {}), where)
        return run, recipe, validate_sft(data.get("sft_overrides") or {}, where)
    extra = load_yaml(cfg.recipe_config) if cfg.recipe_config else None
    recipe = load_recipe(cfg.student, extra, recipe_overrides)
    validate_sft(recipe.sft, f"recipe {recipe.name}")  # a typo fails now, not on 64 GPUs
    check_model_ref(bundled(cfg.model or recipe.base_model), "--model" if cfg.model else "base_model")
    if cfg.submit and cfg.launcher != "slurm":
        raise UserError("--submit goes with --launcher slurm")
    for part in cfg.data.split(","):
        data = Path(part.strip()).expanduser()
        if not data.exists() and (
            part.strip().startswith((".", "/", "~")) or data.suffix or "/" not in part
        ):
            raise UserError(
                f"--data {part.strip()}: no such file or folder (nor a Hub dataset id: owner/name)"
            )
    return cfg, recipe, sft_overrides


def record(
    cfg: TrainConfig, recipe: StudentRecipe, sft_overrides: dict[str, Any]
) -> dict[str, Any]:
    """The resolved run: what launched processes replay, and (with what really ran added) the
    model folder's distill_train.yaml."""
    return {"train": to_dict(cfg), "recipe": to_dict(recipe), "sft_overrides": sft_overrides}


def train(
    cfg: TrainConfig,
    recipe_overrides: dict[str, Any] | None = None,
    sft_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or launch training of) a student; returns the run's stats, or with a launcher
    or --dry-run the command (the Slurm script) under "command"."""

    launched = cfg.resolved is not None  # the launcher that started this process holds the lock
    cfg, recipe, sft = resolve(cfg, recipe_overrides or {}, sft_overrides or {})
    if cfg.push_to_hub and not cfg.dry_run:
        check_token()  # before hours of training, not after
    if cfg.launcher == "none" and not cfg.dry_run:
        check_world_size(cfg, recipe, sft)  # before the output folder is touched
    if cfg.dry_run or launched or os.environ.get("RANK", "0") != "0":
        return _train(cfg, recipe, sft)
    with output_lock(cfg.output, "distill train"):
        return _train(cfg, recipe, sft)


def plan_line(cfg: TrainConfig, recipe: StudentRecipe, sft: dict[str, Any], world: int) -> str:
    """`distill plan`'s estimate for this run, as dry runs show it; a warning if it won't fit."""
    shaped = dataclasses.replace(recipe, base_model=cfg.model) if cfg.model else recipe
    plan = plan_for_recipe(shaped, sft, world)
    if plan is None:
        return "# plan: model shapes unknown (not a shipped base nor a local folder)"
    if not plan.fits:
        log.warning("this run will not fit in GPU memory: %s", plan.summary)
    return f"# {plan.summary}"


def _train(cfg: TrainConfig, recipe: StudentRecipe, sft: dict[str, Any]) -> dict[str, Any]:
    if cfg.launcher != "none":
        want = recipe_world_size(recipe)
        _, line = global_batch(recipe, sft, want)
        d = recipe.distributed
        resolved = cfg.output / LAUNCH_FILE
        head = (
            f"# {recipe.name}: {d.strategy}, world size {want} ({d.nodes} node(s) x "
            f"{d.gpus_per_node} GPUs), {line}\n# every process replays {resolved}: the recipe "
            f"resolved with --config and flags{f' (SFT overrides: {sft})' if sft else ''}"
            f"{'; written when the run starts (a dry run writes nothing)' if cfg.dry_run else ''}"
        )
        if not cfg.dry_run:
            cfg.output.mkdir(parents=True, exist_ok=True)
            text = dump_yaml(record(cfg, recipe, sft))
            atomic_write_bytes(resolved, text.encode())
            console.print(head.lstrip("# "))
        if cfg.dry_run:
            head += "\n" + plan_line(cfg, recipe, sft, want)
        command = launch(cfg, recipe, resolved)
        return {"launcher": cfg.launcher, "command": f"{head}\n{command}", "world_size": want}
    line = check_world_size(cfg, recipe, sft)
    if cfg.dry_run:
        plan = plan_line(cfg, recipe, sft, world_size())
        here = "# runs in this process (--launcher none); the same command without --dry-run starts it"
        return {"launcher": "none", "command": f"# {recipe.name}: {line}\n{plan}\n{here}"}
    return _train_here(cfg, recipe, sft, line)


def _train_here(
    cfg: TrainConfig, recipe: StudentRecipe, sft_overrides: dict[str, Any], batch_line: str
) -> dict[str, Any]:
    from accelerate import PartialState

    started = time.time()
    main = PartialState().is_main_process
    if main:
        console.print(f"[bold]distill train[/] {recipe.name}: {batch_line}")
    cfg.output.mkdir(parents=True, exist_ok=True)
    run = record(cfg, recipe, sft_overrides)
    run["world_size"] = world_size()
    run["global_batch"] = global_batch(recipe, sft_overrides, run["world_size"])[0]
    stats = run_sft(recipe, cfg, sft_overrides, run)
    stats["wall_time_s"] = round(time.time() - started, 1)
    if main:
        atomic_write_json(cfg.output / "stats.json", stats)
        console.print(
            f"[bold]distill train[/] → {cfg.output}: {stats['steps']} steps, {stats['tokens_seen']:,} tokens "
            f"({stats['tokens_per_s']:,.0f} tok/s), loss {_loss(stats['first_loss'])} → {_loss(stats['final_loss'])}, "
            f"{stats['dropped_too_long']} examples dropped for length"
        )
        if (cfg.output / "loss.png").is_file():
            console.print(f"loss curve: {cfg.output / 'loss.png'}", soft_wrap=True)
        if cfg.push_to_hub:
            refresh_model_card(cfg.output, cfg.push_to_hub)
            push_model(cfg.output, cfg.push_to_hub, private=cfg.private)
    return stats


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
