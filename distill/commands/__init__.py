"""What every `distill` command shares: the one-line error wrapper, logging set-up, and the
defaults < YAML < flags merge. The commands themselves live in this package by stage; `cli.py`
imports a module only when its command runs, so `distill --help` loads none of them."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import importlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from distill.config import from_dict, load_yaml, nest, override
from distill.errors import EnvFailure, UserError
from distill.log import setup_logging, traceback_to_log

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


# OSErrors that are about a path, not a bug: one line naming the path. A full or failing
# disk is the environment's failure (exit 1), a path that cannot be written the user's (2).
ENV_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO}
PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOENT}


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler ending the job): stop as Ctrl-C does, keeping finished work."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def _interrupt_handled() -> None:
    # CPython 3.11 marks a KeyboardInterrupt that surfaced inside PyRun_String (code a C
    # extension runs while it is imported) as unhandled for good, even once caught, and then
    # ends the process by SIGINT instead of with our status: an early Ctrl-C exited -2, not 130.
    with contextlib.suppress(ValueError, AttributeError):
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One line instead of a traceback for what the user can fix (exit 2) and for failures of
    the environment (exit 1); Ctrl-C and SIGTERM end with one line too."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except EnvFailure as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except OSError as e:
            if e.errno not in ENV_ERRNOS | PATH_ERRNOS:
                raise
            logging.getLogger("distill").debug("failed", exc_info=True)  # the traceback, with -v
            where = f"{e.filename}: " if e.filename else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            raise typer.Exit(1 if e.errno in ENV_ERRNOS else 2) from None
        except KeyboardInterrupt as e:
            typer.echo("interrupted; rerun the same command to resume", err=True)
            _interrupt_handled()
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise  # the command line's own ways of ending
        except Exception as e:
            # a library's failure deep in a run: one line here, the traceback in the log
            path = traceback_to_log()
            if path is None:
                raise
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [""]
            first = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
            typer.echo(f"error: {type(e).__name__}: {first} (traceback in {path})", err=True)
            raise typer.Exit(1) from None

    return wrapper


def preimport(*modules: str) -> None:
    """Import what the run loads later, first, with Ctrl-C and SIGTERM held until it is done.

    A signal that lands while a C extension initialises becomes an ImportError ("initialization
    failed", scipy's HiGHS under datasketch), and a library's `except ImportError:` fallback
    then swallows it: the filter ran on to exit 0 after a Ctrl-C. Held here, the signal is
    raised right after the imports, as a plain KeyboardInterrupt (or Terminated)."""
    got: list[int] = []
    held = {
        s: signal.signal(s, lambda signum, _: got.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)
    if got:
        raise Terminated if got[0] == signal.SIGTERM else KeyboardInterrupt


def setup(verbose: bool, output: Any = None, command: str = "distill") -> None:
    # hub.py brings the card and report modules: loaded when a command runs, not for its help
    from distill.hub import hub_timeouts

    setup_logging(verbose, Path(output) if output else None, command)
    hub_timeouts()  # every Hub call (datasets, models, pushes) gets a timeout
    signal.signal(signal.SIGTERM, _terminate)


def run_config(cls: type, config: Path | None, flags: dict[str, Any]) -> Any:
    """Defaults < --config YAML < flags."""
    data = load_yaml(config) if config else {}
    base = from_dict(cls, data, str(config)) if config else None
    if base is None:
        return from_dict(cls, nest(flags), "command line")
    return override(base, flags)
