"""Student recipes: the base model, TRL SFTConfig fields, the distributed set-up, the template.

Shipped recipes (`students/recipes/*.yaml`) cover the six R1 students plus `tiny`; each cites
where its numbers come from. Any field can be overridden (`--config extra.yaml`, flags, and
any SFTConfig field as `--<field> VALUE`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.config import (
    load_recipe_file,
    option,
    shipped,
    type_name,
)
from distill.errors import UserError

HERE = Path(__file__).parent
RECIPES_DIR = HERE / "recipes"
TEMPLATES_DIR = HERE / "templates"
ACCELERATE_DIR = HERE / "accelerate"
Strategy = Literal["single", "ddp", "zero3", "zero3_offload", "fsdp2"]


@dataclass
class DistributedConfig:
    """How the training is spread: the strategy and the machines it was written for."""

    strategy: Strategy = option("single", help="single, ddp, zero3, zero3_offload or fsdp2.")
    nodes: int = option(1, help="Machines.")
    gpus_per_node: int = option(1, help="GPUs per machine.")


@dataclass
class LoraSettings:
    """LoRA / QLoRA adapters (peft), for users with one GPU."""

    r: int = option(16, help="LoRA rank.", flag="lora-r")
    alpha: int = option(32, help="LoRA alpha.", flag="lora-alpha")
    dropout: float = option(0.05, help="LoRA dropout.", flag="lora-dropout")
    target_modules: list[str] = option(
        default_factory=lambda: ["all-linear"], help="Modules that get adapters.", cli=False
    )


@dataclass
class StudentRecipe:
    base_model: str = option(
        help="Hub id or path of the model to fine-tune ('assets/...': a bundled model)."
    )
    name: str = option("custom", help="Recipe name.", cli=False)
    params_b: float = option(0.0, help="Parameters in billions (for memory estimates).", cli=False)
    chat_template: str = option(
        "qwen-think", help="Training chat template: qwen-think, llama3-think or a .jinja file."
    )
    eos_token: str | None = option(None, help="End-of-turn token the model learns to emit.")
    pad_token: str | None = option(None, help="Pad token; must differ from eos.")
    torch_dtype: str = option("bfloat16", help="Weights dtype while training.")
    attn_implementation: str = option(
        "flash_attention_2", help="Attention kernel; it must respect packed-sample boundaries."
    )
    model_config: dict[str, Any] = option(
        default_factory=dict, help="Overrides of the model config (e.g. rope_theta).", cli=False
    )
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    memory_per_gpu: str = option("", help="Documented memory need per GPU.", cli=False)
    sft: dict[str, Any] = option(default_factory=dict, help="TRL SFTConfig fields.", cli=False)
    lora: LoraSettings = field(default_factory=LoraSettings)


def shipped_recipes() -> list[str]:
    return shipped(RECIPES_DIR)


def template_text(name: str) -> str:
    path = TEMPLATES_DIR / f"{name}.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if Path(name).is_file():
        return Path(name).read_text(encoding="utf-8")
    known = ", ".join(p.stem for p in TEMPLATES_DIR.glob("*.jinja"))
    raise UserError(
        f"chat_template: unknown template '{name}' (shipped: {known}; or a .jinja file)"
    )


def load_recipe(
    name_or_path: str, extra: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
) -> StudentRecipe:
    """A shipped recipe by name or a YAML path; `extra` (--config) merges in, then dotted
    `overrides` (flags)."""
    return load_recipe_file(StudentRecipe, name_or_path, RECIPES_DIR, "student recipe", extra, overrides)


def trl_fields(config: type) -> dict[str, dataclasses.Field]:
    """The init fields of a TRL config dataclass (SFTConfig, GRPOConfig): what flags may set."""
    return {f.name: f for f in dataclasses.fields(config) if f.init}


def sft_fields() -> dict[str, dataclasses.Field]:
    from trl import SFTConfig

    return trl_fields(SFTConfig)


def parse_trl_args(
    args: list[str], fields: dict[str, dataclasses.Field], check: Callable[[str], None]
) -> dict[str, Any]:
    """`--learning_rate 1e-5 --packing --num-train-epochs=3` -> typed TRL config overrides;
    `check(name)` raises for a name that may not be set."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}")
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        check(name)
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        out[name] = convert_sft_value(name, value, fields[name])
        i += 1
    return out


def parse_sft_args(args: list[str]) -> dict[str, Any]:
    """`--learning_rate 1e-5 --packing --num-train-epochs=3` -> typed SFTConfig overrides."""
    fields = sft_fields()

    def check(name: str) -> None:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise UserError(f"--{name}: not a distill train option nor an SFTConfig field{hint}")

    return parse_trl_args(args, fields, check)


def convert_sft_value(name: str, value: Any, f: dataclasses.Field) -> Any:
    """Strings from the command line (or YAML) to the SFTConfig field's type."""
    if not isinstance(value, str):
        return value
    tp = str(f.type)
    try:
        if tp.startswith("bool") or tp == "<class 'bool'>":
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if "float" in tp and "str" not in tp:
            return float(value)
        if tp.startswith("int") or tp == "<class 'int'>":
            return int(value)
    except ValueError:
        shown = f.type if isinstance(f.type, str) else type_name(f.type)
        raise UserError(f"--{name}: expected {shown}, got {value!r}") from None
    if "dict" in tp and value.startswith("{"):
        import json

        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise UserError(f"--{name}: expected a JSON object, got {value!r}") from None
    return value


def validate_sft(sft: dict[str, Any], source: str) -> dict[str, Any]:
    """Unknown SFTConfig keys are errors, with a suggestion; values are converted."""
    fields = sft_fields()
    out = {}
    for key, value in sft.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{source}: unknown SFTConfig field 'sft.{key}'{hint}")
        out[key] = convert_sft_value(key, value, fields[key])
    return out
