"""Running the stages: each one of distill's commands in a subprocess, resumed or redone as
its lineage says; the status table; the Slurm chain."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distill.errors import EnvFailure, UserError
from distill.lock import output_lock
from distill.log import console
from distill.pipeline.checks import Resources, check
from distill.pipeline.lineage import digests, inputs, read_record, record_path, state
from distill.pipeline.spec import REF, STATE, Pipeline, Stage, command_args, resolved
from distill.pipeline_report import StageView, report_table, write_report
from distill.records import atomic_write_json

log = logging.getLogger(__name__)


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
    """The pipeline's stages as a rich table: state, wall time, when it ran. Each stage's
    output is OUTPUT/STAGE (the title names OUTPUT), so the stage names get the width."""
    from rich.table import Table

    digest = digests(p)
    table = Table(title=f"distill pipeline {p.name} → {p.output}/STAGE")
    for col in ("stage", "command", "state", "wall", "ran"):
        table.add_column(col, justify="right" if col == "wall" else "left", no_wrap=col == "stage")
    colors = {"done": "green", "stale": "yellow", "running": "cyan", "interrupted": "magenta", "failed": "red"}  # fmt: skip
    for s in p.stages:
        st = state(p, s.name, digest[s.name])
        rec = read_record(p, s.name) or {}
        wall = f"{rec['wall_s']:.0f} s" if rec.get("wall_s") is not None and st != "pending" else ""
        shown = f"[{colors[st]}]{st}[/]" if st in colors else st
        if st == "failed":
            shown += f" (exit {rec.get('exit_code')})"
        table.add_row(s.name, s.command, shown, wall, rec.get("finished") or rec.get("started") or "")  # fmt: skip
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
