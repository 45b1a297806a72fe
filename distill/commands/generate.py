"""`distill generate`, `serve`, `merge`, `teachers`: traces from a teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from distill.cli_flags import PanelCommand, command_app, config_flags
from distill.commands import ConfigOpt, SetOpt, VerboseOpt, run_config, setup, user_errors
from distill.config import dump_yaml, parse_assignments, to_dict
from distill.errors import UserError
from distill.generate import GenerateConfig
from distill.generate import generate as run_generate
from distill.records import merge_corpora
from distill.teachers.profile import TeacherProfile, load_profile, shipped_profiles
from distill.teachers.serve import serve_command

app = command_app()


@app.command(cls=PanelCommand)
@user_errors
@config_flags(run=GenerateConfig, teacher=TeacherProfile)
def generate(
    flags: dict[str, dict[str, Any]],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Sample reasoning traces from a teacher into a resumable parquet corpus.

    \b
    distill generate --teacher deepseek-r1 --dataset HuggingFaceH4/MATH-500 \\
        --split test --samples 4 --output traces/math500-r1
    """

    setup(verbose, flags["run"].get("output"), "generate")
    if "output" not in flags["run"] and not config:
        raise UserError("--output is required (the corpus folder to write)")
    if "data.dataset" not in flags["run"] and not config:
        flags["run"]["data.dataset"] = "arith-demo"
    cfg = run_config(GenerateConfig, config, flags["run"])
    profile = load_profile(cfg.teacher, {**flags["teacher"], **parse_assignments(set_ or [])})
    run_generate(cfg, profile)


@app.command(cls=PanelCommand)
@user_errors
@config_flags(teacher=TeacherProfile)
def serve(
    flags: dict[str, dict[str, Any]],
    teacher: Annotated[
        str, typer.Option("--teacher", help="A vllm teacher profile (name or YAML).")
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the command instead of running it.")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Serve a teacher with `vllm serve` using its profile's engine settings.

    \b
    distill serve --teacher deepseek-r1   # then, from anywhere:
    distill generate --teacher vllm-server --base-url http://NODE:8000/v1 \\
        --model deepseek-ai/DeepSeek-R1 ...
    """
    import shlex
    import socket
    import subprocess

    profile = load_profile(teacher, {**flags["teacher"], **parse_assignments(set_ or [])})
    cmd = serve_command(profile, host, port)
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    typer.echo(shlex.join(cmd))
    if dry_run:
        return
    typer.echo(f"serving {profile.model} at http://{shown}:{port}/v1", err=True)
    typer.echo(
        f"generate with: distill generate --teacher vllm-server --base-url http://{shown}:{port}/v1 --model {profile.model} ...",
        err=True,
    )
    raise typer.Exit(subprocess.call(cmd))


@app.command(cls=PanelCommand)
@user_errors
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Corpus folders of one sharded run.")],
    output: Annotated[Path, typer.Option("--output", help="Merged corpus folder.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Join the corpus folders of a `--shard I/N` run into one corpus."""

    setup(False)
    manifest = merge_corpora(inputs, output, overwrite=overwrite)
    typer.echo(f"{output}: {manifest['counts']['rows']} rows from {len(inputs)} folders")


@app.command(cls=PanelCommand)
@user_errors
def teachers(
    name: Annotated[str | None, typer.Argument(help="Show one profile resolved.")] = None,
) -> None:
    """List the shipped teacher profiles, or show one with every default filled in."""
    if name is None:
        for n in shipped_profiles():
            p = load_profile(n)
            typer.echo(f"{n:24s} {p.backend:7s} {p.model}")
        return
    typer.echo(dump_yaml(to_dict(load_profile(name))))
