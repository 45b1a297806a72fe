"""The `distill` command line. A command's module (`distill/commands/`) is imported only when
that command runs or shows its own help, and the stages import heavy libraries (torch, vllm,
transformers, trl, datasets) only where they use them, so `distill --help` answers at once.

Each command parses flags into its stage's typed config and calls the stage's one entry
function; user errors end as one line on stderr and exit code 2, failures of the
environment (a dead endpoint, a full disk) as one line and exit code 1.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
import typer.core
import typer.main

from distill import __version__

# name -> (module under distill.commands, the first line of the command's docstring). The
# summaries are what `distill --help` lists without importing the modules; tests/test_cli.py
# checks that each one is the loaded command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate", "Sample reasoning traces from a teacher into a resumable parquet corpus."),
    "filter": ("filter", "Keep verified-correct, readable traces: kept/, rejected/, report.json, report.md."),
    "train": ("train", "Fine-tune a student on traces with TRL (SFT), here or on many nodes."),
    "rl": ("rl", "R1's reinforcement learning: GRPO with rule rewards (accuracy, format, language, overlong)."),
    "eval": ("eval", "Measure a model: pass@1 over k samples, cons@k, pass@k (R1 protocol)."),
    "push": ("push", "Publish a student or a trace corpus to the Hugging Face Hub, with its card."),
    "pipeline": ("pipeline", "R1's chain of stages from one file: run it, resume it, see where it stands."),
    "plan": ("train", "Memory per GPU, whether it fits, and time of a run, before it spends GPU hours."),
    "demo": ("demo", "The whole recipe on a CPU: a tiny real teacher -> traces -> filter -> two students -> eval."),
    "serve": ("generate", "Serve a teacher with `vllm serve` using its profile's engine settings."),
    "merge": ("generate", "Join the corpus folders of a `--shard I/N` run into one corpus."),
    "teachers": ("generate", "List the shipped teacher profiles, or show one with every default filled in."),
    "students": ("train", "List the shipped student recipes, or show one with every default filled in."),
    "rl-recipes": ("rl", "List the shipped RL recipes, or show one with every default filled in."),
}  # fmt: skip


def load_command(name: str) -> Any:
    """The real click command (or group, for `pipeline`) behind a name of COMMANDS."""
    module, _ = COMMANDS[name]
    group = typer.main.get_group(importlib.import_module(f"distill.commands.{module}").app)
    return group if name == "pipeline" else group.commands[name]


class _Listed(typer.core.TyperCommand):
    """A command as `distill --help` lists it: its name and summary, nothing imported."""


class LazyGroup(typer.core.TyperGroup):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        own = dict(self.commands)  # `version`: listed after the stages
        self.commands = {
            name: _Listed(name=name, help=summary) for name, (_, summary) in COMMANDS.items()
        }
        self.commands.update(own)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # each summary whole, wrapped (click's default cuts them at the terminal's width)
        rows = [(name, (cmd.help or "").strip().splitlines()[0]) for name, cmd in self.commands.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if isinstance(cmd, _Listed):
            cmd = self.commands[name] = load_command(name)
        return name, cmd, rest


app = typer.Typer(
    name="distill",
    cls=LazyGroup,
    help="Reproduce the DeepSeek-R1 distillation recipe: generate -> filter -> train -> eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: see cli_flags.PanelCommand
)


@app.callback()
def _group() -> None:
    # a Typer with one command of its own would be that command, not a group of many
    pass


@app.command()
def version() -> None:
    """Print the distill version."""

    typer.echo(__version__)


def main() -> None:
    app(prog_name="distill")


if __name__ == "__main__":
    sys.exit(main())
