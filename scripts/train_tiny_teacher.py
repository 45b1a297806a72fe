"""Train the tiny reasoning teacher bundled in distill/assets/tiny-teacher/ (from scratch, CPU).

    python scripts/train_tiny_teacher.py          # ~8 min on 2 idle CPU cores, writes the assets
    python scripts/check_tiny_teacher.py          # its accuracy under vLLM (R1 sampling)

The teacher is a 1M-parameter Qwen2 trained from scratch (TRL SFT, loss on the completion only)
on the column-arithmetic working of distill/synthetic.py in R1 format: <think>…</think>, then
a \\boxed{} answer. It is trained just long enough to be right most of the time but not always
(about 3 in 4 samples at T=0.6), so the correctness filter of the recipe has real work to do,
and its mistakes are slips in the working (a wrong column sum or carry), not noise. Everything
is seeded: a rerun on the same machine gives the same model.

Writes distill/assets/tiny-teacher/ (weights, config, tokenizer, chat template) and
distill/assets/arith-demo.jsonl (64 held-out problems for the README demo).
"""

import argparse
import json
import random
import re
import shutil
import time
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from trl import SFTConfig, SFTTrainer

from distill.synthetic import USER_SUFFIX, format_completion, make_problems, solve

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "distill" / "assets"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
# Added but not *special*, as in DeepSeek-R1/Qwen3: decoding with skip_special_tokens=True
# (vLLM's default) must keep them in the text.
THINK = ["<think>", "</think>"]
QWEN2_PRETOKENIZE_REGEX = (  # from transformers' Qwen2Tokenizer
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen-style ChatML. No "<think>\n" here: like R1 usage, the toolkit appends that prefill itself.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def render(messages: list[dict]) -> str:
    """What CHAT_TEMPLATE renders for a conversation (checked against it in main)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def example(problem: dict) -> dict:
    """A conversational prompt/completion pair: TRL puts the loss on the completion only."""
    user = f"{problem['problem']}\n{USER_SUFFIX}"
    reply = format_completion(solve(problem), problem["answer"])
    return {
        "prompt": [{"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": reply}],
    }


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the task text, one token per digit (as Qwen/DeepSeek do).

    The normalizer and pre-tokenizer are exactly Qwen2's (its regex splits digits one by one):
    transformers 5 loads any qwen2 checkpoint's tokenizer as Qwen2Tokenizer, which rebuilds
    them from scratch, so with anything else vLLM would tokenize prompts unlike training did.
    `texts` are full chat renderings; they also serve to check that decoding round-trips.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Merges are learnt on the plain text: the trainer would otherwise cut special tokens apart.
    plain = [re.sub("|".join(map(re.escape, SPECIALS + THINK)), "\n", t) for t in texts]
    tok.train_from_iterator(plain, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",  # must differ from eos, or eos gets masked out of the loss
        additional_special_tokens=["<|im_start|>"],
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    for text in texts[:200]:  # the decoder must give back exactly what went in
        assert fast.decode(fast(text)["input_ids"]) == text, text
    return fast


def tiny_sft_config(run: str, args: argparse.Namespace, **extra: object) -> SFTConfig:
    """The SFT settings of both tiny models (this teacher and the demo's base)."""
    return SFTConfig(
        output_dir=str(ROOT / "runs" / run),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.steps // 20),
        weight_decay=0.0,
        max_length=512,
        logging_steps=25,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
        use_cpu=True,
        gradient_checkpointing=False,  # TRL turns it on by default; a 1M model needs no memory saving
        bf16=True,  # CPU autocast, fp32 master weights: ~1.5x faster on a CPU with AVX512-BF16
        **extra,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ASSETS / "tiny-teacher")
    ap.add_argument("--demo", type=Path, default=ASSETS / "arith-demo.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(2)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()

    # One fresh problem per training example: the teacher never sees a problem twice.
    problems = make_problems(args.steps * args.batch_size, seed=args.seed, split="train")
    data = [example(p) for p in problems]
    texts = [render(d["prompt"] + d["completion"]) for d in data[:5000]]
    tokenizer = build_tokenizer(texts, vocab_size=512)  # the task needs ~400: BPE stops early
    assert (
        tokenizer.apply_chat_template(data[0]["prompt"] + data[0]["completion"], tokenize=False)
        == texts[0]
    )

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,  # head_dim 64: vLLM CPU supports 32/64/128 only
        num_key_value_heads=args.hidden // 64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}")

    # prompt/completion data: no {% generation %} in the template, so the loss mask comes from TRL
    sft = tiny_sft_config("tiny-teacher", args, completion_only_loss=True)
    trainer = SFTTrainer(
        model=model, args=sft, train_dataset=Dataset.from_list(data), processing_class=tokenizer
    )
    trainer.train()
    print(f"trained in {time.time() - t0:.0f}s")

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    model.config.use_cache = True  # TRL turns it off for training
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)  # fp32 (4.4 MB): what was measured is exactly what ships
    tokenizer.save_pretrained(out)
    # Name the class, so transformers 4 (which would not know "TokenizersBackend") loads it too.
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_config["tokenizer_class"] = "Qwen2Tokenizer"
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    reloaded = AutoTokenizer.from_pretrained(out)  # what vLLM and the toolkit will use
    assert all(reloaded(t)["input_ids"] == tokenizer(t)["input_ids"] for t in texts[:500])
    demo = make_problems(64, seed=args.seed, split="test")
    args.demo.write_text("".join(json.dumps(p) + "\n" for p in demo))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"saved {out} ({size / 1e6:.1f} MB) and {args.demo}; {time.time() - t0:.0f}s in all")


if __name__ == "__main__":
    main()
