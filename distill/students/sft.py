"""SFT on TRL: the one module where TRL and transformers types live.

The student's tokenizer gets the training chat template (reasoning kept in the target, the
`<think>\\n` prefill on the prompt side, loss on the assistant turn and its end-of-turn token),
an eos it learns to emit and a pad token that differs from it. Examples arrive tokenized with
their assistant masks (students/data.py); TRL builds the labels from them, packs them (bfd,
padding-free) and trains.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from distill import hub
from distill.cards import write_model_card
from distill.config import bundled
from distill.errors import UserError
from distill.records import atomic_write_json
from distill.students.data import build_dataset
from distill.students.recipe import StudentRecipe, template_text, validate_sft

log = logging.getLogger(__name__)


def load_tokenizer(model_path: str, recipe: StudentRecipe) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = template_text(recipe.chat_template)
    if recipe.eos_token:
        if recipe.eos_token not in tok.get_vocab():
            raise UserError(
                f"eos_token {recipe.eos_token!r} is not in the vocabulary of {model_path}"
            )
        tok.eos_token = recipe.eos_token
    if recipe.pad_token:
        if recipe.pad_token not in tok.get_vocab():
            raise UserError(
                f"pad_token {recipe.pad_token!r} is not in the vocabulary of {model_path}"
            )
        tok.pad_token = recipe.pad_token
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # pad == eos masks the eos out of the loss: the model never learns to stop (open-r1 #492)
        raise UserError(
            f"{model_path}: the pad token must differ from eos ({tok.eos_token!r}); set pad_token in the recipe"
        )
    return tok


def load_model(model_path: str, recipe: StudentRecipe, fresh: bool = False) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, recipe.torch_dtype)
    config = AutoConfig.from_pretrained(model_path)
    for key, value in recipe.model_config.items():
        setattr(config, key, value)
    config.use_cache = (
        False  # a KV cache during training also hides packed-sample boundaries from the mask
    )
    if fresh:
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=recipe.attn_implementation
        )
    return AutoModelForCausalLM.from_pretrained(
        model_path, config=config, dtype=dtype, attn_implementation=recipe.attn_implementation
    )


def model_source(recipe: StudentRecipe, model: str | None) -> str:
    """The checkpoint to fine-tune: --model, else the recipe's base model."""
    return bundled(model or recipe.base_model)


def sft_args(recipe: StudentRecipe, output: Path, sft_overrides: dict[str, Any], lora: bool) -> Any:
    from trl import SFTConfig

    fields = {**validate_sft(recipe.sft, f"recipe {recipe.name}"), **sft_overrides}
    fields.update(
        output_dir=str(output),
        # labels come from our assistant masks (the dataset is tokenized already): TRL's own
        # assistant_only_loss would want raw conversations
        assistant_only_loss=False,
        completion_only_loss=False,
        include_num_input_tokens_seen="non_padding",
    )
    if lora and "learning_rate" not in sft_overrides:
        fields["learning_rate"] = max(
            fields.get("learning_rate", 1e-4), 1e-4
        )  # adapters want a larger step
    try:
        return SFTConfig(**fields)
    except (ValueError, TypeError) as e:
        raise UserError(f"SFTConfig: {e}") from None


class SummaryCallback:
    """Collects tokens seen, throughput and losses for the closing summary and stats.json."""

    def __init__(self) -> None:
        self.started = time.time()
        self.losses: list[float] = []
        self.tokens = 0
        self.step = 0

    def bind(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_log(
                self,
                args: Any,
                state: Any,
                control: Any,
                logs: dict[str, Any] | None = None,
                **kw: Any,
            ) -> None:
                if logs and "loss" in logs:
                    outer.losses.append(float(logs["loss"]))
                outer.tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
                outer.step = state.global_step

        return _Callback()


def checkpoint_pusher(repo: str, private: bool) -> Any:
    """Uploads each saved checkpoint to a Hub revision `step-NNNNNN`, in the background."""
    from transformers import TrainerCallback

    class _Push(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    hub.push_checkpoint(folder, repo, state.global_step, private=private)

    return _Push()


def run_sft(recipe: StudentRecipe, data: str, output: Path, model: str | None, sft_overrides: dict[str, Any],
            lora: bool, qlora: bool, resume: bool, push_to_hub: str | None, private: bool) -> dict[str, Any]:  # fmt: skip
    """Train; returns the run summary (also written to OUTPUT/stats.json)."""
    from accelerate import PartialState
    from trl import SFTTrainer

    path = model_source(recipe, model)
    args = sft_args(recipe, output, sft_overrides, lora or qlora)
    tok = load_tokenizer(path, recipe)
    with PartialState().main_process_first():  # rank 0 tokenizes, the others read its cache
        dataset, counts = build_dataset(tok, data, args.max_length, num_proc=args.dataset_num_proc)
    log.info(
        "%d examples (%d tokens), %d dropped for length",
        counts["kept"],
        counts["tokens"],
        counts["dropped_too_long"],
    )
    model_obj = load_model(path, recipe) if not qlora else _quantized(path, recipe)
    peft_config = _lora_config(recipe) if (lora or qlora) else None
    summary = SummaryCallback()
    callbacks = [summary.bind()]
    if push_to_hub:
        callbacks.append(checkpoint_pusher(push_to_hub, private))
    trainer = SFTTrainer(
        model=model_obj,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    last = _last_checkpoint(output) if resume else None
    if resume and last is None:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", output)
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    trainer.save_model(str(output))
    stats = {
        "examples": counts["kept"],
        "dropped_too_long": counts["dropped_too_long"],
        "tokens_seen": summary.tokens,
        "steps": result.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
        "tokens_per_s": round(
            summary.tokens / max(result.metrics.get("train_runtime", 0.0), 1e-9), 1
        ),
        "final_loss": summary.losses[-1] if summary.losses else round(result.training_loss, 4),
        "first_loss": summary.losses[0] if summary.losses else None,
        "resumed_from": str(last) if last else None,
    }
    if trainer.is_world_process_zero():
        _finalize(output, tok, trainer, recipe, stats)
    return stats


def _finalize(
    output: Path,
    tok: Any,
    trainer: Any,
    recipe: StudentRecipe,
    stats: dict[str, Any],
) -> None:
    """Tokenizer with the inference template, generation config that stops at eos, card, stats."""
    from transformers import GenerationConfig

    tok.save_pretrained(str(output))
    gen = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=True, temperature=0.6, top_p=0.95,
        max_new_tokens=recipe.sft.get("max_length", 32768),
    )  # fmt: skip
    gen.save_pretrained(str(output))
    atomic_write_json(output / "training_stats.json", stats)
    atomic_write_json(output / "log_history.json", trainer.state.log_history)
    write_model_card(output)  # from distill_train.yaml, which train.py wrote before training


def _last_checkpoint(output: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not output.is_dir():
        return None
    last = get_last_checkpoint(str(output))
    return Path(last) if last else None


def _lora_config(recipe: StudentRecipe) -> Any:
    from peft import LoraConfig

    targets = recipe.lora.target_modules
    return LoraConfig(
        r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout, task_type="CAUSAL_LM",
        target_modules=targets[0] if targets == ["all-linear"] else targets,
    )  # fmt: skip


def _quantized(path: str, recipe: StudentRecipe) -> Any:
    import torch

    try:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        return AutoModelForCausalLM.from_pretrained(
            path, quantization_config=bnb, attn_implementation=recipe.attn_implementation
        )
    except ImportError as e:
        raise UserError(f"--qlora needs bitsandbytes and a CUDA GPU ({e})") from None
