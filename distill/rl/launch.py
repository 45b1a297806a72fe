"""`distill rl` on many GPUs: accelerate and Slurm commands, `trl vllm-serve` placement."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.log import console
from distill.rl.config import RLConfig, RLRecipe
from distill.students.launch import accelerate_config, write_sbatch

log = logging.getLogger(__name__)


# --- launching -------------------------------------------------------------------------------


def rl_args(cfg: RLConfig, recipe_overrides: dict[str, Any], grpo_overrides: dict[str, Any]) -> list[str]:  # fmt: skip
    """The arguments that rerun this `distill rl` once per GPU under a launcher."""
    from distill.config import leaves

    args = ["--recipe", cfg.recipe, "--data", cfg.data, "--output", str(cfg.output)]
    for leaf in leaves(RLConfig):
        if leaf.path in ("recipe", "data", "output", "launcher", "dry_run", "submit"):
            continue
        value = _get(cfg, leaf.path)
        default = _get(RLConfig(data="", output=Path()), leaf.path)
        if value == default:
            continue
        args += [f"--{leaf.flag}"] if value is True else [f"--no-{leaf.flag}"] if value is False else [f"--{leaf.flag}", str(value)]  # fmt: skip
    if cfg.recipe_config:
        args += ["--config", cfg.recipe_config]
    flags = {leaf.path: leaf.flag for leaf in leaves(RLRecipe)}
    for path, value in recipe_overrides.items():
        if isinstance(value, bool):
            args.append(f"--{flags[path]}" if value else f"--no-{flags[path]}")
        else:
            args += [f"--{flags[path]}", str(value)]
    for name, value in grpo_overrides.items():
        args += [f"--{name}", json.dumps(value) if isinstance(value, dict | list) else str(value).lower() if isinstance(value, bool) else str(value)]  # fmt: skip
    return args


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def accelerate_rl_command(recipe: RLRecipe, args: list[str], slurm: bool = False) -> list[str]:
    """`accelerate launch` of `distill rl` with the recipe's strategy (students/accelerate/)."""
    import sys

    d = recipe.distributed
    train_nodes, train_gpus = training_share(recipe)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config(recipe))]  # fmt: skip
    if slurm and train_nodes > 1:
        cmd += ["--num_machines", str(train_nodes), "--num_processes", str(train_nodes * train_gpus),
                "--machine_rank", "$MACHINE_RANK", "--main_process_ip", "$MASTER_ADDR",
                "--main_process_port", "$MASTER_PORT", "--rdzv_backend", "c10d"]  # fmt: skip
    elif not slurm and d.nodes > 1:
        cmd += ["--num_machines", str(train_nodes), "--num_processes", str(train_nodes * train_gpus),
                "--machine_rank", "$MACHINE_RANK", "--main_process_ip", "$MASTER_ADDR",
                "--main_process_port", "29500", "--rdzv_backend", "c10d"]  # fmt: skip
    else:
        cmd += ["--num_machines", "1", "--num_processes", str(train_gpus)]
    return [*cmd, "-m", "distill.cli", "rl", *args, "--launcher", "none"]


def training_share(recipe: RLRecipe) -> tuple[int, int]:
    """(nodes, GPUs per node) that train: with vllm-server, the first node serves when there
    are several, else the last `vllm_server_gpus` GPUs of the one node do."""
    d = recipe.distributed
    if recipe.generation != "vllm-server":
        return d.nodes, d.gpus_per_node
    if d.nodes > 1:
        return d.nodes - 1, d.gpus_per_node
    if recipe.vllm_server_gpus >= d.gpus_per_node:
        raise UserError(
            f"vllm-server on one node of {d.gpus_per_node} GPUs with {recipe.vllm_server_gpus} "
            "for the server leaves none to train: lower --vllm-server-gpus or add --nodes"
        )
    return 1, d.gpus_per_node - recipe.vllm_server_gpus


