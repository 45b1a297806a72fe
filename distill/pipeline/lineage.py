"""What a stage was made from: digests of its command, settings, upstream stages and input
files, the records in OUTPUT/.pipeline/, and the state a stage is in."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from distill.pipeline.spec import REF, STATE, Pipeline, Stage, resolve_value
from distill.rl import RECIPES_DIR as RL_RECIPES_DIR
from distill.students.recipe import (  # fmt: skip
    RECIPES_DIR,
)
from distill.teachers.profile import PROFILES_DIR

log = logging.getLogger(__name__)


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
                path = Path(resolve_value(part, {})).expanduser()
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


