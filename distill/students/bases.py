"""The real student bases as facts: what their Hub config.json and tokenizer say, with sources.

`bases.json` holds, for the six R1 student bases and the two R1-distill models, the values of
the public config.json (hidden size, layers, heads, kv heads, vocab, RoPE, max positions, tied
embeddings...), the parameter count computed from those shapes, and the tokenizer's special
tokens (eos, bos, pad, chat-template tokens, `<think>` where it is one token), each with where
it was read. Nothing here downloads: the facts let the tests build every student's
training-time model on the meta device and check what its recipe promises.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

FACTS = Path(__file__).with_name("bases.json")


@cache
def bases() -> dict[str, dict[str, Any]]:
    """Hub id -> {config, param_count, config_sources, tokenizer, tokenizer_sources}."""
    return json.loads(FACTS.read_text(encoding="utf-8"))


def hub_config(hub_id: str) -> Any:
    """The transformers config of a base, built from its facts (no download)."""
    from transformers import AutoConfig

    values = dict(bases()[hub_id]["config"])
    values.pop("architectures", None)
    values.pop("transformers_version", None)
    dtype = values.pop("torch_dtype", None)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    config.dtype = dtype
    return config


def template_tokens(template: str) -> set[str]:
    """Special tokens a chat template writes (`<|im_start|>`, `<|eot_id|>`...): each must be
    one token of the student's vocabulary, or the model learns a string of fragments."""
    return set(re.findall(r"<\|[a-z_]+\|>", template))
