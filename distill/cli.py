"""The `distill` command line. Heavy libraries (torch, vllm, transformers, trl, datasets) are
imported by the stages where they are used, never at import time, so `distill --help`
answers at once.

Each command parses flags into its stage's typed config and calls the stage's one entry
function; user errors end as one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from distill import __version__
from distill.cli_flags import config_flags
from distill.config import from_dict, load_yaml, override, parse_assignments, to_dict
from distill.demo import DemoConfig, run_demo
from distill.errors import UserError
from distill.evaluate import EvalConfig, evaluate
from distill.filter import FilterConfig, filter_corpus
from distill.generate import GenerateConfig
from distill.generate import generate as run_generate
from distill.hub import push as run_push
from distill.log import setup_logging
from distill.records import merge_corpora
from distill.students.recipe import StudentRecipe, load_recipe, parse_sft_args, shipped_recipes
from distill.teachers.profile import TeacherProfile, load_profile, shipped_profiles
from distill.teachers.serve import serve_command
from distill.train import TrainConfig
from distill.train import train as run_train

app = typer.Typer(
    name="distill",
    help="Reproduce the DeepSeek-R1 distillation recipe: generate -> filter -> train -> eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of this command's settings (flags override it)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override any teacher-profile field: --set prompts.math.user='{problem}'"
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One line and exit 2 for user errors; no traceback for mistakes the user can fix."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _setup(verbose: bool) -> None:

    setup_logging(verbose)


def _run_config(cls: type, config: Path | None, flags: dict[str, Any]) -> Any:
    """Defaults < --config YAML < flags."""
    data = load_yaml(config) if config else {}
    base = from_dict(cls, data, str(config)) if config else None
    if base is None:
        nested: dict[str, Any] = {}
        for dotted, value in flags.items():
            node = nested
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return from_dict(cls, nested, "command line")
    return override(base, flags)


@app.command()
@user_errors
@config_flags(run=GenerateConfig, teacher=TeacherProfile)
def generate(
    flags: dict[str, dict[str, Any]],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Sample reasoning traces from a teacher into a resumable parquet corpus.

    distill generate --teacher deepseek-r1 --dataset HuggingFaceH4/MATH-500 --split test
    --samples 4 --output traces/math500-r1
    """

    _setup(verbose)
    if "output" not in flags["run"] and not config:
        raise UserError("--output is required (the corpus folder to write)")
    if "data.dataset" not in flags["run"] and not config:
        flags["run"]["data.dataset"] = "arith-demo"
    cfg = _run_config(GenerateConfig, config, flags["run"])
    profile = load_profile(cfg.teacher, {**flags["teacher"], **parse_assignments(set_ or [])})
    run_generate(cfg, profile)


