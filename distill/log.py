"""Logging and progress on stderr through rich; library code never prints.

The screen gets one progress display per stage and distill's own lines; what the libraries
log (vLLM, transformers, TRL, warnings) goes to OUTPUT/logs/<command>-<time>.log, and to the
screen too with -v."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
_log_file: Path | None = None  # this command's log file, when it has one (not with -v)


@contextlib.contextmanager
def stderr_to_log() -> Iterator[None]:
    """While a library starts its worker processes (vLLM's engine), point file descriptor 2 at
    the log file: what they print from C++, from their own Python or at import (NUMA, Triton,
    tcmalloc notices, FutureWarnings) lands in the log, inherited for their whole life. This
    process keeps writing to the terminal through sys.stderr and the console."""
    if _log_file is None or not _log_file.parent.parent.is_dir():
        yield
        return
    _log_file.parent.mkdir(exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    old_stderr, old_console = sys.stderr, console.file
    sys.stderr = console.file = terminal
    fd = os.open(_log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr, console.file = old_stderr, old_console
        terminal.close()


class _LazyFile(logging.FileHandler):
    """The command's log file, opened only once its output folder exists: records from before
    (checks of the input, which may still fail) wait in memory, so a command that stops on bad
    input leaves no folder behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True, encoding="utf-8")
        self.pending: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None and not Path(self.baseFilename).parent.parent.is_dir():
            if len(self.pending) < 10_000:
                self.pending.append(record)
            return
        pending, self.pending = self.pending, []
        for early in pending:
            super().emit(early)
        super().emit(record)

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(exist_ok=True)
        return super()._open()


def traceback_to_log() -> Path | None:
    """Write the exception being handled, traceback and all, to this command's log file only;
    the file's path, or None when the command has no log file (no output folder, or -v, where
    the traceback belongs on the screen). A crash keeps its log even where the run had not
    written its output folder yet."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _LazyFile):
            try:
                Path(handler.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                return None
            record = logging.LogRecord("distill", logging.ERROR, __file__, 0, "failed", None,
                                       sys.exc_info())  # fmt: skip
            handler.handle(record)
            handler.flush()
            return Path(handler.baseFilename)
    return None


def _for_screen(verbose: bool) -> logging.Filter:
    """distill's own lines, and errors; the libraries' chatter (vLLM's start-up warnings,
    FutureWarnings, HTTP requests) only with -v. All of it reaches the log file."""

    def keep(record: logging.LogRecord) -> bool:
        return verbose or record.name.startswith("distill") or record.levelno >= logging.ERROR

    f = logging.Filter()
    f.filter = keep  # type: ignore[method-assign]
    return f


def setup_logging(
    verbose: bool = False, log_dir: Path | None = None, command: str = "distill"
) -> Path | None:
    """Screen: distill's lines (everything with -v). File (`log_dir/<command>-<time>.log`):
    everything, libraries included. Returns the log file's path."""
    # vLLM logs through the root logger instead of its own stdout handler: to the file
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    if not verbose:  # huggingface_hub's and transformers' tqdm bars ("Loading weights"): ours show progress
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    screen = RichHandler(console=console, show_path=False, rich_tracebacks=True)
    screen.addFilter(_for_screen(verbose))
    handlers: list[logging.Handler] = [screen]
    path = None
    global _log_file
    _log_file = None
    if log_dir is not None and not verbose:
        path = Path(log_dir) / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        file = _LazyFile(path)
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file)
        _log_file = path
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)  # FutureWarning & co. become log records: file, or -v
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
    return path


def progress(*fields: ProgressColumn | str, disable: bool = False, eta: bool = True) -> Progress:
    """A progress bar with count, rate fields given by the caller, elapsed time and ETA.
    `eta=False` for a bar that counts unlike steps (the demo's stages), where an ETA from
    the average step would mislead."""
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f) if isinstance(f, str) else f for f in fields),
        TimeElapsedColumn(),
        *((TextColumn("eta"), TimeRemainingColumn()) if eta else ()),
    ]
    return Progress(
        *columns, console=console, disable=disable or bool(os.environ.get("DISTILL_NO_PROGRESS"))
    )
