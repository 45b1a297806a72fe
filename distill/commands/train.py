"""`distill train`, `students`, `plan`: SFT of a student, and what a run will need."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from distill.cli_flags import PanelCommand, command_app, config_flags
from distill.commands import VerboseOpt, run_config, setup, user_errors
from distill.config import dump_yaml, to_dict
from distill.errors import UserError
from distill.plan import PlanConfig, render
from distill.plan import plan as run_plan
from distill.students.recipe import StudentRecipe, load_recipe, parse_sft_args, shipped_recipes
from distill.train import TrainConfig
from distill.train import train as run_train

app = command_app()


@app.command(
    cls=PanelCommand, context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@user_errors
@config_flags(run=TrainConfig, recipe=StudentRecipe)
def train(
    ctx: typer.Context,
    flags: dict[str, dict[str, Any]],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML of recipe fields (sft: {...}, distributed: {...}) merged into the recipe.",
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune a student on traces with TRL (SFT), here or on many nodes.

    \b
    distill train --student qwen2.5-math-7b --data corpus/math/kept \\
        --output ckpt/r1-distill-7b [--launcher accelerate|slurm --nodes 2 \\
        --gpus-per-node 8 --dry-run] [--lora] [--resume]
    Any TRL SFTConfig field is a flag too:
        --learning_rate 1e-5 --num_train_epochs 3 ...
    """

    setup(verbose, flags["run"].get("output"), "train")
    if "resolved" in flags["run"]:  # a launched process: the file holds the whole run
        if len(flags["run"]) > 1 or flags["recipe"] or ctx.args or config:
            raise UserError("--resolved replays a run file: give no other options")
        flags["run"].update(data="-", output=".")
    for name in ("data", "output"):
        if name not in flags["run"]:
            raise UserError(f"--{name} is required")
    sft = parse_sft_args(list(ctx.args))
    cfg = run_config(
        TrainConfig, None, {**flags["run"], **({"recipe_config": str(config)} if config else {})}
    )
    result = run_train(cfg, flags["recipe"], sft)
    if cfg.dry_run:
        typer.echo(result["command"].rstrip("\n"))


@app.command(cls=PanelCommand)
@user_errors
def students(
    name: Annotated[str | None, typer.Argument(help="Show one recipe resolved.")] = None,
) -> None:
    """List the shipped student recipes, or show one with every default filled in."""
    if name is None:
        for n in shipped_recipes():
            r = load_recipe(n)
            d = r.distributed
            typer.echo(
                f"{n:24s} {r.base_model:36s} {d.strategy:13s} {d.nodes}x{d.gpus_per_node}  {r.memory_per_gpu}"
            )
        return
    typer.echo(dump_yaml(to_dict(load_recipe(name))))


@app.command("plan", cls=PanelCommand)
@user_errors
@config_flags(run=PlanConfig)
def plan_(
    flags: dict[str, dict[str, Any]],
    json_: Annotated[bool, typer.Option("--json", help="Print the plans as JSON.")] = False,
) -> None:
    """Memory per GPU, whether it fits, and time of a run, before it spends GPU hours.

    \b
    distill plan                                   # the six students' recipes
    distill plan --student qwen2.5-math-7b --max-length 16384
    distill plan --stage generate --model Qwen/Qwen2.5-32B --tensor-parallel 2
    """
    import json

    result = run_plan(run_config(PlanConfig, None, flags["run"]))
    typer.echo(json.dumps(result, indent=1) if json_ else render(result))
