"""`distill train`: SFT of a Qwen/Llama student on traces, from one CPU to many nodes.

    distill train --student qwen2.5-math-7b --data corpus/math/kept --output ckpt/r1-distill-7b
    distill train --student qwen2.5-32b --data corpus/math/kept --output ckpt/32b --launcher slurm --dry-run
    distill train --student tiny --data corpus/demo/kept --output ckpt/tiny --learning_rate 5e-4

One process is the default (what `accelerate launch` then runs once per GPU);
`--launcher accelerate|slurm` builds that command from the recipe's distributed set-up.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from distill.config import leaves, load_yaml, option, to_dict
from distill.errors import UserError
from distill.hub import check_token, push_model, refresh_model_card
from distill.log import console
from distill.records import atomic_write_bytes, atomic_write_json
from distill.students.launch import accelerate_command, command_text, slurm_script
from distill.students.recipe import StudentRecipe, load_recipe, validate_sft
from distill.students.sft import run_sft

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """What `distill train` does; the recipe holds the hyperparameters."""

    data: str = option(
        help="Training data: a corpus folder (kept/), a file or Hub dataset with messages or prompt/completion."
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


def train_args(
    cfg: TrainConfig, recipe_overrides: dict[str, Any], sft_overrides: dict[str, Any]
) -> list[str]:
    """The arguments that rerun this training once per GPU under a launcher."""
    args = ["--student", cfg.student, "--data", cfg.data, "--output", str(cfg.output)]
    for name in ("model", "split", "push_to_hub", "recipe_config"):
        value = getattr(cfg, name)
        if value:
            args += [
                "--config" if name == "recipe_config" else "--" + name.replace("_", "-"),
                str(value),
            ]
    args += [f"--{n}" for n in ("lora", "qlora", "resume", "private") if getattr(cfg, n)]

    flags = {leaf.path: leaf.flag for leaf in leaves(StudentRecipe)}
    for path, value in recipe_overrides.items():
        if isinstance(value, bool):
            args.append(f"--{flags[path]}" if value else f"--no-{flags[path]}")
        else:
            args += [f"--{flags[path]}", str(value)]
    for name, value in sft_overrides.items():
        args += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def launch(cfg: TrainConfig, recipe: StudentRecipe, args: list[str]) -> str:

    if cfg.launcher == "accelerate":
        text = command_text(accelerate_command(recipe, args))
        if cfg.dry_run:
            return text
        cfg.output.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]launching[/]: {text}")
        code = subprocess.call(text, shell=True)
        if code:
            raise SystemExit(code)
        return text
    script = slurm_script(recipe, args, cfg.output)
    if cfg.dry_run:
        return script
    cfg.output.mkdir(parents=True, exist_ok=True)
    path = cfg.output / "train.sbatch"
    atomic_write_bytes(path, script.encode())
    if not cfg.submit:
        console.print(f"wrote {path}; submit it with: sbatch {path}")
        return script
    out = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if out.returncode:
        raise UserError(f"sbatch failed: {out.stderr.strip() or out.stdout.strip()}")
    console.print(out.stdout.strip())
    return script


def train(
    cfg: TrainConfig,
    recipe_overrides: dict[str, Any] | None = None,
    sft_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or launch training of) a student; returns the run's stats, or with a launcher
    or --dry-run the command (the Slurm script) under "command"."""

    recipe_overrides, sft_overrides = recipe_overrides or {}, sft_overrides or {}
    extra = load_yaml(cfg.recipe_config) if cfg.recipe_config else None
    recipe = load_recipe(cfg.student, extra, recipe_overrides)
    validate_sft(recipe.sft, f"recipe {recipe.name}")  # a typo fails now, not on 64 GPUs
    if cfg.submit and cfg.launcher != "slurm":
        raise UserError("--submit goes with --launcher slurm")
    data = Path(cfg.data).expanduser()
    if not data.exists() and (
        cfg.data.startswith((".", "/", "~")) or data.suffix or "/" not in cfg.data
    ):
        raise UserError(
            f"--data {cfg.data}: no such file or folder (nor a Hub dataset id: owner/name)"
        )
    if cfg.push_to_hub and not cfg.dry_run:
        check_token()  # before hours of training, not after
    if cfg.launcher != "none":
        return {
            "launcher": cfg.launcher,
            "command": launch(cfg, recipe, train_args(cfg, recipe_overrides, sft_overrides)),
        }
    if cfg.dry_run:
        text = command_text(
            [
                "python",
                "-m",
                "distill.cli",
                "train",
                *train_args(cfg, recipe_overrides, sft_overrides),
            ]
        )
        return {"launcher": "none", "command": text}
    return _train_here(cfg, recipe, sft_overrides)


def _train_here(
    cfg: TrainConfig, recipe: StudentRecipe, sft_overrides: dict[str, Any]
) -> dict[str, Any]:

    started = time.time()
    cfg.output.mkdir(parents=True, exist_ok=True)
    resolved = {"train": to_dict(cfg), "recipe": to_dict(recipe), "sft_overrides": sft_overrides}
    atomic_write_bytes(
        cfg.output / "distill_train.yaml",
        yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).encode(),
    )
    stats = run_sft(
        recipe,
        cfg.data,
        cfg.output,
        cfg.model,
        sft_overrides,
        cfg.lora,
        cfg.qlora,
        cfg.resume,
        cfg.push_to_hub,
        cfg.private,
    )
    stats["wall_time_s"] = round(time.time() - started, 1)
    from accelerate import PartialState

    if PartialState().is_main_process:
        atomic_write_json(cfg.output / "stats.json", stats)
        console.print(
            f"[bold]distill train[/] → {cfg.output}: {stats['steps']} steps, {stats['tokens_seen']:,} tokens "
            f"({stats['tokens_per_s']:,.0f} tok/s), loss {stats['first_loss']} → {stats['final_loss']}, "
            f"{stats['dropped_too_long']} examples dropped for length"
        )
        if cfg.push_to_hub:
            refresh_model_card(cfg.output, cfg.push_to_hub)
            push_model(cfg.output, cfg.push_to_hub, private=cfg.private)
    return stats
