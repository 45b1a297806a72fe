"""Memory per GPU of training and serving a model, term by term: pure functions of its shape
(layers, hidden, intermediate, heads, kv heads, vocabulary), the tokens per forward, bytes per
value, GPUs and strategy. `plan.py` sums them into plans; `benchmarks/plan_memory.py` checks
them against real training steps of small Qwen2 models on this CPU.

Sources: DeepSpeed's `estimate_zero3_model_states_mem_needs` (runtime/zero/stage3.py),
accelerate's `estimate-memory` (Adam: 4x the weights), PyTorch FSDP2 `fully_shard` and
accelerate's FSDP2 fp32 upcast (utils/fsdp_utils.py), Korthikanti et al. 2022 (arXiv
2205.05198) for counting saved activations, TRL's fused LM head (trainer/utils.py
`add_fused_lm_head`, kernels/chunked_logprob.py), vLLM's KV cache, TRL's
`compute_flops_per_token` for FLOPs. Only `torch`-free arithmetic: `distill --help` stays
instant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distill.config import bundled
from distill.errors import UserError
from distill.students.bases import bases

GiB = 2**30
Strategy = Literal["single", "ddp", "zero3", "zero3_offload", "fsdp2"]
# TRL's fused LM head projects [4096 tokens x 32768 vocabulary] tiles (kernels/chunked_logprob.py
# TOKEN_CHUNK_SIZE, trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE). On CUDA a Triton kernel folds
# each tile in place; elsewhere its torch fallback (`_backward_tile`) keeps the tile and eight
# fp32 tile-sized temporaries alive at once (y, z, log_p, p, grad, the target mask and products).
TOKEN_TILE, VOCAB_TILE, CPU_TILES = 4096, 32768, 9


# --- shapes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:  # q/k/v/o (+ Qwen2's q/k/v biases), SwiGLU MLP, two RMSNorms
        h = self.hidden
        bias = self.q + 2 * self.kv if self.qkv_bias else 0
        return 2 * h * self.q + 2 * h * self.kv + bias + 3 * h * self.intermediate + 2 * h

    @property
    def root_params(self) -> int:  # embedding, final norm, untied LM head: FSDP2's root unit
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params

    @property
    def largest_module(self) -> int:  # DeepSpeed's "largest layer": one module's own parameters
        return max(self.vocab * self.hidden, self.hidden * self.intermediate)


def shape_from_config(c: dict[str, Any]) -> Shape:
    """A config.json mapping (Qwen2 or Llama) -> Shape."""
    h, heads = c["hidden_size"], c["num_attention_heads"]
    return Shape(
        layers=c["num_hidden_layers"], hidden=h, intermediate=c["intermediate_size"],
        heads=heads, kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or h // heads, vocab=c["vocab_size"],
        tied=bool(c.get("tie_word_embeddings", False)),
        qkv_bias=c.get("model_type") == "qwen2" or bool(c.get("attention_bias", False)),
    )  # fmt: skip


def model_shape(ref: str) -> Shape:
    """Shapes of a known base (students/bases.json, no download) or of a local model folder."""
    if ref in bases():
        return shape_from_config(bases()[ref]["config"])
    path = Path(bundled(ref)) / "config.json"
    if path.is_file():
        return shape_from_config(json.loads(path.read_text(encoding="utf-8")))
    known = ", ".join(bases())
    raise UserError(f"{ref}: shapes unknown (known bases: {known}; or a folder with config.json)")


# --- memory terms, bytes per GPU ----------------------------------------------------------------


def model_states(params: int, strategy: str, world: int, weight_bytes: int) -> dict[str, float]:
    """Weights, gradients and AdamW states on one GPU.

    single/ddp: everything in the weights' dtype, as accelerate's estimate-memory counts Adam
    (4x the weights): loaded in bf16, torch's AdamW keeps its moments in bf16 too and there is
    no fp32 master copy. DDP adds its gradient buckets (one more gradient-sized buffer).
    zero3: DeepSpeed's estimator, 18 bytes per parameter over all GPUs (bf16 weights, fp32
    gradients, fp32 master weights and moments). zero3_offload: all of it on the CPU.
    fsdp2: accelerate upcasts the sharded parameters to fp32 under bf16 mixed precision: fp32
    weights, gradients and moments (16 bytes) over all GPUs."""
    if strategy in ("single", "ddp"):
        out = {"weights": params * weight_bytes, "gradients": params * weight_bytes,
               "optimizer": 2 * params * weight_bytes}  # fmt: skip
        if strategy == "ddp":
            out["DDP buckets"] = params * weight_bytes
        return out
    if strategy == "zero3_offload":
        return {}
    if strategy == "zero3":
        grad, master = (4, 12) if weight_bytes == 2 else (4, 8)
        return {"weights": params * weight_bytes / world, "gradients": params * grad / world,
                "optimizer": params * master / world}  # fmt: skip
    if strategy == "fsdp2":
        return {"weights": params * 4 / world, "gradients": params * 4 / world,
                "optimizer": params * 8 / world}  # fmt: skip
    raise UserError(f"unknown strategy {strategy!r}")


def gathered_params(shape: Shape, strategy: str, compute_bytes: int) -> float:
    """Unsharded working copies. ZeRO-3 (offloaded or not): DeepSpeed's 4 x largest layer (its
    16-bit parameters and gradients). FSDP2 as accelerate wraps it (`fsdp2_prepare_model`: each
    decoder layer, the embedding, and a tail unit [final norm, LM head] kept gathered from its
    forward to its backward): in the loss head's backward the gathered LM head, its unsharded
    gradient and the prefetched last layer; in a layer's backward that layer, the prefetched
    one and one layer's unsharded gradients. The larger of the two."""
    if strategy in ("zero3", "zero3_offload"):
        return 4 * shape.largest_module
    if strategy == "fsdp2":
        head = 2 * shape.vocab * shape.hidden + shape.layer_params
        return max(head, 3 * shape.layer_params) * compute_bytes
    return 0.0


