"""Every setting of every stage checked as its command would take it, before anything runs,
and the resources (nodes, GPUs, launcher) each stage needs."""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass
from typing import Any

from distill.config import (
    from_dict,
    load_yaml,
    nest,
    override,
)
from distill.errors import UserError
from distill.pipeline.spec import COMMANDS, EXTRA, OWN, Pipeline, Stage, flags, resolved
from distill.rl import RESERVED as GRPO_RESERVED
from distill.rl import grpo_fields, load_rl_recipe, validate_grpo
from distill.students.recipe import (  # fmt: skip
    load_recipe,
    sft_fields,
    validate_sft,
)
from distill.teachers.profile import TeacherProfile, load_profile

log = logging.getLogger(__name__)


# --- checks -----------------------------------------------------------------------------------


@dataclass
class Resources:
    """What a stage needs of a cluster, and how it is launched there."""

    nodes: int = 1
    gpus: int = 0
    launcher: str = "none"  # train/rl: none, accelerate (one node, several GPUs) or slurm
    why: str = ""


def check(p: Pipeline) -> dict[str, Resources]:
    """Every setting of every stage, as its command would take it, before anything runs:
    unknown flags and TRL fields, bad values, missing required settings. TRL's fields are read
    only when a train/rl stage sets one (importing TRL takes seconds)."""
    return {s.name: _check_stage(p, s) for s in p.stages}


def _check_stage(p: Pipeline, stage: Stage) -> Resources:
    where, cmd = stage.where(), stage.command
    table = flags(cmd)
    values = resolved(p, stage)
    groups: dict[str, dict[str, Any]] = {g: {} for g in COMMANDS[cmd][0]}
    trl: dict[str, Any] = {}
    for key, value in values.items():
        if key in OWN:
            raise UserError(f"{where}: '{key}' is set by distill pipeline itself")
        if key in EXTRA.get(cmd, ()):
            continue
        if key in table:
            group, leaf = table[key]
            if isinstance(value, list) and leaf.type != list[str]:
                value = ",".join(map(str, value))
            if leaf.type == list[str] and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            groups[group][leaf.path] = value
        elif cmd in ("train", "rl"):
            trl[key.replace("-", "_")] = value
        else:
            raise UserError(f"{where}: unknown setting '{key}' for distill {cmd}{_hint(key, list(table) + sorted(EXTRA.get(cmd, ())))}")  # fmt: skip
    for key in COMMANDS[cmd][1]:
        if key not in values:
            raise UserError(f"{where}: distill {cmd} needs '{key}'")
    if cmd == "push":
        return Resources(why="push: no GPU")
    run_cls = COMMANDS[cmd][0]["run"]
    run = {**nest(groups["run"]), "output": str(p.folder(stage.name))}
    for f in dataclasses.fields(run_cls):  # what a stage gives by reference may not exist yet
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            run.setdefault(f.name, ["x"] if f.name == "benchmark" else "x")
    from_dict(run_cls, run, where)
    if cmd in ("generate", "eval"):
        return _engine(cmd, values, groups["profile"], where)
    if cmd == "filter":
        return Resources(why="filter: CPU")
    extra = load_yaml(values["config"]) if values.get("config") else None
    if cmd == "train":
        recipe: Any = load_recipe(values.get("student", "tiny"), extra, groups["recipe"])
        fields = sft_fields() if trl else {}
        convert = validate_sft
    else:
        recipe = load_rl_recipe(values.get("recipe", "tiny"), extra, groups["recipe"])
        fields = grpo_fields() if trl else {}
        convert = validate_grpo
    for key in trl:
        if key not in fields or (key in GRPO_RESERVED and cmd == "rl"):
            what = "SFTConfig" if cmd == "train" else "GRPOConfig"
            raise UserError(f"{where}: unknown setting '{key}': not a distill {cmd} flag nor a TRL {what} field{_hint(key, list(table) + list(fields))}")  # fmt: skip
    convert(trl, where)
    d = recipe.distributed
    world = 1 if d.strategy == "single" else d.nodes * d.gpus_per_node
    launcher = "slurm" if d.nodes > 1 else "accelerate" if world > 1 else "none"
    why = f"recipe {recipe.name}: {d.strategy} on {d.nodes} node(s) x {d.gpus_per_node} GPU(s)"
    return Resources(d.nodes, d.gpus_per_node, launcher, why)


def _engine(cmd: str, values: dict[str, Any], overrides: dict[str, Any], where: str) -> Resources:
    """generate/eval: the teacher profile resolved; GPUs = tensor x pipeline parallel x
    data-parallel replicas, on one node."""
    name = values.get("teacher", "tiny") if cmd == "generate" else values.get("profile")
    try:
        if name:
            profile = load_profile(name, overrides)
        else:
            profile = override(TeacherProfile(model=overrides["model"], name="eval"), overrides)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    if profile.backend != "vllm":
        return Resources(why=f"{profile.backend} backend: the model is served elsewhere")
    e = profile.engine
    gpus = e.tensor_parallel_size * e.pipeline_parallel_size * e.data_parallel_size
    return Resources(1, gpus, why=f"vLLM on {gpus} GPU(s) (tensor x pipeline x data parallel)")


def _hint(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


