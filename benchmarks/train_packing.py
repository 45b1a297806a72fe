"""Packed (bfd, padding-free) vs padded SFT of a tiny student, same data, same run.

    python benchmarks/train_packing.py [--examples 512] [--max-length 1024]

Trace lengths are lognormal like real reasoning traces (many short, a long tail). Both runs
train one epoch over the same tokenized examples with the same model initialisation and the
same number of sequences per step; the padded run pads each batch to its longest example, the
packed run concatenates examples best-fit-decreasing into rows of `max_length` tokens with
position ids restarting per sample (no cross-sample attention). Prints tokens/s (real tokens,
padding excluded) of each, their ratio (goal >= 1.3x) and the final loss of each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path


def make_corpus(folder: Path, n: int, median: int, sigma: float, cap: int, seed: int = 0) -> None:
    import math

    from distill.records import FIELDS, CorpusWriter

    rng = random.Random(seed)
    words = [
        "add",
        "the",
        "carry",
        "digit",
        "so",
        "we",
        "get",
        "check",
        "again",
        "then",
        "sum",
        "is",
    ]
    rows = []
    for i in range(n):
        length = min(cap, max(8, int(rng.lognormvariate(math.log(median), sigma))))
        reasoning = " ".join(
            rng.choice(words) if k % 5 else str(rng.randint(0, 99)) for k in range(length)
        )
        answer = f"The answer is \\boxed{{{i}}}."
        msgs = [{"role": "user", "content": f"Problem {i}: what is the sum?"}]
        rows.append({f: None for f in FIELDS} | {
            "id": f"p{i}/0", "problem_id": f"p{i}", "sample_index": 0, "problem": f"Problem {i}", "domain": "math",
            "reference": json.dumps(str(i)), "messages": json.dumps(msgs), "completion": f"<think>\n{reasoning}\n</think>\n\n{answer}",
            "reasoning": reasoning, "answer": answer, "finish_reason": "stop", "prompt_tokens": 0, "completion_tokens": length,
            "teacher": "synthetic", "sampling": "{}",
        })  # fmt: skip
    w = CorpusWriter(folder, {})
    w.write_shard(rows)
    w.write_manifest()


def run(model_dir: str, data: str, out: Path, packed: bool, batch: int, max_length: int) -> dict:
    from trl import SFTTrainer

    from distill.students.data import build_dataset
    from distill.students.recipe import load_recipe
    from distill.students.sft import load_model, load_tokenizer, sft_args

    recipe = load_recipe("tiny")
    tok = load_tokenizer(model_dir, recipe)
    dataset, counts = build_dataset(tok, data, max_length)
    overrides = {
        "packing": packed,
        "padding_free": packed,
        "max_length": max_length,
        "num_train_epochs": 1,
        "learning_rate": 5e-4,
        "logging_steps": 1,
        "disable_tqdm": True,
        "seed": 0,
        "data_seed": 0,
    }
    if packed:
        # One packed row of max_length tokens per forward, accumulated to as many tokens per
        # optimizer step as `batch` average sequences. Several rows in one forward would be
        # flattened into one sequence: flash-attention's varlen kernels (GPU) do not care, but
        # CPU attention under a block mask is quadratic in the flattened length.
        overrides["per_device_train_batch_size"] = 1
        overrides["gradient_accumulation_steps"] = max(
            1, round(batch * counts["tokens"] / counts["kept"] / max_length)
        )
    else:
        overrides["per_device_train_batch_size"] = batch
    args = sft_args(recipe, out, overrides, lora=False)
    trainer = SFTTrainer(
        model=load_model(model_dir, recipe, fresh=True),
        args=args,
        train_dataset=dataset,
        processing_class=tok,
    )
    t = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens": counts["tokens"],
        "seconds": seconds,
        "steps": result.global_step,
        "final_loss": sum(losses[-5:]) / len(losses[-5:]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--median", type=int, default=120, help="median trace length in words")
    ap.add_argument("--sigma", type=float, default=0.8)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8, help="sequences per step in the padded run")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()

    from distill.tiny import make_model

    work = Path(tempfile.mkdtemp(prefix="packing-"))
    model = make_model(work / "model", hidden=256, layers=4, heads=4, max_positions=args.max_length)
    make_corpus(work / "corpus", args.examples, args.median, args.sigma, cap=args.max_length // 2)
    padded = run(
        str(model), str(work / "corpus"), work / "padded", False, args.batch, args.max_length
    )
    packed = run(
        str(model), str(work / "corpus"), work / "packed", True, args.batch, args.max_length
    )
    for name, r in (("padded", padded), ("packed (bfd, padding-free)", packed)):
        print(
            f"{name:28s} {r['tokens']:>8,d} tokens in {r['seconds']:7.1f} s = {r['tokens'] / r['seconds']:>8,.0f} tok/s, "
            f"{r['steps']} steps, final loss {r['final_loss']:.3f}"
        )
    ratio = (packed["tokens"] / packed["seconds"]) / (padded["tokens"] / padded["seconds"])
    print(
        f"ratio packed/padded = {ratio:.2f}x (goal >= 1.3x); {args.examples} examples, lognormal lengths "
        f"(median {args.median} words, sigma {args.sigma}), max_length {args.max_length}"
    )


if __name__ == "__main__":
    main()
