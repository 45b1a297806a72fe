"""`distill eval`: pass@1 over k samples, as R1 reports it."""

from __future__ import annotations

from typing import Any

from distill.cli_flags import PanelCommand, command_app, config_flags
from distill.commands import SetOpt, VerboseOpt, run_config, setup, user_errors
from distill.config import override, parse_assignments
from distill.errors import UserError
from distill.evaluate import EvalConfig, evaluate
from distill.teachers.profile import TeacherProfile, load_profile

app = command_app()


@app.command("eval", cls=PanelCommand)
@user_errors
@config_flags(run=EvalConfig, teacher=TeacherProfile)
def eval_(
    flags: dict[str, dict[str, Any]],
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Measure a model: pass@1 over k samples, cons@k, pass@k (R1 protocol).

    \b
    distill eval --model ckpt/r1-distill-7b --benchmark aime24,math500 \\
        --samples 16 --output results/7b
    """

    setup(verbose, flags["run"].get("output"), "eval")
    for name, key in (("--model", "model"), ("--benchmark", "benchmark"), ("--output", "output")):
        if key not in flags["teacher" if key == "model" else "run"]:
            raise UserError(f"{name} is required")
    cfg = run_config(EvalConfig, None, flags["run"])
    overrides = {**flags["teacher"], **parse_assignments(set_ or [])}
    if "server.base_url" in overrides:
        overrides.setdefault("backend", "openai")
    if cfg.profile:
        profile = load_profile(cfg.profile, overrides)
    else:
        profile = override(TeacherProfile(model=overrides["model"], name="eval"), overrides)
    evaluate(cfg, profile)
