"""The rewards of `rewards.py` in TRL's calling convention, verification in one worker pool
for the whole run."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from distill.config import bundled
from distill.errors import UserError
from distill.prompts import split_trace
from distill.rewards import (
    Parsed,
    Score,
    accuracy_scores,
    format_score,
    language_score,
    overlong_score,
    parse,
)
from distill.rl.config import REWARDS, RLRecipe
from distill.verify import VerifyConfig

log = logging.getLogger(__name__)


# --- rewards as TRL calls them ---------------------------------------------------------------


def has_reference(row: dict[str, Any]) -> bool:
    """A reasoning prompt the rules can check, or a general one (no reference)."""
    return row.get("reference") not in (None, "", "null", '""')


class RunVerifier:
    """One `verify_rows` for the whole run (the adaptive sampler's `Verifier`: a background
    thread feeding one worker pool), so a training step pays for its checks, not for starting
    and warming up worker processes (about 0.5 s per call on 2 cores). Same checks, same hard
    timeouts per row."""

    def __init__(self, cfg: VerifyConfig):
        from distill.adaptive import Verifier
        from distill.filters.readability import RowChecksConfig

        self.verifier = Verifier(cfg, RowChecksConfig(checks=[]))  # correctness only
        self.count = 0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        keys: dict[str, str] = {}
        batch = []
        for row in rows:
            self.count += 1
            key = f"rl-{self.count}"
            keys[key] = row["id"]
            batch.append({**row, "id": key})
        self.verifier.submit(batch)
        out: dict[str, dict[str, Any]] = {}
        while len(out) < len(batch):
            key, checks = self.verifier.verdicts.get()
            if self.verifier.error is not None:
                raise self.verifier.error
            out[keys[key]] = checks
        return out

    def close(self) -> None:
        self.verifier.close()


class RewardFunction:
    """One rule reward in TRL's calling convention. Completions arrive without the prompt's
    prefill, so it is put back before parsing (the filter's parsers expect whole traces).
    TRL names the reward (logs: rewards/<name>/mean) after `__name__`."""

    def __init__(self, name: str, recipe: RLRecipe, verify: VerifyConfig, max_len: int):
        self.__name__ = name
        self.style = recipe.template
        self.prefill = recipe.effective_prefill
        self.verify = verify
        self.language_threshold = recipe.language_threshold
        self.max_len = max_len
        self.cache_tokens = recipe.overlong_cache or max(1, max_len // 4)
        self.verdicts: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.seconds = 0.0
        self.runner: RunVerifier | None = None  # started on the first batch

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def scores(self, completions: list[str], rows: list[dict[str, Any]], ids: list[list[int]]) -> list[Score]:  # fmt: skip
        parsed: list[Parsed] = [parse(self.prefill + c, self.style) for c in completions]
        if self.__name__ == "accuracy":
            if self.runner is None:
                self.runner = RunVerifier(self.verify)
            return accuracy_scores(parsed, rows, self.verify, self.verdicts, self.runner)
        if self.__name__ == "format":  # a general prompt (no reference) has no format to keep
            return [format_score(p, self.style) if has_reference(r) else Score(None, "no_reference")
                    for p, r in zip(parsed, rows, strict=True)]  # fmt: skip
        if self.__name__ == "language":
            return [language_score(p, r["problem"], self.language_threshold) for p, r in zip(parsed, rows, strict=True)]  # fmt: skip
        return [overlong_score(len(i), self.max_len, self.cache_tokens) for i in ids]

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kw: Any) -> list[float | None]:  # fmt: skip
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        rows = [
            {
                "problem": kw["problem"][i],
                "domain": kw["domain"][i],
                "reference": kw["reference"][i],
            }
            for i in range(len(texts))
        ]
        started = time.perf_counter()
        scores = self.scores(texts, rows, completion_ids)
        self.seconds += time.perf_counter() - started
        log_metric = kw.get("log_metric")
        if log_metric is not None:  # what the reward path costs per step (benchmarks read it)
            log_metric(f"timing/{self.__name__}_s", time.perf_counter() - started)
        if log_metric is not None and self.__name__ == "accuracy":
            n = len(scores)
            log_metric("accuracy/pass_rate", sum(s.value == 1.0 for s in scores) / n)
            log_metric("accuracy/unparsed_rate", sum(s.reason == "no_answer" for s in scores) / n)
            log_metric("accuracy/verify_timeouts", float(sum(s.reason == "verify_timeout" for s in scores)))  # fmt: skip
        if log_metric is not None and self.__name__ == "format":
            log_metric("format/ok_rate", sum(s.value == 1.0 for s in scores) / len(scores))
        return [s.value for s in scores]


def reward_functions(recipe: RLRecipe, verify: VerifyConfig, max_len: int) -> tuple[list[Any], list[float]]:  # fmt: skip
    names = [r for r in REWARDS if getattr(recipe.rewards, r)]
    if recipe.template == "plain" and "format" in names:
        raise UserError("the plain template has no format to reward: set --format-weight 0")
    funcs: list[Any] = [
        RewardModelReward(recipe.reward_model or "", recipe.effective_prefill) if n == "reward_model"
        else RewardFunction(n, recipe, verify, max_len)
        for n in names
    ]  # fmt: skip
    return funcs, [float(getattr(recipe.rewards, n)) for n in names]




class RewardModelReward:
    """A reward model's score (a sequence-classification model with one output, as TRL's
    `reward_funcs` takes one) for prompts without a checkable answer: R1's RL for all scenarios
    scores general prompts with reward models and reasoning prompts with rules. Rows with a
    reference get None (TRL sums the other rewards for them). The model reads the conversation
    in its own chat template, and only the answer after the reasoning (R1 judged helpfulness
    "exclusively on the final summary")."""

    def __init__(self, model: str, prefill: str, max_length: int = 8192, batch_size: int = 8):
        self.__name__ = "reward_model"
        self.path, self.prefill = bundled(model), prefill
        self.max_length, self.batch_size = max_length, batch_size
        self.model: Any = None
        self.tokenizer: Any = None
        self.seconds = 0.0

    def close(self) -> None:
        self.model = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        gpu = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if gpu else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.path, num_labels=1, dtype=torch.bfloat16 if gpu else torch.float32
        ).to(self.device).eval()  # fmt: skip
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def text(self, problem: str, completion: str) -> str:
        _, answer = split_trace(self.prefill + completion)
        messages = [{"role": "user", "content": problem},
                    {"role": "assistant", "content": answer.strip() or completion}]  # fmt: skip
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{problem}\n\n{messages[1]['content']}"

    def scores(self, problems: list[str], completions: list[str], references: list[Any]) -> list[float | None]:  # fmt: skip
        import torch

        todo = [i for i, ref in enumerate(references) if not has_reference({"reference": ref})]
        out: list[float | None] = [None] * len(completions)
        if not todo:
            return out
        if self.model is None:
            self._load()
        for start in range(0, len(todo), self.batch_size):
            part = todo[start : start + self.batch_size]
            texts = [self.text(problems[i], completions[i]) for i in part]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=False).to(self.device)  # fmt: skip
            with torch.inference_mode():
                logits = self.model(**enc).logits[:, 0].float().tolist()
            for i, value in zip(part, logits, strict=True):
                out[i] = value
        return out

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kw: Any) -> list[float | None]:  # fmt: skip
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        started = time.perf_counter()
        values = self.scores(list(kw["problem"]), texts, list(kw["reference"]))
        self.seconds += time.perf_counter() - started
        if kw.get("log_metric") is not None:
            kw["log_metric"]("timing/reward_model_s", time.perf_counter() - started)
        return values
