"""`distill pipeline run|status|list`: R1's chain of stages from one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distill.cli_flags import PanelCommand, command_app
from distill.commands import VerboseOpt, setup, user_errors
from distill.errors import UserError
from distill.pipeline import load_pipeline, run_pipeline, shipped_pipelines
from distill.pipeline import status as pipeline_status

app = command_app(
    name="pipeline",
    help="R1's chain of stages from one file: run it, resume it, see where it stands.",
    no_args_is_help=True,
)
PipelineArg = Annotated[
    str, typer.Argument(help="A pipeline YAML file, or a shipped name (distill pipeline list).")
]
PipelineOutput = Annotated[
    Path | None, typer.Option("--output", help="Output folder (default: the file's output:).")
]
PipelineSet = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a stage setting: --set STAGE.SETTING=VALUE."),
]


@app.command("run", cls=PanelCommand)
@user_errors
def pipeline_run(
    file: PipelineArg,
    output: PipelineOutput = None,
    set_: PipelineSet = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="Run this stage only (its parents must be done).")
    ] = None,
    launcher: Annotated[
        str, typer.Option("--launcher", help="none (here) or slurm (one job per stage).")
    ] = "none",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commands (or the sbatch chain) only.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the stages not done yet; a rerun resumes and redoes what changed.

    \b
    distill pipeline run r1-tiny
    distill pipeline run my-r1.yaml --dry-run --launcher slurm
    """

    setup(verbose)
    if launcher not in ("none", "slurm"):
        raise UserError(f"--launcher {launcher}: expected none or slurm")
    pipe = load_pipeline(file, output, set_)
    typer.echo(run_pipeline(pipe, only=stage, dry_run=dry_run, launcher=launcher).rstrip("\n"))


@app.command("status", cls=PanelCommand)
@user_errors
def pipeline_status_(
    file: PipelineArg, output: PipelineOutput = None, set_: PipelineSet = None
) -> None:
    """Each stage: done, stale, running, interrupted, failed or pending."""
    from rich.console import Console

    Console().print(pipeline_status(load_pipeline(file, output, set_)))


@app.command("list", cls=PanelCommand)
@user_errors
def pipeline_list() -> None:
    """List the shipped pipelines."""

    for name in shipped_pipelines():
        pipe = load_pipeline(name)
        chain = " -> ".join(s.command for s in pipe.stages)
        typer.echo(f"{name:20s} {len(pipe.stages):2d} stages: {chain}")
