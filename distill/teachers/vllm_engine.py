"""The vLLM backend: the teacher runs in-process (or as data-parallel replicas).

Requests stream through one engine: prompts are queued in large batches and every finished
request is handed back at once, so shards are written while the engine stays full (a chunked
`LLM.generate` would idle the batch on each chunk's longest trace). vLLM types stay in this
module; what leaves it are plain `Sample`s.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import queue
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distill.config import check_model_ref, from_dict, to_dict
from distill.errors import UserError
from distill.log import stderr_to_log
from distill.prompts import render_prompt
from distill.reaper import reap_children_on_exit
from distill.teachers import Request, Sample
from distill.teachers.profile import SamplingConfig, TeacherProfile

log = logging.getLogger(__name__)

_END = object()
QUEUE_SEQS = 4096  # sequences kept queued in the engine: enough to keep any batch full
ENQUEUE_BATCH = 256  # requests rendered and handed to vLLM per call


def engine_kwargs(profile: TeacherProfile) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for a profile (unset options stay vLLM's defaults)."""
    e = profile.engine
    kw: dict[str, Any] = {
        "model": profile.model,
        "tensor_parallel_size": e.tensor_parallel_size,
        "pipeline_parallel_size": e.pipeline_parallel_size,
        "dtype": e.dtype,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "enable_prefix_caching": e.enable_prefix_caching,
        "enforce_eager": e.enforce_eager,
        "trust_remote_code": e.trust_remote_code,
        "kv_cache_dtype": e.kv_cache_dtype,
        "seed": e.seed,
    }
    optional = {
        "tokenizer": profile.tokenizer,
        "max_model_len": e.max_model_len,
        "max_num_seqs": e.max_num_seqs,
        "max_num_batched_tokens": e.max_num_batched_tokens,
        "quantization": e.quantization,
        "distributed_executor_backend": e.distributed_executor_backend,
    }
    kw.update({k: v for k, v in optional.items() if v is not None})
    kw.update(e.extra)
    return kw