def saved_per_token_layer(shape: Shape, b: int) -> float:
    """Bytes one decoder layer keeps for backward per token, counted the way Korthikanti et al.
    count them (their 34·s·b·h is a GPT layer with dropout) for the transformers Qwen2/Llama
    layer under flash or SDPA attention (no s² term), checked with autograd's saved-tensor hooks:
    each RMSNorm keeps an fp32 copy of its input, its fp32 1/rms, the normalised value and its
    output (4h + 4 + 2·b·h bytes); attention keeps the rotated q and k, v, the output and an
    fp32 logsumexp per head; the SwiGLU MLP keeps gate, SiLU(gate), up and their product."""
    s = shape
    norms = 2 * (s.hidden * (4 + 2 * b) + 4)
    return norms + b * (2 * s.q + 2 * s.kv + 4 * s.intermediate) + 4 * s.heads


def activations(shape: Shape, tokens: int, b: int, checkpointing: bool) -> dict[str, float]:
    """Saved activations of the decoder layers: all of them, or with (non-reentrant) gradient
    checkpointing one input per layer plus the one layer recomputed during backward."""
    per_layer = tokens * saved_per_token_layer(shape, b)
    if checkpointing:
        return {"checkpoints": shape.layers * tokens * shape.hidden * b, "recompute": per_layer}
    return {"activations": shape.layers * per_layer}


def layer_backward(shape: Shape, tokens: int, b: int) -> float:
    """What one layer's backward adds to its recomputed activations: the gradients of SiLU(gate)
    and up (two intermediate-sized; the product they replace is released by then) and the
    incoming hidden-sized gradient. Measured on CPU (benchmarks/plan_memory.py, the wide-MLP
    rows, where this phase is the peak)."""
    return tokens * b * (2 * shape.intermediate + shape.hidden)


def loss_head(shape: Shape, tokens: int, b: int, fused: bool, device: str) -> float:
    """Final RMSNorm plus the LM head and loss at the start of backward. Fused (TRL): one
    [4096 x 32768] tile (nine fp32 ones in the CPU fallback) and fp32 accumulators for the
    hidden and LM-head gradients, plus their casts. Unfused: in the backward of the loss, the
    fp32 log-softmax kept for it and two fp32 logit-sized gradients, 12 bytes per logit (the
    logits and their upcast are gone by then; this is what Liger's or TRL's fused loss saves)."""
    h, v = shape.hidden, shape.vocab
    norm = tokens * h * (4 + 2 * b)
    if not fused:
        return norm + tokens * v * 12
    tile = min(tokens, TOKEN_TILE) * min(v, VOCAB_TILE)
    work = tile * b if device == "cuda" else CPU_TILES * tile * 4
    cast = b if b < 4 else 0
    return norm + work + (tokens * h + v * h) * (4 + cast)


def kv_per_token(shape: Shape, b: int, tp: int = 1) -> float:
    """vLLM's KV cache: 2 (K and V) x layers x kv heads x head dim x bytes; kv heads split by
    tensor parallelism (replicated when fewer than the GPUs)."""
    return 2 * shape.layers * max(1, shape.kv_heads // tp) * shape.head_dim * b


def flops_per_token(shape: Shape, seq_len: int, training: bool = True) -> float:
    """TRL's `compute_flops_per_token`: forward = per layer 2·h·(q + 2kv) + 2·q·h + 4·q·seq
    (attention scores, non-causal convention) + 6·h·i, plus the LM head 2·V·h; training = 3x."""
    s = shape
    layer = 2 * s.hidden * (s.q + 2 * s.kv) + 2 * s.q * s.hidden + 4 * s.q * seq_len
    forward = s.layers * (layer + 6 * s.hidden * s.intermediate) + 2 * s.vocab * s.hidden
    return 3 * forward if training else forward


def train_terms(shape: Shape, strategy: str, world: int, tokens: int, weight_bytes: int,
                checkpointing: bool, fused: bool, device: str = "cuda") -> dict[str, float]:  # fmt: skip
    """Every term of one training step's peak. The loss head runs at the start of backward,
    the layer recompute after it: the peak holds the larger of the two, not both."""
    b = 2 if strategy in ("zero3", "zero3_offload", "fsdp2") else weight_bytes
    terms = model_states(shape.params, strategy, world, weight_bytes)
    terms["gathered params"] = gathered_params(shape, strategy, b)
    acts = activations(shape, tokens, b, checkpointing)
    head = loss_head(shape, tokens, b, fused, device)
    layer = acts.pop("recompute", 0.0) + layer_backward(shape, tokens, b)
    terms.update(acts)
    if head >= layer:
        terms["loss head" + (" (fused)" if fused else " (logits)")] = head
    else:
        terms["recompute + backward"] = layer
    return {k: v for k, v in terms.items() if v}


