"""The RL recipe (the model, template, rewards, set-up and TRL's GRPOConfig fields) and the
run config of `distill rl`, with the checks that fail a typo before any GPU is touched."""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.config import (
    load_recipe_file,
    option,
    shipped,
)
from distill.errors import UserError
from distill.prompts import (
    PREFILL,
)
from distill.rewards import (
    STYLES,
)
from distill.students.recipe import DistributedConfig, convert_sft_value, parse_trl_args, trl_fields
from distill.verify import VerifyConfig

log = logging.getLogger(__name__)


RECIPES_DIR = Path(__file__).parent / "recipes"
Template = Literal["r1", "r1-zero", "plain"]
Generation = Literal["transformers", "vllm-colocate", "vllm-server"]
REWARDS = ("accuracy", "format", "language", "overlong", "reward_model")
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
    reward_model: float = option(
        0.0,
        flag="reward-model-weight",
        help="Weight of the reward model's score (--reward-model) on prompts without a reference.",
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
    reward_model: str | None = option(
        None,
        help="A reward model (Hub id or path of a sequence-classification model with one output, "
        "as TRL's reward_funcs takes) scoring the prompts that have no reference: R1's RL for "
        "all scenarios; the rule rewards score the others.",
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
        if self.reward_model and not self.rewards.reward_model:
            raise ValueError("a reward model with weight 0: set --reward-model-weight")
        if self.rewards.reward_model and not self.reward_model:
            raise ValueError("--reward-model-weight without a model: set --reward-model")

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
    return load_recipe_file(RLRecipe, name_or_path, RECIPES_DIR, "rl recipe", extra, overrides)


def grpo_fields() -> dict[str, dataclasses.Field]:
    from trl import GRPOConfig

    return trl_fields(GRPOConfig)


def parse_grpo_args(args: list[str]) -> dict[str, Any]:
    """`--learning_rate 1e-6 --num-generations=8 --use_liger_kernel` -> typed GRPOConfig overrides."""
    if not args:
        return {}  # TRL takes seconds to import: not for a run without GRPOConfig flags
    fields = grpo_fields()
    message = "not a distill rl option nor a GRPOConfig field"
    return parse_trl_args(args, fields, lambda n: check_grpo_name(n, fields, f"--{n}: {message}"))


def check_grpo_name(name: str, fields: dict[str, Any], message: str) -> None:
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
        check_grpo_name(key, fields, f"{source}: unknown GRPOConfig field 'grpo.{key}'")
        out[key] = convert_sft_value(key, value, fields[key])
    return out


# --- the run ---------------------------------------------------------------------------------


@dataclass
class RLConfig:
    """What `distill rl` does; the recipe holds the hyperparameters."""

    data: str = option(
        help="Problems: the datasets `distill generate` takes (Hub id, file, built-in name) or "
        "a `distill filter` output (its problems, with their pass rates); several, "
        "comma-separated, are joined (reasoning prompts + general ones for --reward-model)."
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
    max_seconds: float | None = option(
        None,
        help="Stop training after this many seconds and save the model as at the last step (a "
        "compute budget, a Slurm time limit); --max-steps still sets the LR schedule's length.",
    )
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


