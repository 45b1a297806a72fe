"""`distill filter`: verified-correct, readable traces."""

from __future__ import annotations

from typing import Any

from distill.cli_flags import PanelCommand, command_app, config_flags
from distill.commands import ConfigOpt, VerboseOpt, preimport, run_config, setup, user_errors
from distill.errors import UserError
from distill.filter import FilterConfig, filter_corpus

app = command_app()


@app.command("filter", cls=PanelCommand)
@user_errors
@config_flags(run=FilterConfig)
def filter_(
    flags: dict[str, dict[str, Any]],
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Keep verified-correct, readable traces: kept/, rejected/, report.json, report.md.

    \b
    distill filter --input traces/math500-r1 --output corpus/math500-r1 \\
        --keep shortest
    """

    preimport("datasketch", "matplotlib.pyplot")  # MinHash dedup, the report's plot
    setup(verbose, flags["run"].get("output"), "filter")
    for name in ("input", "output"):
        if name not in flags["run"] and not config:
            raise UserError(f"--{name} is required")
    filter_corpus(run_config(FilterConfig, config, flags["run"]))
