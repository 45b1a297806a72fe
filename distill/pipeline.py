"""`distill pipeline`: R1's chain of stages from one file, resumable, with lineage.

    distill pipeline run r1-tiny                      # R1's four stages + distillation, this CPU
    distill pipeline status r1-tiny                   # done / stale / interrupted / pending
    distill pipeline run r1-qwen2.5-math-7b --dry-run --launcher slurm   # the sbatch chain

A pipeline file lists stages; each is one of the commands (generate, filter, train, rl, eval,
push) with that command's flags as settings, and `${stage}` in a value is that stage's output
folder (`OUTPUT/stage`). Everything is checked before anything runs: unknown commands, flags
and TRL fields, dangling or forward references, duplicate names, bad values.

Each stage runs as `python -m distill.cli COMMAND ...` in a subprocess: its vLLM engine or
trainer lives and dies with it, and it keeps its own progress display and resume. Lineage lives
outside the stage outputs, in OUTPUT/.pipeline/STAGE.json: the stage's digest (its command and
settings, references replaced by the upstream stages' digests, and fingerprints of the local
files it reads), what it consumed, its state. A rerun skips a stage done with the current
digest, resumes one recorded as running (train/rl with --resume; generate, filter and eval
resume by themselves), and removes and redoes one whose digest changed: its descendants'
digests change with it, so exactly they are redone too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.config import (
    ASSETS,
    Leaf,
    from_dict,
    leaves,
    load_yaml,
    override,
    parse_assignments,
    shipped,
    shipped_yaml,
)
from distill.errors import EnvFailure, UserError
from distill.evaluate import EvalConfig
from distill.filter import FilterConfig
from distill.generate import GenerateConfig
from distill.lock import output_lock
from distill.log import console
from distill.pipeline_report import StageView, report_table, write_report
from distill.records import atomic_write_json
from distill.rl import RECIPES_DIR as RL_RECIPES_DIR
from distill.rl import RESERVED as GRPO_RESERVED
from distill.rl import RLConfig, RLRecipe, grpo_fields, load_rl_recipe, validate_grpo
from distill.students.recipe import (  # fmt: skip
    RECIPES_DIR,
    StudentRecipe,
    load_recipe,
    sft_fields,
    validate_sft,
)
from distill.teachers.profile import PROFILES_DIR, TeacherProfile, load_profile
from distill.train import TrainConfig

log = logging.getLogger(__name__)

PIPELINES_DIR = Path(__file__).parent / "pipelines"
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


def _resolve(value: Any, out: dict[str, str]) -> Any:
    """`${stage}` -> `out[stage]`; a path starting with `assets/` -> the bundled file."""
    if isinstance(value, list):
        return [_resolve(v, out) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, out) for k, v in value.items()}
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
    return _resolve(stage.settings, {s.name: str(p.folder(s.name)) for s in p.stages})


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
    run = {**_nested(groups["run"]), "output": str(p.folder(stage.name))}
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


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def _hint(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- lineage ----------------------------------------------------------------------------------


HASHED_BYTES = 16 * 1024 * 1024  # files up to this size count by content, bigger ones by size + mtime


def fingerprint(path: Path) -> str:
    """What a file, or every file under a folder, holds (hidden files and the eval_results that
    `distill eval` writes beside the weights it measured left out): small files by content, so a
    fresh checkout or a copy of the same data is the same input; big ones (weights, large
    shards) by size and modification time, which reading gigabytes on every status would cost."""
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
        and not f.name.startswith("eval_results.")
    )  # fmt: skip
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        name = f.relative_to(path) if f != path else f.name
        if st.st_size <= HASHED_BYTES:
            h.update(f"{name}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
        else:
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


SHIPPED = {"teacher": PROFILES_DIR, "profile": PROFILES_DIR, "student": RECIPES_DIR, "recipe": RL_RECIPES_DIR}  # fmt: skip
DEFAULT = {"generate": "teacher", "train": "student", "rl": "recipe"}  # whose default is "tiny"


def inputs(stage: Stage) -> dict[str, str]:
    """The local files a stage reads that no stage made (datasets, models, its shipped or own
    profile/recipe), with their fingerprints. Hub ids and built-in names count by name."""
    settings = {DEFAULT[stage.command]: "tiny"} if stage.command in DEFAULT else {}
    settings.update(stage.settings)
    found: dict[str, str] = {}
    for key, value in settings.items():
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str) or key == "set":
                continue
            for part in (x.strip() for x in text.split(",")):
                if not part or REF.search(part):  # another stage's output: its digest stands in
                    continue
                path = Path(_resolve(part, {})).expanduser()
                if key in SHIPPED and not path.exists():
                    path = SHIPPED[key] / f"{part}.yaml"
                if path.exists():
                    found[str(path)] = fingerprint(path)
    return found


def digests(p: Pipeline) -> dict[str, str]:
    """Each stage's digest: its command, its settings with references replaced by the upstream
    stages' digests, and the fingerprints of its local inputs. Not the output path: a moved
    output keeps its lineage."""
    out: dict[str, str] = {}
    for s in p.stages:
        settings = _resolve_refs_only(s.settings, {n: f"@{d}" for n, d in out.items()})
        payload = {"command": s.command, "settings": settings, "parents": [out[x] for x in s.parents],
                   "inputs": inputs(s)}  # fmt: skip
        out[s.name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]  # fmt: skip
    return out


def _resolve_refs_only(value: Any, out: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_resolve_refs_only(v, out) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_refs_only(v, out) for k, v in sorted(value.items())}
    return REF.sub(lambda m: out[m.group(1)], value) if isinstance(value, str) else value


def record_path(p: Pipeline, name: str) -> Path:
    return p.output / STATE / f"{name}.json"


def read_record(p: Pipeline, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(record_path(p, name).read_text())
    except (OSError, ValueError):
        return None


def _held(p: Pipeline, name: str) -> bool:
    """Is a live run working on this stage (its lock taken)?"""
    lock = p.output / STATE / "locks" / name / ".distill.lock"
    if not lock.is_file():
        return False
    with lock.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def state(p: Pipeline, name: str, digest: str) -> str:
    """done, stale (made with other settings or inputs), running, interrupted, failed, pending."""
    rec = read_record(p, name)
    if rec is None:
        return "pending"
    if rec.get("digest") != digest:
        return "stale"
    if rec.get("state") == "done":
        return "done"
    if _held(p, name):
        return "running"
    return "failed" if rec.get("state") == "failed" else "interrupted"


# --- running ----------------------------------------------------------------------------------


def _call(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run one command and wait. Ctrl-C reaches the child too (same process group): give it
    time to stop cleanly; a SIGTERM of ours is passed on."""
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})})
    try:
        return proc.wait()
    except KeyboardInterrupt:
        for sig, wait in ((None, 10), (signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            if sig is not None:
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
                break
        raise


def run_stage(p: Pipeline, stage: Stage, digest: str, res: Resources) -> dict[str, Any]:
    """Run, resume or redo one stage, holding its lock; returns its record."""
    status = state(p, stage.name, digest)  # before we hold its lock, which reads as "running"
    with output_lock(p.output / STATE / "locks" / stage.name, f"distill pipeline stage {stage.name}"):
        return _run_stage(p, stage, digest, res, status)


def _run_stage(p: Pipeline, stage: Stage, digest: str, res: Resources, status: str) -> dict[str, Any]:  # fmt: skip
    folder, previous = p.folder(stage.name), read_record(p, stage.name) or {}
    if status == "done":
        return previous
    if status == "stale" and folder.exists():
        console.print(f"[bold]{stage.name}[/]: settings or inputs changed since it ran: removing {folder}")  # fmt: skip
        shutil.rmtree(folder)
    elif status == "pending" and folder.exists() and any(folder.iterdir()):
        raise UserError(f"{folder}: exists, but the pipeline has no record of it; remove it or use another --output")  # fmt: skip
    resume = status in ("interrupted", "failed")
    if res.launcher == "slurm" and not os.environ.get("SLURM_JOB_ID"):
        raise UserError(f"{stage.where()}: needs {res.nodes} nodes ({res.why}): run the pipeline with --launcher slurm")  # fmt: skip
    args = command_args(p, stage, resume)
    if res.launcher != "none":
        args.append(f"--launcher={res.launcher}")
    rec = {"stage": stage.name, "command": stage.command, "digest": digest, "state": "running",
           "argv": ["distill", stage.command, *args], "settings": resolved(p, stage),
           "parents": {x: (read_record(p, x) or {}).get("digest") for x in stage.parents},
           "inputs": inputs(stage), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "attempts": previous.get("attempts", 0) + 1 if resume else 1}  # fmt: skip
    atomic_write_json(record_path(p, stage.name), rec)
    console.print(f"[bold]{stage.name}[/]: {'resuming: ' if resume else ''}{shlex.join(rec['argv'])}")
    started = time.time()
    code = _call([sys.executable, "-m", "distill.cli", stage.command, *args], p.env)
    if code == 0 and res.launcher == "slurm":  # inside the job's allocation: srun reaches its nodes
        code = _call(["bash", str(folder / f"{'train' if stage.command == 'train' else 'rl'}.sbatch")], p.env)  # fmt: skip
    rec.update(wall_s=round(time.time() - started, 1), exit_code=code, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
               state="done" if code == 0 else "failed")  # fmt: skip
    atomic_write_json(record_path(p, stage.name), rec)
    if code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        raise KeyboardInterrupt
    if code:
        message = f"stage '{stage.name}' (distill {stage.command}) failed with exit code {code}; fix it and rerun: finished stages are kept"  # fmt: skip
        raise UserError(message) if code == 2 else EnvFailure(message)
    console.print(f"[bold]{stage.name}[/]: done in {rec['wall_s']:.0f} s")
    return rec


def run_pipeline(p: Pipeline, only: str | None = None, dry_run: bool = False, launcher: str = "none") -> str:  # fmt: skip
    """Run the stages not done yet, in order (or only `only`, whose parents must be done);
    returns the text to print: the plan (--dry-run), the Slurm chain, or the report path."""
    res = check(p)
    digest = digests(p)
    states = {s.name: state(p, s.name, digest[s.name]) for s in p.stages}
    if launcher == "slurm":
        return slurm(p, res, states, dry_run)
    todo = [p.stage(only)] if only else p.stages
    if dry_run:
        lines = []
        for s in todo:
            resume = states[s.name] in ("interrupted", "failed")
            lines.append(f"# {s.name}: {states[s.name]}{' (skipped)' if states[s.name] == 'done' else ''}")
            if states[s.name] != "done":
                launch = [f"--launcher={res[s.name].launcher}"] if res[s.name].launcher != "none" else []
                lines.append(shlex.join(["distill", s.command, *command_args(p, s, resume), *launch]))
        return "\n".join(lines)
    from distill.reaper import reap_children_on_exit

    reap_children_on_exit()  # a SIGKILLed pipeline takes its running stage (and engines) along
    started = time.time()
    lock = output_lock(p.output / STATE, "distill pipeline run") if not only else contextlib.nullcontext()
    with lock:
        for i, s in enumerate(todo, 1):
            if state(p, s.name, digest[s.name]) == "done":
                console.print(f"[dim]{s.name}: done, skipped[/]")
                continue
            waiting = [x for x in s.parents if state(p, x, digest[x]) != "done"]
            if waiting:
                raise UserError(f"{s.where()}: needs {', '.join(waiting)}, not done yet")
            console.rule(f"[{i}/{len(todo)}] {s.name} (distill {s.command})")
            run_stage(p, s, digest[s.name], res[s.name])
    if only:
        return f"{only}: done"
    views = stage_views(p, digest)
    nums = write_report(p.output, f"distill pipeline {p.name}", views)
    console.print(report_table(f"distill pipeline {p.name} → {p.output} ({time.time() - started:.0f} s this run)", views, nums))  # fmt: skip
    return str(p.output / "report.md")


def stage_views(p: Pipeline, digest: dict[str, str]) -> list[StageView]:
    views = []
    for s in p.stages:
        model = str(s.settings.get("model") or "")
        measured = REF.findall(model) if s.command == "eval" else []
        rec = read_record(p, s.name) or {}
        views.append(StageView(s.name, s.command, p.folder(s.name), state(p, s.name, digest[s.name]),
                               measured[0] if measured else None, s.parents, rec.get("wall_s")))  # fmt: skip
    return views


def status(p: Pipeline) -> Any:
    """The pipeline's stages as a rich table: state, output, wall time, what changed."""
    from rich.table import Table

    digest = digests(p)
    table = Table(title=f"distill pipeline {p.name} → {p.output}")
    for col in ("stage", "command", "state", "output", "wall", "ran"):
        table.add_column(col, justify="right" if col == "wall" else "left")
    colors = {"done": "green", "stale": "yellow", "running": "cyan", "interrupted": "magenta", "failed": "red"}  # fmt: skip
    for s in p.stages:
        st = state(p, s.name, digest[s.name])
        rec = read_record(p, s.name) or {}
        wall = f"{rec['wall_s']:.0f} s" if rec.get("wall_s") is not None and st != "pending" else ""
        shown = f"[{colors[st]}]{st}[/]" if st in colors else st
        if st == "failed":
            shown += f" (exit {rec.get('exit_code')})"
        table.add_row(s.name, s.command, shown, str(p.folder(s.name)), wall, rec.get("finished") or rec.get("started") or "")  # fmt: skip
    return table


# --- Slurm ------------------------------------------------------------------------------------


def _job_line(p: Pipeline, stage: Stage) -> str:
    arg = p.arg if not Path(p.arg).exists() else str(Path(p.arg).resolve())
    sets = [f"--set={s}" for s in p.sets]
    return shlex.join([sys.executable, "-m", "distill.cli", "pipeline", "run", arg, f"--output={p.output}", *sets, f"--stage={stage.name}"])  # fmt: skip


def sbatch_script(p: Pipeline, stage: Stage, res: Resources) -> str:
    """One stage as one job: its recipe's nodes and GPUs; the job reruns this pipeline's stage."""
    logs = p.output / STATE / "slurm"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={p.name}.{stage.name}", f"#SBATCH --nodes={res.nodes}",
             "#SBATCH --ntasks-per-node=1"]  # fmt: skip
    if res.gpus:
        lines += [f"#SBATCH --gres=gpu:{res.gpus}", "#SBATCH --exclusive"]
    lines += [f"#SBATCH --chdir={Path.cwd()}", f"#SBATCH --output={logs}/{stage.name}-%j.out"]
    lines += [f"#SBATCH {x}" for x in p.sbatch]
    lines += [f"# distill {stage.command}: {res.why}", "set -euo pipefail"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in p.env.items()] + [_job_line(p, stage)]
    return "\n".join(lines) + "\n"


def slurm(p: Pipeline, res: dict[str, Resources], states: dict[str, str], dry_run: bool) -> str:
    """The chain as a shell script: one sbatch per stage not done, `--dependency=afterok:` on
    the jobs of its parents. --dry-run returns it; otherwise it is written and run."""
    folder = p.output / STATE / "slurm"
    lines = ["#!/bin/bash", f"# distill pipeline {p.name} → {p.output}: one Slurm job per stage, each after its parents (afterok)",
             "set -euo pipefail", f"S={shlex.quote(str(folder))}", 'mkdir -p "$S"']  # fmt: skip
    jobs: dict[str, str] = {}
    for i, s in enumerate(p.stages):
        if states[s.name] == "done":
            lines.append(f"# {s.name}: done, not submitted")
            continue
        deps = [jobs[x] for x in s.parents if x in jobs]
        dep = f" --dependency=afterok:{':'.join('$' + j for j in deps)}" if deps else ""
        lines += ["", f"cat > \"$S/{s.name}.sbatch\" <<'DISTILL_EOF'", sbatch_script(p, s, res[s.name]).rstrip("\n"), "DISTILL_EOF",
                  f'J{i}=$(sbatch --parsable{dep} "$S/{s.name}.sbatch")', f'echo "{s.name}: job $J{i}"']  # fmt: skip
        jobs[s.name] = f"J{i}"
    text = "\n".join(lines) + "\n"
    if dry_run:
        return text
    if not shutil.which("sbatch"):
        raise UserError("sbatch: not found (not a Slurm login node); --dry-run prints the chain")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "submit.sh").write_text(text)
    if _call(["bash", str(folder / "submit.sh")]):
        raise EnvFailure(f"submitting {folder / 'submit.sh'} failed (jobs submitted before the failure stay queued)")  # fmt: skip
    return f"submitted; follow with: distill pipeline status {p.arg} --output {p.output}"
