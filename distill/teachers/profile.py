"""Teacher profiles: which model, which backend, engine settings, sampling, prompts.

A profile is a YAML file (shipped ones live in `teachers/profiles/`); every field can be
overridden from the command line, so any profile can point at a local checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import bundled, from_dict, load_yaml, option, override, shipped, shipped_yaml
from distill.errors import UserError
from distill.prompts import PromptTemplate, default_prompts
from distill.teachers import backend_names

PROFILES_DIR = Path(__file__).parent / "profiles"


@dataclass
class EngineConfig:
    """Engine settings, passed to `vllm.LLM` / `vllm serve`."""

    tensor_parallel_size: int = option(1, help="GPUs per model replica (tensor parallel).")
    pipeline_parallel_size: int = option(1, help="Pipeline stages (e.g. 2 nodes for DeepSeek-R1).")
    data_parallel_size: int = option(
        1, help="Independent engine replicas; each gets tp x pp GPUs and a share of the requests."
    )
    distributed_executor_backend: str | None = option(
        None, help="'ray' for multi-node (pipeline parallel across nodes), 'mp' for one node."
    )
    max_model_len: int | None = option(None, help="Context length (prompt + completion).")
    dtype: str = option("auto", help="Model dtype: auto, bfloat16, float16, float32.")
    gpu_memory_utilization: float = option(
        0.9, help="Share of GPU memory for weights + KV cache (on CPU: share of RAM for KV cache)."
    )
    enable_prefix_caching: bool = option(
        True, help="Reuse the KV cache of shared prompt prefixes (the n samples of a problem)."
    )
    max_num_seqs: int | None = option(None, help="Most sequences decoded at once.")
    max_num_batched_tokens: int | None = option(None, help="Token budget of one engine step.")
    enforce_eager: bool = option(False, help="Skip CUDA graphs / torch.compile (faster start).")
    multiprocessing: bool | None = option(
        None,
        help="vLLM's engine core in a process of its own (vLLM's default; on a GPU its "
        "scheduling overlaps the GPU's work). Unset: its own process on a GPU, this process on "
        "a CPU, where that starts ~22 s sooner and closes ~4 s sooner.",
    )
    quantization: str | None = option(None, help="Weight quantization, e.g. fp8, awq.")
    kv_cache_dtype: str = option("auto", help="KV cache dtype, e.g. fp8 to fit longer traces.")
    trust_remote_code: bool = option(False, help="Allow model code from the Hub repo.")
    seed: int = option(0, help="Engine seed (vLLM on CPU cannot seed single requests).")
    extra: dict[str, Any] = option(
        default_factory=dict, help="Other vllm.LLM keyword arguments, passed as they are."
    )
    serve_args: list[str] = option(
        default_factory=list,
        help="Extra `vllm serve` arguments for `distill serve`, e.g. --reasoning-parser deepseek_r1.",
    )


@dataclass
class SamplingConfig:
    """Sampling parameters; R1 defaults: temperature 0.6, top_p 0.95, 32k new tokens."""

    temperature: float = option(0.6, help="Sampling temperature (R1: 0.6).")
    top_p: float = option(0.95, help="Nucleus sampling (R1: 0.95).")
    top_k: int | None = option(None, help="Top-k sampling (unset: off).")
    min_p: float | None = option(None, help="Min-p sampling (unset: off).")
    max_tokens: int = option(32768, help="Most new tokens per sample (R1: 32768).")
    repetition_penalty: float | None = option(None, help="Repetition penalty (unset: 1.0).")
    presence_penalty: float | None = option(None, help="Presence penalty (unset: 0).")
    frequency_penalty: float | None = option(None, help="Frequency penalty (unset: 0).")
    stop: list[str] = option(default_factory=list, help="Extra stop strings.")
    seed: int | None = option(None, flag="sampling-seed", help="Per-request seed (not on CPU).")

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("sampling.max_tokens must be >= 1")
        if not 0 < self.top_p <= 1:
            raise ValueError("sampling.top_p must be in (0, 1]")
        if self.temperature < 0:
            raise ValueError("sampling.temperature must be >= 0")


@dataclass
class ServerConfig:
    """The `openai` backend: any OpenAI-compatible endpoint (vllm serve, SGLang, DeepSeek API)."""

    base_url: str = option("http://127.0.0.1:8000/v1", help="Endpoint URL, up to /v1.")
    api_key_env: str | None = option(
        None,
        help="Name of the environment variable holding the API key (the key itself never "
        "goes in a profile, log or output).",
    )
    max_concurrency: int = option(64, help="Requests in flight at once.")
    request_timeout: float = option(1800.0, help="Seconds before one request times out.")
    retries: int = option(
        6, help="Retries of a failed request (429, 5xx, timeouts, dropped connections)."
    )
    backoff_max: float = option(120.0, help="Longest wait between retries, in seconds.")
    n_per_request: bool = option(
        True,
        help="Ask for all samples of a problem in one request (n); off: one request per sample.",
    )
    continue_final_message: bool = option(
        False,
        help="Send the prefill as an assistant message to continue (vLLM's "
        "continue_final_message); off: the server's template decides how the answer starts.",
    )
    extra_body: dict[str, Any] = option(
        default_factory=dict,
        help="Extra JSON fields for every request (e.g. top_k, chat_template_kwargs).",
    )

    def api_key(self) -> str:
        """The key from the environment; servers without auth get a placeholder."""
        if not self.api_key_env:
            return "EMPTY"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise UserError(
                f"the environment variable {self.api_key_env} (server.api_key_env) is not set"
            )
        return key


@dataclass
class TeacherProfile:
    """A teacher: model + backend + engine + sampling + prompts."""

    model: str = option(help="Model: Hub id or local path (served model name for 'openai').")
    name: str = option("custom", help="Profile name, recorded in manifests.", cli=False)
    backend: str = option(
        "vllm", help="Teacher backend: vllm, openai, or one registered with register_backend."
    )
    tokenizer: str | None = option(None, help="Tokenizer, when not the model's own.")
    chat_template: str | None = option(
        None, help="Jinja chat template (inline or a file path) for models without one."
    )
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    prompts: dict[str, PromptTemplate] = option(
        default_factory=default_prompts, help="Prompt template per domain.", cli=False
    )

    def __post_init__(self) -> None:
        known = backend_names()
        if self.backend not in known:
            raise ValueError(f"unknown backend '{self.backend}' (known: {', '.join(known)})")

    def prompt_for(self, domain: str) -> PromptTemplate:
        if domain not in self.prompts:
            raise UserError(f"teacher '{self.name}': no prompt template for domain '{domain}'")
        return self.prompts[domain]


def shipped_profiles() -> list[str]:
    return shipped(PROFILES_DIR)


def load_profile(name_or_path: str, overrides: dict[str, Any] | None = None) -> TeacherProfile:
    """A shipped profile by name or a YAML file by path, then overrides (dotted keys)."""
    path = shipped_yaml(name_or_path, PROFILES_DIR, "teacher profile")
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    prompts = data.get("prompts")
    if isinstance(prompts, dict):
        # A profile's prompts refine the defaults domain by domain.
        defaults = {k: vars(v) for k, v in default_prompts().items()}
        for domain, tpl in prompts.items():
            if isinstance(tpl, dict):
                defaults[domain] = {**defaults.get(domain, {}), **tpl}
            else:
                defaults[domain] = tpl
        data["prompts"] = defaults
    profile = from_dict(TeacherProfile, data, str(path))
    profile.model = bundled(profile.model)
    return override(profile, overrides or {})