@app.command("filter")
@user_errors
@config_flags(run=FilterConfig)
def filter_(
    flags: dict[str, dict[str, Any]],
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Keep verified-correct, readable traces: kept/, rejected/, report.json, report.md.

    distill filter --input traces/math500-r1 --output corpus/math500-r1 --keep shortest
    """

    _setup(verbose)
    for name in ("input", "output"):
        if name not in flags["run"] and not config:
            raise UserError(f"--{name} is required")
    filter_corpus(_run_config(FilterConfig, config, flags["run"]))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
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

    distill train --student qwen2.5-math-7b --data corpus/math/kept --output ckpt/r1-distill-7b
    [--launcher accelerate|slurm --nodes 2 --gpus-per-node 8 --dry-run] [--lora] [--resume]
    Any TRL SFTConfig field is a flag too: --learning_rate 1e-5 --num_train_epochs 3 ...
    """

    _setup(verbose)
    for name in ("data", "output"):
        if name not in flags["run"]:
            raise UserError(f"--{name} is required")
    sft = parse_sft_args(list(ctx.args))
    cfg = _run_config(
        TrainConfig, None, {**flags["run"], **({"recipe_config": str(config)} if config else {})}
    )
    result = run_train(cfg, flags["recipe"], sft)
    if cfg.dry_run:
        typer.echo(result["command"].rstrip("\n"))


@app.command()
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

    distill serve --teacher deepseek-r1   # then, from anywhere:
    distill generate --teacher vllm-server --base-url http://NODE:8000/v1 --model deepseek-ai/DeepSeek-R1 ...
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


@app.command("eval")
@user_errors
@config_flags(run=EvalConfig, teacher=TeacherProfile)
def eval_(
    flags: dict[str, dict[str, Any]],
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Measure a model: pass@1 over k samples, cons@k, pass@k (R1 protocol).

    distill eval --model ckpt/r1-distill-7b --benchmark aime24,math500 --samples 16 --output results/7b
    """

    _setup(verbose)
    for name, key in (("--model", "model"), ("--benchmark", "benchmark"), ("--output", "output")):
        if key not in flags["teacher" if key == "model" else "run"]:
            raise UserError(f"{name} is required")
    cfg = _run_config(EvalConfig, None, flags["run"])
    overrides = {**flags["teacher"], **parse_assignments(set_ or [])}
    if "server.base_url" in overrides:
        overrides.setdefault("backend", "openai")
    if cfg.profile:
        profile = load_profile(cfg.profile, overrides)
    else:
        profile = override(TeacherProfile(model=overrides["model"], name="eval"), overrides)
    evaluate(cfg, profile)


@app.command()
@user_errors
def push(
    folder: Annotated[
        Path,
        typer.Argument(
            help="A model folder (distill train output) or a corpus (generate or filter output)."
        ),
    ],
    repo: Annotated[str, typer.Option("--repo", help="Hub repo id: owner/name.")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[
        str | None, typer.Option(help="Branch to push to (created if needed).")
    ] = None,
    license: Annotated[
        str, typer.Option(help="Licence of a pushed dataset (card metadata).")
    ] = "other",
    verbose: VerboseOpt = False,
) -> None:
    """Publish a student or a trace corpus to the Hugging Face Hub, with its card.

    distill push corpus/math500-r1 --repo me/r1-math-traces   # kept/rejected become splits
    distill push ckpt/r1-distill-7b --repo me/r1-distill-7b    # model, tokenizer, card
    """

    _setup(verbose)
    url = run_push(folder, repo, private=private, revision=revision, license=license)
    typer.echo(url)


@app.command()
@user_errors
@config_flags(run=DemoConfig)
def demo(flags: dict[str, dict[str, Any]], verbose: VerboseOpt = False) -> None:
    """The whole recipe on a CPU: a tiny real teacher -> traces -> filter -> two students -> eval.

    distill demo            # about 10 minutes on 2 cores
    distill demo --quick    # a few minutes (CI)
    """

    _setup(verbose)
    run_demo(_run_config(DemoConfig, None, flags["run"]))


@app.command()
@user_errors
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Corpus folders of one sharded run.")],
    output: Annotated[Path, typer.Option("--output", help="Merged corpus folder.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Join the corpus folders of a `--shard I/N` run into one corpus."""

    _setup(False)
    manifest = merge_corpora(inputs, output, overwrite=overwrite)
    typer.echo(f"{output}: {manifest['counts']['rows']} rows from {len(inputs)} folders")


@app.command()
@user_errors
def teachers(
    name: Annotated[str | None, typer.Argument(help="Show one profile resolved.")] = None,
) -> None:
    """List the shipped teacher profiles, or show one with every default filled in."""
    import yaml

    if name is None:
        for n in shipped_profiles():
            p = load_profile(n)
            typer.echo(f"{n:24s} {p.backend:7s} {p.model}")
        return
    typer.echo(yaml.safe_dump(to_dict(load_profile(name)), sort_keys=False, allow_unicode=True))


@app.command()
@user_errors
def students(
    name: Annotated[str | None, typer.Argument(help="Show one recipe resolved.")] = None,
) -> None:
    """List the shipped student recipes, or show one with every default filled in."""
    import yaml

    if name is None:
        for n in shipped_recipes():
            r = load_recipe(n)
            d = r.distributed
            typer.echo(
                f"{n:24s} {r.base_model:36s} {d.strategy:13s} {d.nodes}x{d.gpus_per_node}  {r.memory_per_gpu}"
            )
        return
    typer.echo(yaml.safe_dump(to_dict(load_recipe(name)), sort_keys=False, allow_unicode=True))


@app.command()
def version() -> None:
    """Print the distill version."""

    typer.echo(__version__)


def main() -> None:
    app(prog_name="distill")


if __name__ == "__main__":
    sys.exit(main())
