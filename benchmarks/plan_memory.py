"""`distill plan`'s memory terms against the measured peak of real training steps, on CPU.

    python benchmarks/plan_memory.py            # the full grid (~10 minutes on 2 busy cores)
    python benchmarks/plan_memory.py --quick    # two small configurations (the test suite's)

Small Qwen2 models (built locally from `Qwen2Config`, random weights, nothing downloaded) train
in fp32 (no mixed precision: 4 B weights + 4 B gradients + 8 B AdamW) with TRL's fused LM head
or the plain logits loss, gradient checkpointing on or off. Each configuration runs in a fresh
process: one forward/backward, an AdamW step (its moments now exist), and a second
forward/backward that accumulates into the kept gradients, as every micro-step after the first
of a run with gradient accumulation does. The measured peak is the kernel's high-water mark of
resident memory (VmHWM, reset through /proc/self/clear_refs after the imports) minus the
resident memory before the model was built; glibc is told to mmap every block of 64 KiB or
more, so freed tensors leave the resident set at once and the peak is that of live tensors.
Printed per configuration: measured and planned MiB, their ratio, and the same for the part
beyond the model states (activations, loss head, working set), which is where the formulas are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MiB = 2**20
# (hidden, intermediate, heads, kv heads, layers, vocab, tokens, checkpointing, fused loss)
FULL = [
    (256, 1024, 4, 2, 4, 4096, 1024, False, True),
    (256, 1024, 4, 2, 4, 4096, 2048, False, True),
    (512, 2048, 8, 2, 4, 4096, 1024, False, True),
    (512, 2048, 8, 2, 4, 4096, 2048, False, True),
    (512, 2048, 8, 2, 4, 4096, 2048, True, True),
    (512, 2048, 8, 2, 4, 4096, 4096, True, True),
    (768, 3072, 12, 4, 6, 4096, 2048, True, True),
    (768, 3072, 12, 4, 6, 4096, 2048, False, True),
    (512, 2048, 8, 2, 4, 8192, 2048, False, False),
    (512, 2048, 8, 2, 4, 8192, 2048, True, False),
    (256, 4096, 4, 2, 2, 512, 2048, True, True),  # wide MLP, small vocabulary: the peak is the
    (256, 4096, 4, 2, 2, 512, 4096, True, True),  # recomputed layer's backward, as on the GPUs
]
QUICK = [
    (256, 1024, 4, 2, 2, 4096, 1024, False, True),
    (256, 4096, 4, 2, 2, 512, 1024, True, True),
]


def shape_of(c: tuple) -> dict:
    h, i, a, kv, layers, vocab = c[:6]
    return {"hidden_size": h, "intermediate_size": i, "num_attention_heads": a,
            "num_key_value_heads": kv, "num_hidden_layers": layers, "vocab_size": vocab,
            "tie_word_embeddings": False, "model_type": "qwen2"}  # fmt: skip


def child(configs: list) -> None:
    """Configurations in turn in this process (a tiny warm-up first, so code pages and thread
    pools touched by the first step are not counted); one JSON line {"params", "peak"} each."""
    import gc
    import re

    import torch

    torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM, Qwen2Config
    from trl.trainer.utils import add_fused_lm_head

    def status(key: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(key + r":\s+(\d+)", text).group(1)) * 1024

    def run(c: list) -> int:
        tokens, ckpt, fused = c[6:]
        values = {k: v for k, v in shape_of(c).items() if k != "model_type"}
        config = Qwen2Config(**values, max_position_embeddings=tokens, use_cache=False)
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, attn_implementation="sdpa"
        )
        model.train()
        if ckpt:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if fused:  # what SFTTrainer does (TRL 1.16)
            add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # Trainer's default
        ids = torch.randint(
            0, config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0)
        )
        for micro in range(2):
            kwargs = {"fused_lm_head": True} if fused else {}
            model(input_ids=ids, labels=ids, **kwargs).loss.backward()
            if micro == 0:
                optimizer.step()  # moments exist; gradients kept, as under accumulation
        return sum(p.numel() for p in model.parameters())

    for flags in ((False, True), (True, False)):  # warm-up: every code path, tiny
        run([64, 128, 2, 1, 1, 256, 64, *flags])
    for c in configs:
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # high-water mark := current RSS
        base = status("VmRSS")
        params = run(c)
        print(json.dumps({"params": params, "peak": status("VmHWM") - base}), flush=True)


def planned(c: tuple) -> dict:
    from distill.memory import shape_from_config, train_terms

    shape = shape_from_config(shape_of(c))
    terms = train_terms(shape, "single", 1, c[6], 4, c[7], c[8], device="cpu")
    return {"params": shape.params, "terms": terms}


def measure(configs: list[tuple]) -> list[dict]:
    """Run `configs` in one fresh child process; its measured rows."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(configs)],
                         capture_output=True, text=True, env=env, timeout=3600)  # fmt: skip
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Two small configurations.")
    ap.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    rows = []
    configs = QUICK if args.quick else FULL
    # the quick grid shares one process (one import, for the test suite); the full one gives
    # each configuration a fresh process
    measured = measure(configs) if args.quick else [measure([c])[0] for c in configs]
    for c, m in zip(configs, measured, strict=True):
        p = planned(c)
        assert m["params"] == p["params"], (m["params"], p["params"])  # shapes agree exactly
        states = sum(v for k, v in p["terms"].items() if k in ("weights", "gradients", "optimizer"))
        total = sum(p["terms"].values())
        rows.append({"config": c, "params": m["params"], "measured": m["peak"], "planned": total,
                     "ratio": m["peak"] / total, "rest_measured": m["peak"] - states,
                     "rest_planned": total - states, "rest_ratio": (m["peak"] - states)
                     / (total - states)})  # fmt: skip
        if not args.json:
            r = rows[-1]
            h, i, _, _, layers, vocab, tokens, ckpt, fused = c
            print(f"h={h:4d} i={i:4d} L={layers} V={vocab:5d} s={tokens:5d} "
                  f"ckpt={'on ' if ckpt else 'off'} loss={'fused' if fused else 'plain'} "
                  f"P={r['params'] / 1e6:5.1f}M  measured {r['measured'] / MiB:7.1f} MiB  "
                  f"planned {r['planned'] / MiB:7.1f} MiB  ratio {r['ratio']:.3f}  "
                  f"beyond states {r['rest_measured'] / MiB:6.1f} / {r['rest_planned'] / MiB:6.1f}"
                  f" = {r['rest_ratio']:.3f}", flush=True)  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    else:
        worst = max(abs(r["ratio"] - 1) for r in rows)
        print(f"worst total disagreement {worst:.1%} (goal <= 15%)")


if __name__ == "__main__":
    main()
