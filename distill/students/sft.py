"""SFT on TRL: the one module where TRL and transformers types live.

The student's tokenizer gets the training chat template (reasoning kept in the target, the
`<think>\\n` prefill on the prompt side, loss on the assistant turn and its end-of-turn token),
an eos it learns to emit and a pad token that differs from it. Examples arrive tokenized with
their assistant masks (students/data.py); TRL builds the labels from them, packs them (bfd,
padding-free) and trains.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill import hub
from distill.cards import HYPERPARAMETERS, write_model_card
from distill.config import bundled, dump_yaml, writing_model
from distill.errors import EnvFailure, UserError
from distill.log import progress
from distill.plots import curves, log_series
from distill.records import atomic_write_bytes, atomic_write_json
from distill.students.data import build_dataset
from distill.students.recipe import StudentRecipe, template_text, validate_sft

if TYPE_CHECKING:  # train.py owns the run config and imports this module
    from distill.train import TrainConfig

log = logging.getLogger(__name__)
steps_log = logging.getLogger("trainer.steps")  # not a distill logger: the log file only


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


def training_config(config: Any, overrides: dict[str, Any]) -> Any:
    """The model config the recipe trains: its `model_config` applied the way transformers 5
    reads it. RoPE lives in `config.rope_parameters`; a plain `rope_theta` attribute is
    ignored by the rotary embedding (and by vLLM), so a context extension set that way is a
    silent no-op."""
    for key, value in overrides.items():
        if key == "rope_theta":
            config.rope_parameters = {**(config.rope_parameters or {}), "rope_theta": float(value)}
        elif key in ("rope_parameters", "rope_scaling"):
            config.rope_parameters = {**(config.rope_parameters or {}), **value}
        elif hasattr(config, key):
            setattr(config, key, value)
        else:
            raise UserError(f"model_config.{key}: not a field of the {config.model_type} config")
    # a KV cache during training also hides packed-sample boundaries from the mask
    config.use_cache = False
    return config


def check_context(config: Any, max_length: int, where: str) -> None:
    """Sequences longer than the positions the model declares train on positions it was never
    given: extend RoPE in the recipe's model_config first."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise UserError(
            f"{where}: max_length {max_length} exceeds the model's max_position_embeddings {limit} "
            "(extend it in the recipe's model_config: rope_theta, max_position_embeddings)"
        )


def attention(requested: str) -> str:
    """flash_attention_2 where it can run (flash-attn, or the `kernels` package's Hub build),
    else sdpa: with position_ids it keeps packed samples apart too, at O(L^2) mask memory."""
    if requested != "flash_attention_2":
        return requested
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available(kernels_fallback_ok=True):
        return requested
    log.warning(
        "flash_attention_2 is not available here (no flash-attn build, no `kernels` Hub kernel): "
        "training with sdpa"
    )
    return "sdpa"


def load_model(model_path: str, recipe: StudentRecipe, fresh: bool = False) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, recipe.torch_dtype)
    config = training_config(AutoConfig.from_pretrained(model_path), recipe.model_config)
    attn = attention(recipe.attn_implementation)
    if fresh:
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return AutoModelForCausalLM.from_pretrained(
        model_path, config=config, dtype=dtype, attn_implementation=attn
    )


def save_final(trainer: Any, output: Path, dtype: str) -> None:
    """The final folder holds one consolidated safetensors model, whatever the strategy: it is
    what vLLM, `distill eval` and `distill push` load. Under FSDP with SHARDED_STATE_DICT
    (cheap, resumable checkpoints) `Trainer.save_model` writes nothing at all."""
    import torch

    if not trainer.is_fsdp_enabled:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.args.bf16 and not trainer.is_deepspeed_enabled and model.dtype == torch.float32:
            model.to(torch.bfloat16)  # fp32 master weights under DDP: served and pushed in bf16
        trainer.save_model(str(output))  # DDP, and ZeRO-3 with zero3_save_16bit_model
        return
    acc = trainer.accelerator
    state = acc.get_state_dict(trainer.model)  # collective: full tensors on rank 0, {} elsewhere
    if trainer.args.should_save:
        model = acc.unwrap_model(trainer.model)
        target = getattr(torch, dtype)
        # FSDP2 keeps fp32 master weights under bf16 mixed precision: save what was asked for
        state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
        model.save_pretrained(str(output), state_dict=state, max_shard_size="5GB")
        config = copy.deepcopy(model.config)
        config.dtype = target
        config.save_pretrained(str(output))
    acc.wait_for_everyone()


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
    """The one progress display of a training run (steps, loss, tokens/s, ETA) in place of
    transformers' tqdm bar and printed log dicts; collects tokens seen and losses for the
    closing summary and stats.json."""

    def __init__(self, label: str = "train") -> None:
        self.started = time.time()
        self.losses: list[float] = []
        self.tokens = 0
        self.step = 0
        self.label = label

    def bind(self) -> Any:
        from transformers import TrainerCallback

        outer = self
        bar = progress("loss {task.fields[loss]}", "{task.fields[rate]} tok/s")

        class _Callback(TrainerCallback):
            task: Any = None

            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if state.is_world_process_zero:
                    bar.start()
                    self.task = bar.add_task(outer.label, total=state.max_steps, loss="-", rate="-")

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if self.task is not None:
                    bar.update(self.task, completed=state.global_step)

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
                steps_log.info("step %d: %s", state.global_step, logs)  # log file only
                if self.task is not None and outer.losses:
                    rate = outer.tokens / max(time.time() - outer.started, 1e-9)
                    bar.update(self.task, loss=f"{outer.losses[-1]:.4f}", rate=f"{rate:,.0f}")

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if self.task is not None:
                    bar.stop()

        return _Callback()


