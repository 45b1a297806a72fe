"""Logging and progress on stderr through rich; library code never prints."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "openai",
        "urllib3",
        "filelock",
        "datasets",
        "fsspec",
        "huggingface_hub",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(*fields: ProgressColumn | str, disable: bool = False) -> Progress:
    """A progress bar with count, rate fields given by the caller, elapsed time and ETA."""
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f) if isinstance(f, str) else f for f in fields),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    return Progress(
        *columns, console=console, disable=disable or bool(os.environ.get("DISTILL_NO_PROGRESS"))
    )
