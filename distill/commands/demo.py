"""`distill demo`: the whole recipe on a CPU with the bundled tiny models."""

from __future__ import annotations

from typing import Any

from distill.cli_flags import PanelCommand, command_app, config_flags
from distill.commands import VerboseOpt, run_config, setup, user_errors
from distill.demo import DemoConfig, run_demo

app = command_app()


@app.command(cls=PanelCommand)
@user_errors
@config_flags(run=DemoConfig)
def demo(flags: dict[str, dict[str, Any]], verbose: VerboseOpt = False) -> None:
    """The whole recipe on a CPU: a tiny real teacher -> traces -> filter -> two students -> eval.

    \b
    distill demo            # about 10 minutes on 2 cores
    distill demo --quick    # a few minutes (CI)
    """

    setup(verbose, flags["run"].get("output", "runs/demo"), "demo")
    run_demo(run_config(DemoConfig, None, flags["run"]))
