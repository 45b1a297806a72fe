"""A pipeline file: its stages, their commands and settings, `${stage}` references, and
the command line each stage becomes."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.config import (
    ASSETS,
    Leaf,
    leaves,
    load_yaml,
    parse_assignments,
    shipped,
    shipped_yaml,
)
from distill.errors import UserError
from distill.evaluate import EvalConfig
from distill.filter import FilterConfig
from distill.generate import GenerateConfig
from distill.rl import RLConfig, RLRecipe
from distill.students.recipe import (  # fmt: skip
    StudentRecipe,
)
from distill.teachers.profile import TeacherProfile
from distill.train import TrainConfig

log = logging.getLogger(__name__)


PIPELINES_DIR = Path(__file__).parents[1] / "pipelines"
STATE = ".pipeline"  # OUTPUT/.pipeline/STAGE.json: the records; slurm/: the job scripts
REF = re.compile(r"\$\{([^}]*)\}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
FILE_KEYS = {"name", "extends", "output", "env", "sbatch", "stages", "set", "skip"}
# What the pipeline sets itself, per stage: never a setting.
OWN = {"output", "resume", "dry-run", "submit", "launcher", "resolved"}
PUSH = [Leaf("folder", "folder", str, ""), Leaf("repo", "repo", str, ""), Leaf("private", "private", bool, ""),
        Leaf("revision", "revision", str, ""), Leaf("license", "license", str, "")]  # fmt: skip
# command -> (config groups whose leaves are its flags, required settings)
COMMANDS: dict[str, tuple[dict[str, type], tuple[str, ...]]] = {
    "generate": ({"run": GenerateConfig, "profile": TeacherProfile}, ()),
    "filter": ({"run": FilterConfig}, ("input",)),
    "train": ({"run": TrainConfig, "recipe": StudentRecipe}, ("data",)),
    "rl": ({"run": RLConfig, "recipe": RLRecipe}, ("data",)),
    "eval": ({"run": EvalConfig, "profile": TeacherProfile}, ("model", "benchmark")),
    "push": ({}, ("folder", "repo")),
}
EXTRA = {"generate": {"config", "set"}, "filter": {"config"}, "train": {"config"}, "rl": {"config"}, "eval": {"set"}}  # fmt: skip


def flags(command: str) -> dict[str, tuple[str, Leaf]]:
    """flag -> (config group, leaf) of a command: what `distill COMMAND --help` lists."""
    if command == "push":
        return {leaf.flag: ("run", leaf) for leaf in PUSH}
    return {leaf.flag: (group, leaf) for group, cls in COMMANDS[command][0].items() for leaf in leaves(cls)}  # fmt: skip


# --- the file ---------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    command: str
    settings: dict[str, Any]  # flag (dashes) -> value as written, `${refs}` unresolved
    source: str  # the file that defined it, for error messages
    parents: list[str] = field(default_factory=list)  # stages it reads or runs after

    def where(self) -> str:
        return f"{self.source}: stage '{self.name}'"


@dataclass
class Pipeline:
    name: str
    arg: str  # what the user named (a shipped name or a path): what Slurm jobs rerun
    output: Path
    stages: list[Stage]
    sbatch: list[str]  # extra #SBATCH options of every job
    env: dict[str, str]  # environment of every stage (not part of the digests)
    sets: list[str]  # --set items, forwarded to Slurm jobs

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise UserError(f"{self.arg}: no stage named '{name}' (stages: {', '.join(s.name for s in self.stages)})")  # fmt: skip

    def folder(self, name: str) -> Path:
        return self.output / name


class _StrictLoader(yaml.SafeLoader):
    """YAML whose duplicate keys are errors (PyYAML keeps the last one silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in keys:
            raise UserError(f"{loader.name}:{key_node.start_mark.line + 1}: '{key}' given twice")
        keys.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A pipeline file as {name, output, sbatch, stages: [(source, mapping)]}, `extends`,
    `set` and `skip` applied."""
    load_yaml(path)  # missing file, bad YAML: one line
    with path.open(encoding="utf-8") as f:
        loader = _StrictLoader(f)
        loader.name = str(path)
        try:
            data = loader.get_single_data() or {}
        finally:
            loader.dispose()
    bad = sorted(set(data) - FILE_KEYS)
    if bad:
        raise UserError(f"{path}: unknown key '{bad[0]}' (a pipeline file has: {', '.join(sorted(FILE_KEYS))})")  # fmt: skip
    own = data.get("stages") or []
    if not isinstance(own, list) or not all(isinstance(s, dict) for s in own):
        raise UserError(f"{path}: 'stages' must be a list of mappings (name, command, settings)")
    stages = [(str(path), dict(s)) for s in own]
    out = {"name": data.get("name") or path.stem, "output": data.get("output"),
           "sbatch": data.get("sbatch") or [], "env": data.get("env") or {}}  # fmt: skip
    if data.get("extends"):
        base_path = _locate(str(data["extends"]), path.parent)
        if base_path.resolve() in chain:
            raise UserError(f"{path}: 'extends: {data['extends']}' makes a cycle")
        base = _read(base_path, (*chain, path.resolve()))
        stages = base["stages"] + stages
        out = {k: out[k] if data.get(k) else base[k] for k in ("output", "sbatch", "env")} | {"name": out["name"]}  # fmt: skip
    for name, values in (data.get("set") or {}).items():
        if not isinstance(values, dict):
            raise UserError(f"{path}: set.{name} must be a mapping of settings")
        _stage_dict(stages, str(name), f"{path}: set").update(values)
    for name in data.get("skip") or []:
        stages.remove(next(s for s in stages if s[1] is _stage_dict(stages, str(name), f"{path}: skip")))  # fmt: skip
    return {**out, "stages": stages}


def _locate(name_or_path: str, near: Path) -> Path:
    path = Path(name_or_path)
    if not path.is_absolute() and (near / path).is_file():
        return near / path
    return shipped_yaml(name_or_path, PIPELINES_DIR, "pipeline")


def _stage_dict(stages: list[tuple[str, dict[str, Any]]], name: str, where: str) -> dict[str, Any]:
    for _, s in stages:
        if s.get("name") == name:
            return s
    raise UserError(f"{where}: no stage named '{name}'")


def shipped_pipelines() -> list[str]:
    return shipped(PIPELINES_DIR)


def load_pipeline(name_or_path: str, output: str | Path | None = None, sets: list[str] | None = None) -> Pipeline:  # fmt: skip
    """Read and check the structure of a pipeline file (a path or a shipped name); `sets`
    (`STAGE.KEY=VALUE`) override settings as the file's `set:` does."""
    path = shipped_yaml(name_or_path, PIPELINES_DIR, "pipeline")
    data = _read(path)
    for key, value in parse_assignments(sets or []).items():
        stage, dot, setting = key.partition(".")
        if not dot or not setting:
            raise UserError(f"--set {key}: expected STAGE.SETTING=VALUE")
        _stage_dict(data["stages"], stage, "--set")[setting] = value
    stages: list[Stage] = []
    for source, raw in data["stages"]:
        stages.append(_stage(source, raw, [s.name for s in stages], [str(r.get("name")) for _, r in data["stages"]]))  # fmt: skip
    if not stages:
        raise UserError(f"{path}: no stages")
    out = Path(output or data["output"] or f"runs/{data['name']}")
    if not isinstance(data["env"], dict):
        raise UserError(f"{path}: 'env' must be a mapping of environment variables")
    env = {str(k): str(v) for k, v in data["env"].items()}
    return Pipeline(data["name"], name_or_path, out, stages, [str(x) for x in data["sbatch"]], env, list(sets or []))  # fmt: skip


def _stage(source: str, raw: dict[str, Any], before: list[str], every: list[str]) -> Stage:
    name = raw.pop("name", None)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{source}: every stage needs a name of letters, digits, '_' or '-' (got {name!r})")  # fmt: skip
    where = f"{source}: stage '{name}'"
    if name in before:
        raise UserError(f"{where}: defined twice")
    command = raw.pop("command", None)
    if command not in COMMANDS:
        raise UserError(f"{where}: unknown command {command!r} (one of {', '.join(COMMANDS)})")
    after = raw.pop("after", []) or []
    after = [after] if isinstance(after, str) else after
    settings = {str(k).replace("_", "-"): v for k, v in raw.items()}
    parents: list[str] = []
    for ref in [r for v in settings.values() for r in _refs(v)] + [f"{a}" for a in after]:
        if ref == name:
            raise UserError(f"{where}: refers to itself (${{{ref}}})")
        if ref not in before:
            later = ref in every
            raise UserError(f"{where}: " + (f"forward reference ${{{ref}}}: a stage can use only the stages above it" if later else f"dangling reference ${{{ref}}}: no stage named '{ref}'"))  # fmt: skip
        if ref not in parents:
            parents.append(ref)
    return Stage(name, command, settings, source, parents)


def _refs(value: Any) -> list[str]:
    if isinstance(value, str):
        return REF.findall(value)
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    return []


# --- values -----------------------------------------------------------------------------------


def resolve_value(value: Any, out: dict[str, str]) -> Any:
    """`${stage}` -> `out[stage]`; a path starting with `assets/` -> the bundled file."""
    if isinstance(value, list):
        return [resolve_value(v, out) for v in value]
    if isinstance(value, dict):
        return {k: resolve_value(v, out) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    value = REF.sub(lambda m: out[m.group(1)], value)
    parts = []
    for part in value.split(","):
        if part.strip().startswith("assets/"):
            path = ASSETS / part.strip().removeprefix("assets/")
            if not path.exists():
                raise UserError(f"{part.strip()}: no such bundled file ({path})")
            part = str(path)
        parts.append(part)
    return ",".join(parts)


def resolved(p: Pipeline, stage: Stage) -> dict[str, Any]:
    """A stage's settings with references as output folders and bundled paths made absolute."""
    return resolve_value(stage.settings, {s.name: str(p.folder(s.name)) for s in p.stages})


def _arg(value: Any) -> str:
    """A value as a TRL field flag reads it (parse_sft_args / parse_grpo_args)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def command_args(p: Pipeline, stage: Stage, resume: bool = False) -> list[str]:
    """The stage's `distill COMMAND` arguments (after the command name)."""
    table = flags(stage.command)
    args: list[str] = []
    for key, value in resolved(p, stage).items():
        if value is None:
            continue
        if key == "folder" and stage.command == "push":
            args.insert(0, str(value))
        elif key == "config":
            args += ["--config", str(value)]
        elif key == "set":
            args += [f"--set={k}={json.dumps(v)}" for k, v in value.items()]
        elif key in table and table[key][1].type is bool:
            args.append(f"--{key}" if value else f"--no-{key}")
        elif key in table:
            args.append(f"--{key}={','.join(map(str, value)) if isinstance(value, list) else value}")
        else:  # a TRL SFTConfig / GRPOConfig field
            args.append(f"--{key.replace('-', '_')}={_arg(value)}")
    if stage.command != "push":
        args.append(f"--output={p.folder(stage.name)}")
    if resume and stage.command in ("train", "rl"):
        args.append("--resume")
    return args


