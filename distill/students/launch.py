"""Scale-out on existing engines: `accelerate launch` (DeepSpeed ZeRO-3, FSDP2, DDP) and Slurm.

`distill train --launcher accelerate|slurm` builds the command that runs `distill train` once
per GPU, each process replaying the resolved run file (`--resolved`); `--dry-run` prints it,
`--submit` hands the Slurm script to sbatch. Multi-node runs
rendezvous with c10d at the first node of the allocation.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from distill.students.recipe import ACCELERATE_DIR, StudentRecipe

CONFIGS = {
    "single": "ddp",
    "ddp": "ddp",
    "zero3": "zero3",
    "zero3_offload": "zero3_offload",
    "fsdp2": "fsdp2",
}
PORT = 29500


def accelerate_config(recipe: StudentRecipe) -> Path:
    return ACCELERATE_DIR / f"{CONFIGS[recipe.distributed.strategy]}.yaml"


def _join(parts: list[str]) -> str:
    """Shell words; `$VAR` / `$((...))` words stay unquoted so the shell expands them."""
    return " ".join(p if p.startswith("$") else shlex.quote(p) for p in parts)


def accelerate_command(
    recipe: StudentRecipe, train_args: list[str], slurm: bool = False
) -> list[str]:
    d = recipe.distributed
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config(recipe)),
    ]
    if slurm:
        cmd += ["--num_machines", "$SLURM_NNODES", "--num_processes", f"$((SLURM_NNODES * {d.gpus_per_node}))",
                "--machine_rank", "$SLURM_NODEID", "--main_process_ip", "$MASTER_ADDR",
                "--main_process_port", "$MASTER_PORT", "--rdzv_backend", "c10d"]  # fmt: skip
    elif d.nodes > 1:
        # the same command on every node, with MACHINE_RANK and MASTER_ADDR set by the user
        cmd += ["--num_machines", str(d.nodes), "--num_processes", str(d.nodes * d.gpus_per_node),
                "--machine_rank", "$MACHINE_RANK", "--main_process_ip", "$MASTER_ADDR",
                "--main_process_port", str(PORT), "--rdzv_backend", "c10d"]  # fmt: skip
    else:
        cmd += ["--num_machines", "1", "--num_processes", str(d.gpus_per_node)]
    return [*cmd, "-m", "distill.cli", "train", *train_args]


def slurm_script(recipe: StudentRecipe, train_args: list[str], output: Path) -> str:
    d = recipe.distributed
    inner = _join(accelerate_command(recipe, train_args, slurm=True))
    return f"""#!/bin/bash
#SBATCH --job-name=distill-{recipe.name}
#SBATCH --nodes={d.nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:{d.gpus_per_node}
#SBATCH --exclusive
#SBATCH --output={output}/slurm-%j.out
# {recipe.name}: {d.strategy} on {d.nodes} node(s) x {d.gpus_per_node} GPU(s)
# memory per GPU, as the recipe documents it for its own set-up: {recipe.memory_per_gpu or "see docs/train.md"}
set -euo pipefail
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT={PORT}
# one task per node; each runs accelerate, which starts one process per GPU (c10d rendezvous)
srun --kill-on-bad-exit=1 bash -c {shlex.quote(inner)}
"""


def command_text(cmd: list[str]) -> str:
    return _join(cmd)


def write_sbatch(script: str, path: Path, submit: bool) -> str:
    """Write a Slurm script (atomically) and, with `submit`, hand it to sbatch; returns it."""
    import subprocess

    from distill.errors import UserError
    from distill.log import console
    from distill.records import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, script.encode())
    if not submit:
        console.print(f"wrote {path}; submit it with: sbatch {path}")
        return script
    out = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if out.returncode:
        raise UserError(f"sbatch failed: {out.stderr.strip() or out.stdout.strip()}")
    console.print(out.stdout.strip())
    return script
