"""The `openai` backend: a served teacher behind an OpenAI-compatible API.

`vllm serve` or SGLang on a cluster, or the DeepSeek API (`deepseek-reasoner`, whose chain of
thought arrives in `reasoning_content`). Requests run concurrently on the openai SDK's
AsyncOpenAI (its timeout machinery; retries are ours: jittered exponential backoff that honours
Retry-After and waits longer than the SDK would, since a 10-hour run outlives a rate-limit
window). A request that still fails becomes `error` samples that a rerun retries. The API key
is read from the environment variable the profile names and never leaves the client.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from distill.teachers import Request, Sample
from distill.teachers.profile import TeacherProfile

log = logging.getLogger(__name__)
_DONE = object()
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


class OpenAITeacher:
    idle_requests = True  # a None in the request stream means "nothing to ask now"

    def __init__(self, profile: TeacherProfile):
        self.profile = profile
        self.server = profile.server
        self.model_name = profile.model
        self._key = self.server.api_key()  # fails before any work when the variable is unset
        self.in_flight = self.requests_done = self.failed = self.retries = self.clamped = 0

    def status(self) -> str:
        clamped = f", {self.clamped} max_tokens lowered" if self.clamped else ""
        return f"{self.in_flight} in flight, {self.requests_done} done, {self.failed} failed, {self.retries} retries{clamped}"

    def close(self) -> None:
        pass

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and self._key != "EMPTY" else text

    def generate(self, requests: Iterable[Request]) -> Iterator[list[Sample]]:
        """Run the async client in its own thread; hand finished requests back here."""
        out: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self._run(iter(requests), out, stop))
                out.put(_DONE)
            except BaseException as e:  # surfaced in the caller's thread
                out.put(e)

        thread = threading.Thread(target=run, name="openai-teacher", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=10)

    async def _run(
        self, requests: Iterator[Request], out: queue.Queue[Any], stop: threading.Event
    ) -> None:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(
            base_url=self.server.base_url,
            api_key=self._key,
            timeout=self.server.request_timeout,
            max_retries=0,  # retried below, with longer jittered backoff
        )
        calls = asyncio.Semaphore(self.server.max_concurrency)
        queued = asyncio.Semaphore(2 * self.server.max_concurrency)  # bounds what is read ahead
        tasks: set[asyncio.Task[None]] = set()

        async def one(req: Request) -> None:
            try:
                if self.server.n_per_request or len(req.sample_indices) == 1:
                    samples = await self._call(client, calls, req, req.sample_indices)
                else:
                    parts = await asyncio.gather(
                        *(self._call(client, calls, req, [i]) for i in req.sample_indices)
                    )
                    samples = [s for part in parts for s in part]
                out.put(samples)
            finally:
                queued.release()

        async with client:
            for req in requests:
                if stop.is_set():
                    break
                if req is None:  # nothing to ask now: let the requests in flight progress
                    await asyncio.sleep(0.005)
                    continue
                await queued.acquire()
                task = asyncio.create_task(one(req))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))

    def _kwargs(self, req: Request, n: int) -> dict[str, Any]:
        s = self.profile.sampling
        messages = list(req.messages)
        extra: dict[str, Any] = {}
        if self.server.continue_final_message and req.prefill:
            messages.append({"role": "assistant", "content": req.prefill})
            extra.update(continue_final_message=True, add_generation_prompt=False)
        kw: dict[str, Any] = {
            "model": self.profile.model,
            "messages": messages,
            "n": n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        for name in ("presence_penalty", "frequency_penalty", "seed"):
            if getattr(s, name) is not None:
                kw[name] = getattr(s, name)
        if s.stop:
            kw["stop"] = list(s.stop)
        for name in ("top_k", "min_p", "repetition_penalty"):  # vLLM / SGLang sampling extensions
            if getattr(s, name) is not None:
                extra[name] = getattr(s, name)
        extra.update(self.server.extra_body)
        if extra:
            kw["extra_body"] = extra
        return kw

    async def _call(
        self, client: Any, calls: asyncio.Semaphore, req: Request, indices: list[int]
    ) -> list[Sample]:
        import openai

        kwargs = self._kwargs(req, len(indices))
        prefilled = req.prefill if self.server.continue_final_message else ""
        attempt = -1
        while attempt < self.server.retries:
            attempt += 1
            retry_after = None
            try:
                async with calls:
                    self.in_flight += 1
                    try:
                        response = await client.chat.completions.create(**kwargs)
                    finally:
                        self.in_flight -= 1
                self.requests_done += 1
                return self._samples(req, indices, response, prefilled)
            except openai.APIStatusError as e:
                error = f"HTTP {e.status_code}: {self._redact(str(e))[:500]}"
                room = context_room(str(e)) if e.status_code == 400 else None
                if room is not None and 0 < room < kwargs["max_tokens"]:
                    # the prompt plus max_tokens overflow the server's context: ask for what fits
                    if not self.clamped:
                        log.warning("%s; max_tokens lowered to %d for such prompts",
                                    error.split(". Please")[0][:200], room)  # fmt: skip
                    self.clamped += 1
                    kwargs["max_tokens"] = room
                    attempt -= 1  # not a failure of the server: ask again at once
                    continue
                if e.status_code not in RETRYABLE_STATUS:
                    break
                retry_after = _retry_after(e)
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                error = f"{type(e).__name__}: {self._redact(str(e))[:500]}"
            if attempt < self.server.retries:
                self.retries += 1
                delay = min(self.server.backoff_max, 2.0**attempt) * random.uniform(0.5, 1.5)
                await asyncio.sleep(max(delay, min(retry_after or 0.0, self.server.backoff_max)))
        self.failed += 1
        log.debug("request %s failed: %s", req.key, error)
        return [Sample(req.key, i, "", "error", prefilled=prefilled, error=error) for i in indices]

    def _samples(
        self, req: Request, indices: list[int], response: Any, prefilled: str
    ) -> list[Sample]:
        choices = sorted(response.choices, key=lambda c: c.index)
        usage = response.usage
        texts = []
        for c in choices:
            msg = c.message
            reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
            texts.append((msg.content or "", reasoning or None, c.finish_reason))
        total = usage.completion_tokens if usage else 0
        shares = share_tokens(total, [len(t) + len(r or "") for t, r, _ in texts])
        samples = []
        for (text, reasoning, finish), i, tokens in zip(texts, indices, shares, strict=False):
            reason = finish if finish in ("stop", "length") else "error"
            samples.append(
                Sample(
                    key=req.key,
                    sample_index=i,
                    text=text,
                    finish_reason=reason,
                    prompt_tokens=usage.prompt_tokens if usage else 0,
                    completion_tokens=tokens,
                    prefilled=prefilled,
                    reasoning=reasoning,
                    error=None if reason != "error" else f"finish_reason {finish}",
                )
            )
        missing = indices[len(samples) :]  # a server that ignored n: the rest is retried later
        samples += [
            Sample(
                req.key,
                i,
                "",
                "error",
                prefilled=prefilled,
                error="server returned fewer choices than n",
            )
            for i in missing
        ]
        return samples


def share_tokens(total: int, sizes: list[int]) -> list[int]:
    """Split one usage count over n choices by text length (servers report one total).

    Every choice generated at least one token (its stop token if nothing else), and the
    shares add up to the total: plain rounding gave a short choice 0 tokens.
    """
    n = len(sizes)
    if n == 1:
        return [total]
    if total < n:  # no usage reported (0): nothing to share
        return [min(1, total)] * n
    weights = sizes if any(sizes) else [1] * n
    exact = [(total - n) * w / sum(weights) for w in weights]
    shares = [1 + int(x) for x in exact]
    # the tokens lost to flooring go to the largest remainders
    by_remainder = sorted(range(n), key=lambda j: exact[j] - int(exact[j]), reverse=True)
    for j in by_remainder[: total - sum(shares)]:
        shares[j] += 1
    return shares


CONTEXT = re.compile(r"maximum context length is (\d+)")
PROMPT = re.compile(
    r"(\d+) in the messages|request has (\d+) input tokens|(\d+) tokens from the input"
)


def context_room(message: str) -> int | None:
    """Tokens left for the completion, read from a server's context-overflow error (vLLM before
    it clamped by itself, SGLang, OpenAI-style servers); None if the message says neither."""
    total, prompt = CONTEXT.search(message), PROMPT.search(message)
    if not (total and prompt):
        return None
    used = next(int(g) for g in prompt.groups() if g)
    return int(total.group(1)) - used


def _retry_after(e: Any) -> float | None:
    try:
        value = e.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError, TypeError):
        return None
