"""Teachers: one small protocol, backends registered by name and imported lazily.

A backend turns requests (a chat + which sample indices to draw) into finished samples,
yielded as soon as each request finishes, in any order. `generate.py` owns everything else
(prompts, records, shards, resume), so a backend is only the transport to a model.

Backends register by name, like simonw/llm's plugins: the two shipped ones below, any added
with `register_backend("name", "package.module:Factory")`, and any an installed package
declares under the `distill.backends` entry-point group. A profile names one in `backend:`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from distill.errors import UserError

if TYPE_CHECKING:  # profile.py imports this package for the registry
    from distill.teachers.profile import TeacherProfile


@dataclass
class Request:
    key: str  # problem_id
    messages: list[dict[str, str]]
    sample_indices: list[int]  # draw len() samples, recorded under these indices
    prefill: str = ""  # text the response is forced to begin with (R1: prompts.PREFILL)


@dataclass
class Sample:
    key: str
    sample_index: int
    text: str  # what the model produced after the prompt (and after the prefill, if any)
    finish_reason: str  # stop | length | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefilled: str = ""  # the prefill the prompt ended with ("" when the backend cannot prefill)
    reasoning: str | None = None  # separate reasoning channel (reasoning_content), if any
    error: str | None = None


class Teacher(Protocol):
    model_name: str

    def generate(self, requests: Iterable[Request]) -> Iterator[list[Sample]]:
        """Yield the samples of each request once all of them are finished. A backend with
        `idle_requests = True` also takes None from `requests`: nothing to ask right now (the
        adaptive sampler of `--until-correct` is waiting for verdicts), keep going and ask
        again; others get a new stream when the sampler has more."""
        ...

    def close(self) -> None: ...


def teacher_status(teacher: Teacher) -> str:
    """Backend-specific progress (requests in flight, failures), when the backend has any."""
    status = getattr(teacher, "status", None)
    return status() if callable(status) else ""


# name -> "module:factory"; imported only when used, so `distill --help` stays instant.
BACKENDS: dict[str, str] = {
    "vllm": "distill.teachers.vllm_engine:VLLMTeacher",
    "openai": "distill.teachers.openai_server:OpenAITeacher",
}


def register_backend(name: str, target: str) -> None:
    """Add a backend ("package.module:Factory"); the factory takes a TeacherProfile."""
    if ":" not in target:
        raise ValueError(f"backend target must be 'module:Factory', got {target!r}")
    BACKENDS[name] = target


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="distill.backends")}


def backend_names() -> list[str]:
    return sorted({**_entry_points(), **BACKENDS})


def make_teacher(profile: TeacherProfile) -> Teacher:
    target = BACKENDS.get(profile.backend) or _entry_points().get(profile.backend)
    if target is None:
        raise UserError(
            f"teacher '{profile.name}': unknown backend '{profile.backend}' "
            f"(known: {', '.join(backend_names())})"
        )
    module, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    return factory(profile)
