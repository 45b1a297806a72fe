"""`distill rl`, `rl-recipes`: GRPO with rule rewards, R1's RL stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from distill.cli_flags import PanelCommand, command_app, config_flags
from distill.commands import VerboseOpt, run_config, setup, user_errors
from distill.config import dump_yaml, to_dict
from distill.errors import UserError
from distill.rl import RLConfig, RLRecipe, load_rl_recipe, parse_grpo_args, shipped_rl_recipes
from distill.rl import rl as run_rl

app = command_app()


@app.command(
    cls=PanelCommand, context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@user_errors
@config_flags(run=RLConfig, recipe=RLRecipe)
def rl(
    ctx: typer.Context,
    flags: dict[str, dict[str, Any]],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML of recipe fields (grpo: {...}, rewards: {...}) merged into the recipe.",
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """R1's reinforcement learning: GRPO with rule rewards (accuracy, format, language, overlong).

    \b
    distill rl --recipe r1-zero-qwen2.5-math-7b \\
        --data DigitalLearningGmbH/MATH-lighteval --output ckpt/zero-7b
    distill rl --recipe tiny --model runs/demo/students/filtered \\
        --data arith-demo --output ckpt/tiny-rl
    Any TRL GRPOConfig field is a flag too:
        --max-steps 100 --num-generations 8 --learning-rate 1e-6 ...
    """

    setup(verbose, flags["run"].get("output"), "rl")
    for name in ("data", "output"):
        if name not in flags["run"]:
            raise UserError(f"--{name} is required")
    grpo = parse_grpo_args(list(ctx.args))
    cfg = run_config(
        RLConfig, None, {**flags["run"], **({"recipe_config": str(config)} if config else {})}
    )
    result = run_rl(cfg, flags["recipe"], grpo)
    if cfg.dry_run or cfg.launcher != "none":
        typer.echo(result["command"].rstrip("\n"))


@app.command("rl-recipes", cls=PanelCommand)
@user_errors
def rl_recipes(
    name: Annotated[str | None, typer.Argument(help="Show one recipe resolved.")] = None,
) -> None:
    """List the shipped RL recipes, or show one with every default filled in."""
    if name is None:
        for n in shipped_rl_recipes():
            r = load_rl_recipe(n)
            d = r.distributed
            loss = r.grpo.get("loss_type", "dapo")
            typer.echo(
                f"{n:28s} {r.base_model:36s} {r.template:8s} {loss:8s} {d.nodes}x{d.gpus_per_node}"
            )
        return
    typer.echo(dump_yaml(to_dict(load_rl_recipe(name))))