def checkpoint_pusher(repo: str, private: bool) -> Any:
    """Uploads each saved checkpoint to a Hub revision `step-NNNNNN`, in the background."""
    from transformers import TrainerCallback

    class _Push(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    try:
                        hub.push_checkpoint(folder, repo, state.global_step, private=private)
                    except (UserError, EnvFailure) as e:  # a Hub hiccup must not end the run
                        log.warning("checkpoint %d not pushed: %s", state.global_step, e)

    return _Push()


def run_sft(
    recipe: StudentRecipe, cfg: TrainConfig, sft_overrides: dict[str, Any], record: dict[str, Any]
) -> dict[str, Any]:
    """Train; returns the run summary. `record` (the resolved run) becomes
    OUTPUT/distill_train.yaml once the model is saved, never before."""
    from accelerate import PartialState
    from transformers import AutoConfig
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as transformers_logging
    from trl import SFTTrainer

    transformers_logging.disable_progress_bar()  # "Loading weights" bars: not this stage's display
    path = model_source(recipe, cfg.model)
    args = sft_args(recipe, cfg.output, sft_overrides, cfg.lora or cfg.qlora)
    check_context(
        training_config(AutoConfig.from_pretrained(path), recipe.model_config),
        args.max_length,
        f"recipe {recipe.name}",
    )
    tok = load_tokenizer(path, recipe)
    with PartialState().main_process_first():  # rank 0 tokenizes, the others read its cache
        dataset, counts = build_dataset(
            tok, cfg.data, args.max_length, split=cfg.split, num_proc=args.dataset_num_proc
        )
    log.info(
        "%d examples (%d tokens), %d dropped for length",
        counts["kept"],
        counts["tokens"],
        counts["dropped_too_long"],
    )
    model_obj = load_model(path, recipe) if not cfg.qlora else _quantized(path, recipe)
    peft_config = _lora_config(recipe) if (cfg.lora or cfg.qlora) else None
    summary = SummaryCallback(f"train {recipe.name}")
    callbacks = [summary.bind()]
    if cfg.push_to_hub:
        callbacks.append(checkpoint_pusher(cfg.push_to_hub, cfg.private))
    trainer = SFTTrainer(
        model=model_obj,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(
        PrinterCallback
    )  # raw log dicts: our bar shows them, the log keeps them
    trainer.remove_callback(ProgressCallback)  # tqdm: one display per stage, ours
    last = last_checkpoint(cfg.output) if cfg.resume else None
    if cfg.resume and last is None:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", cfg.output)
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
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
    main = trainer.is_world_process_zero()
    with writing_model(cfg.output, enabled=main):  # readers refuse the folder until it is whole
        save_final(trainer, cfg.output, recipe.torch_dtype)
        if main:
            record = {**record, "sft_effective": effective_sft(args)}
            _finalize(cfg.output, tok, trainer, recipe, stats, record)
    return stats


def effective_sft(args: Any) -> dict[str, Any]:
    """The SFTConfig values the run really used (recipe, overrides and TRL defaults), for the
    record and the model card."""
    values = args.to_dict()
    return {k: values[k] for k in HYPERPARAMETERS if k in values}


def _finalize(
    output: Path,
    tok: Any,
    trainer: Any,
    recipe: StudentRecipe,
    stats: dict[str, Any],
    record: dict[str, Any],
) -> None:
    """Tokenizer with the inference template, generation config that stops at eos, the run's
    record, stats and card."""
    from transformers import GenerationConfig

    tok.save_pretrained(str(output))
    gen = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=True, temperature=0.6, top_p=0.95,
        max_new_tokens=record["sft_effective"].get("max_length", 32768),
    )  # fmt: skip
    gen.save_pretrained(str(output))
    atomic_write_json(output / "training_stats.json", stats)
    atomic_write_json(output / "log_history.json", trainer.state.log_history)
    curves(output / "loss.png", {"training loss": log_series(trainer.state.log_history, "loss")},
           title=f"distill train {recipe.name}: training loss", ylabel="loss")  # fmt: skip
    atomic_write_bytes(
        output / "distill_train.yaml",
        dump_yaml(record).encode(),
    )
    write_model_card(output)  # reads distill_train.yaml


def last_checkpoint(output: Path) -> Path | None:
    """The newest checkpoint a run finished writing. The Trainer writes trainer_state.json last,
    so a checkpoint a kill cut short has none (or a torn one): it is skipped, never resumed."""
    found = []
    for folder in output.glob("checkpoint-*") if output.is_dir() else []:
        step = folder.name.removeprefix("checkpoint-")
        if folder.is_dir() and step.isdigit():
            found.append((int(step), folder))
    for _, folder in sorted(found, reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            return folder
        except (OSError, ValueError):
            log.warning("%s: a checkpoint the run did not finish writing; skipped", folder)
    return None


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