def serve_command(recipe: RLRecipe, model: str, gpus: int) -> list[str]:
    """TRL's generation server for --generation vllm-server (NCCL weight sync from the trainer)."""
    return ["trl", "vllm-serve", "--model", model, "--tensor-parallel-size", str(gpus)]


def shell_join(parts: list[str]) -> str:
    import shlex

    return " ".join(p if p.startswith("$") else shlex.quote(p) for p in parts)


def single_node_command(recipe: RLRecipe, model: str, args: list[str]) -> str:
    """One node: accelerate launch; with vllm-server, the server on the last GPUs first."""
    cmd = accelerate_rl_command(recipe, args)
    if recipe.generation != "vllm-server":
        return shell_join(cmd)
    g, s = recipe.distributed.gpus_per_node, recipe.vllm_server_gpus
    serve = ",".join(str(i) for i in range(g - s, g))
    train = ",".join(str(i) for i in range(g - s))
    return (f"CUDA_VISIBLE_DEVICES={serve} {shell_join(serve_command(recipe, model, s))} &\n"
            f"CUDA_VISIBLE_DEVICES={train} {shell_join(cmd)}")  # fmt: skip


def slurm_rl_script(recipe: RLRecipe, model: str, args: list[str], output: Path) -> str:
    d = recipe.distributed
    server = recipe.generation == "vllm-server"
    train_nodes, _ = training_share(recipe)
    inner = shell_join(accelerate_rl_command(recipe, args, slurm=True))
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=distill-rl-{recipe.name}",
        f"#SBATCH --nodes={d.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gres=gpu:{d.gpus_per_node}",
        "#SBATCH --exclusive",
        f"#SBATCH --output={output}/slurm-%j.out",
        f"# {recipe.name}: GRPO, {d.strategy} on {d.nodes} node(s) x {d.gpus_per_node} GPU(s), generation {recipe.generation}",
        f"# memory per GPU, as the recipe documents it: {recipe.memory_per_gpu or 'see docs/rl.md'}",
        "set -euo pipefail",
        'NODES=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))',
    ]
    if server and d.nodes > 1:
        lines += [
            "# the first node serves generations (trl vllm-serve), the others train",
            'VLLM_HOST=${NODES[0]}',
            f"srun --nodes=1 --ntasks=1 -w $VLLM_HOST {shell_join(serve_command(recipe, model, d.gpus_per_node))} &",
            "export MASTER_ADDR=${NODES[1]}",
            "export MASTER_PORT=29500",
            f"srun --nodes={train_nodes} --ntasks={train_nodes} --exclude=$VLLM_HOST --kill-on-bad-exit=1 "
            f"bash -c {_quote('MACHINE_RANK=$SLURM_NODEID ' + inner + ' --vllm_server_host $VLLM_HOST')}",
        ]  # fmt: skip
    elif server:
        lines.append(single_node_command(recipe, model, args))
    else:
        lines += [
            "export MASTER_ADDR=${NODES[0]}",
            "export MASTER_PORT=29500",
            "# one task per node; each runs accelerate, which starts one process per GPU (c10d rendezvous)",
            f"srun --kill-on-bad-exit=1 bash -c {_quote('MACHINE_RANK=$SLURM_NODEID ' + inner)}",
        ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def launch(cfg: RLConfig, recipe: RLRecipe, model: str, args: list[str]) -> str:
    if cfg.launcher == "accelerate":
        if recipe.distributed.nodes > 1 and recipe.generation == "vllm-server":
            raise UserError("vllm-server over several nodes needs --launcher slurm (or one node)")
        text = single_node_command(recipe, model, args)
        if cfg.dry_run:
            return text
        cfg.output.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]launching[/]: {text}")
        code = subprocess.call(text, shell=True)
        if code:
            raise SystemExit(code)
        return text
    script = slurm_rl_script(recipe, model, args, cfg.output)
    if cfg.dry_run:
        return script
    return write_sbatch(script, cfg.output / "rl.sbatch", cfg.submit)


