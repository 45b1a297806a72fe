"""`distill push`: a student or a corpus to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distill.cli_flags import PanelCommand, command_app
from distill.commands import VerboseOpt, setup, user_errors
from distill.hub import push as run_push

app = command_app()


@app.command(cls=PanelCommand)
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

    \b
    distill push corpus/math500-r1 --repo me/r1-traces   # kept/rejected: splits
    distill push ckpt/r1-distill-7b --repo me/r1-7b      # model, tokenizer, card
    """

    setup(verbose)
    url = run_push(folder, repo, private=private, revision=revision, license=license)
    typer.echo(url)
