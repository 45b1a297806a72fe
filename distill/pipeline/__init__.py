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

from distill.pipeline.checks import Resources, check
from distill.pipeline.lineage import digests, fingerprint, read_record, state
from distill.pipeline.run import run_pipeline, status
from distill.pipeline.spec import Pipeline, Stage, load_pipeline, shipped_pipelines

__all__ = [
    "Pipeline", "Resources", "Stage", "check", "digests", "fingerprint", "load_pipeline",
    "read_record", "run_pipeline", "shipped_pipelines", "state", "status",
]  # fmt: skip