def sampling_kwargs(s: SamplingConfig, n: int) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams`; max_tokens is always set (vLLM's is 16)."""
    kw: dict[str, Any] = {
        "n": n,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
    }
    optional = {
        "top_k": s.top_k,
        "min_p": s.min_p,
        "repetition_penalty": s.repetition_penalty,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "seed": s.seed,
    }
    kw.update({k: v for k, v in optional.items() if v is not None})
    if s.stop:
        kw["stop"] = list(s.stop)
    return kw


def load_chat_template(value: str | None) -> str | None:
    if value and "{" not in value and Path(value).is_file():
        return Path(value).read_text(encoding="utf-8")
    return value


def _take(it: Iterator[Request | None], k: int) -> tuple[list[Request], bool]:
    """Up to k requests and whether the source is exhausted; None means 'nothing now'."""
    batch: list[Request] = []
    for req in it:
        if req is None:
            return batch, False
        batch.append(req)
        if len(batch) == k:
            return batch, False
    return batch, True


class Engine:
    """One vLLM engine that streams finished requests back as plain samples."""

    def __init__(self, profile: TeacherProfile):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        with stderr_to_log():  # vLLM's import and engine start-up notices: the log file
            self._start(profile)

    def _start(self, profile: TeacherProfile) -> None:
        import vllm
        from vllm import LLM

        if not hasattr(LLM, "enqueue"):  # the streaming loop below needs it (vLLM PR #33195)
            raise UserError(f"vLLM {vllm.__version__} has no LLM.enqueue: install vllm>=0.17")
        reap_children_on_exit()

        self.profile = profile
        self.model_name = profile.model
        # vLLM reads this when the engine is built. On a CPU an engine core in this process
        # saves spawning one that imports torch and vLLM again (a start of 13 s instead of 36
        # on 2 cores, benchmarks/engine_process.py) and the 5 s its shutdown waits for it; on
        # a GPU the extra process overlaps scheduling and detokenisation with the GPU's work.
        own_process = profile.engine.multiprocessing
        if own_process is None:
            from vllm.platforms import current_platform

            own_process = not current_platform.is_cpu()
        previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if own_process else "0"
        try:
            self.llm = LLM(**engine_kwargs(profile))
        finally:
            if previous is None:
                del os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"]
            else:
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous
        self.tokenizer = self.llm.get_tokenizer()
        template = load_chat_template(profile.chat_template)
        if template:
            self.tokenizer.chat_template = template
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(
                f"{profile.model}: the tokenizer has no chat template; set 'chat_template' in "
                "the teacher profile (inline Jinja or a file path)"
            )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def _params(self, n: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(**sampling_kwargs(self.profile.sampling, n))

    def _enqueue(self, batch: list[Request], pending: dict[str, Request]) -> list[list[Sample]]:
        """Hand a batch to vLLM; prompts that cannot fit come back at once as error samples."""
        prompts, params, accepted, rejected = [], [], [], []
        for req in batch:
            text = render_prompt(self.tokenizer, req.messages, req.prefill)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) >= self.max_model_len:
                msg = f"prompt is {len(ids)} tokens; max_model_len is {self.max_model_len}"
                rejected.append(
                    [
                        Sample(req.key, i, "", "error", len(ids), 0, req.prefill, error=msg)
                        for i in req.sample_indices
                    ]
                )
                continue
            prompts.append({"prompt_token_ids": ids})
            params.append(self._params(len(req.sample_indices)))
            accepted.append(req)
        if prompts:
            ids = self.llm.enqueue(prompts, params, use_tqdm=False)
            # enqueue returns internal ids ("7-1a2b3c4d"); outputs carry the external "7".
            external = [re.sub(r"-[0-9a-f]{8}$", "", i) for i in ids]
            pending.update(zip(external, accepted, strict=True))
        return rejected

    def stream(self, requests: Iterable[Request | None]) -> Iterator[list[Sample]]:
        it = iter(requests)
        engine = self.llm.llm_engine
        pending: dict[str, Request] = {}
        queued = 0  # sequences in the engine
        exhausted = False
        while True:
            while not exhausted and queued < QUEUE_SEQS:
                batch, exhausted = _take(it, ENQUEUE_BATCH)
                if not batch:
                    break  # the source has nothing right now (data-parallel queue)
                yield from self._enqueue(batch, pending)
                queued = sum(len(r.sample_indices) for r in pending.values())
            if not engine.has_unfinished_requests():
                if exhausted:
                    return
                continue
            for out in engine.step():
                if not out.finished:
                    continue
                req = pending.pop(out.request_id)
                queued -= len(req.sample_indices)
                prompt_tokens = len(out.prompt_token_ids or [])
                yield [
                    Sample(
                        key=req.key,
                        sample_index=req.sample_indices[c.index],
                        text=c.text,
                        finish_reason=c.finish_reason
                        if c.finish_reason in ("stop", "length")
                        else "error",
                        prompt_tokens=prompt_tokens,
                        completion_tokens=len(c.token_ids),
                        prefilled=req.prefill,
                        error=None
                        if c.finish_reason in ("stop", "length")
                        else f"vLLM finish_reason {c.finish_reason}",
                    )
                    for c in sorted(out.outputs, key=lambda c: c.index)
                ]

    def close(self) -> None:
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del self.llm
        gc.collect()


def _dp_worker(
    rank: int, profile: dict[str, Any], devices: list[str], tasks: Any, results: Any
) -> None:
    """A data-parallel replica: its own GPUs, pulling requests from the shared queue."""
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)

    try:
        engine = Engine(from_dict(TeacherProfile, profile, "profile"))
    except BaseException as e:
        results.put(("failed", rank, f"{type(e).__name__}: {e}"))
        return
    results.put(("ready", rank, None))

    def pull() -> Iterator[Request | None]:
        # Never block while the engine has work: a stalled step would idle the replica.
        while True:
            busy = engine.llm.llm_engine.has_unfinished_requests()
            try:
                req = tasks.get(block=not busy, timeout=None if busy else 1.0)
            except queue.Empty:
                yield None
                continue
            if req is None:
                return
            yield req

    for samples in engine.stream(pull()):
        results.put(("samples", rank, samples))
    results.put(("done", rank, None))
    engine.close()


class VLLMTeacher:
    """The `vllm` backend: one engine, or `data_parallel_size` replicas in subprocesses."""

    idle_requests = True  # a None in the request stream means "nothing to ask now"

    def __init__(self, profile: TeacherProfile):
        check_model_ref(profile.model)  # before an engine (or a replica) starts on it
        self.profile = profile
        self.model_name = profile.model
        self.replicas = profile.engine.data_parallel_size
        if self.replicas == 1:
            self.engine: Engine | None = Engine(profile)
            return
        self.engine = None
        reap_children_on_exit()
        ctx = mp.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        per = profile.engine.tensor_parallel_size * profile.engine.pipeline_parallel_size
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(per * self.replicas)]
        data = to_dict(profile)
        data["engine"]["data_parallel_size"] = 1
        self.procs = [
            ctx.Process(
                target=_dp_worker,
                args=(r, data, devices[r * per : (r + 1) * per], self.tasks, self.results),
                daemon=False,
            )
            for r in range(self.replicas)
        ]
        for p in self.procs:
            p.start()
        for _ in range(self.replicas):
            kind, rank, err = self._get()
            if kind == "failed":
                self.close()
                raise RuntimeError(f"data-parallel replica {rank} failed to start: {err}")

    def _get(self) -> tuple[str, int, Any]:
        while True:
            try:
                return self.results.get(timeout=5)
            except queue.Empty:
                dead = [i for i, p in enumerate(self.procs) if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"data-parallel replica {dead[0]} died") from None

    def generate(self, requests: Iterable[Request]) -> Iterator[list[Sample]]:
        if self.engine is not None:
            yield from self.engine.stream(requests)
            return
        # Replicas pull from one queue, so a fast replica takes more work (no static split);
        # the queue is kept short so a kill loses little and memory stays bounded.
        it = iter(requests)
        outstanding, done = 0, 0
        exhausted = False
        while done < self.replicas:
            while not exhausted and outstanding < QUEUE_SEQS * self.replicas:
                req = next(it, _END)
                if req is None:  # nothing to ask now: results of what is out come first
                    if outstanding:
                        break
                    continue
                if req is _END:
                    exhausted = True
                    for _ in range(self.replicas):
                        self.tasks.put(None)
                    break
                self.tasks.put(req)
                outstanding += len(req.sample_indices)
            kind, _, payload = self._get()
            if kind == "samples":
                outstanding -= len(payload)
                yield payload
            elif kind == "done":
                done += 1

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
            return
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
