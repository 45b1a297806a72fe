"""Tiny Qwen2 / Llama models built locally: for tests and benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on the given texts,
the model is randomly initialised. head_dim is 64 because vLLM's CPU attention accepts only
32/64/128.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distill.prompts import THINK_CLOSE, THINK_OPEN, format_trace

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added but not special, as in R1's tokenizer: decoding keeps them in the text.
THINK_TOKENS = [THINK_OPEN, THINK_CLOSE]
# Qwen-style ChatML. The generation prompt stops at "assistant\n": distill appends the
# "<think>\n" prefill itself, as R1 usage asks.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_TEXTS = [
    "What is 12 + 30? Please reason step by step, and put your final answer within \\boxed{}.",
    format_trace("First add the tens, then the ones. 12 + 30 = 42.", "The answer is \\boxed{42}."),
    "Solve for x: 3x + 5 = 20. Subtract 5 from both sides, so 3x = 15 and x = 5.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "The quick brown fox jumps over the lazy dog. Let me check the answer again.",
    "Answer with the letter of the correct option. A) 1 B) 2 C) 3 D) 4",
]


def make_tokenizer(
    out: str | Path, texts: Iterable[str] = DEFAULT_TEXTS, vocab_size: int = 316
) -> Any:
    """Train a byte-level BPE with digits split one by one; pad differs from eos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.add_tokens(THINK_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    return fast


def make_model(
    out: str | Path,
    arch: str = "qwen2",
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 2048,
    seed: int = 0,
    texts: Iterable[str] = DEFAULT_TEXTS,
    tokenizer: Any = None,
) -> Path:
    """A randomly initialised causal LM + tokenizer + generation config in `out`."""
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    out = Path(out)
    tok = tokenizer or make_tokenizer(out, texts)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    common: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": max_positions,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": True,
    }
    assert hidden // heads in (32, 64, 128), "vLLM CPU needs head_dim 32/64/128"
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, head_dim=hidden // heads))
    else:
        raise ValueError(f"unknown arch {arch!r}")
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
    )
    model.save_pretrained(str(out))
    return out
