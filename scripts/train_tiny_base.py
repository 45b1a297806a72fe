"""Train the tiny *base* model the demo's students start from (distill/assets/tiny-base/).

    python scripts/train_tiny_base.py            # ~6 min on 2 idle CPU cores

R1's students are pretrained base models (Qwen2.5-Math, Llama-3.1): they know some maths, but
not how to answer in the <think> format, and distillation teaches them that. This is the tiny
analogue: a 1M-parameter Qwen2 pretrained as a plain language model (no chat template, no
<think>, no \\boxed{}) on column arithmetic of up to 3 digits, worded in a few ways. It ends up
sure of addition and subtraction and shaky on multiplication (greedy, its own format: about
100% / 90% / 40%), and answers nothing in the R1 format until `distill demo` fine-tunes it on
the tiny teacher's traces, filtered or not.

Same tokenizer and architecture as the tiny teacher, so the students share its vocabulary.
"""

import argparse
import random
import shutil
import time
from pathlib import Path

import torch
from datasets import Dataset
from train_tiny_teacher import tiny_sft_config  # scripts/ is on sys.path when run
from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM
from trl import SFTTrainer

from distill.synthetic import make_problems, operation, solve

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "distill" / "assets"


# Pretraining documents are worded in several ways, with lead-ins of different lengths between
# the question and the working, as a real corpus is: a base that only ever saw the working right
# after the question learns to find the operands at fixed distances, and loses them when a chat
# template and an instruction come in between.
LEAD_INS = [
    "",
    "Let us work it out.",
    "Work it out column by column and give the result.",
    "Here is the working, one column at a time, from the ones digit up.",
    "Solve this exercise carefully, writing down every column of the working before the result.",
]


def text(problem: dict, rng: random.Random) -> str:
    """One pretraining document: question, a lead-in, the working, the result; nothing of the
    chat format. (TRL ends each text with the eos token, so the base knows how to stop.)"""
    lead = rng.choice(LEAD_INS)
    head = f"{problem['problem']}\n{lead}\n" if lead else f"{problem['problem']}\n"
    return f"{head}{solve(problem)}\nSo the result is {problem['answer']}."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--ops", default="+-×")
    ap.add_argument("--max-digits", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=ASSETS / "tiny-base")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(2)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    teacher = ASSETS / "tiny-teacher"
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    config = AutoConfig.from_pretrained(teacher)  # same shape as the teacher, fresh weights
    model = Qwen2ForCausalLM(config)

    # Fresh problems every step (seed apart from the demo's and the teacher's), + and - only.
    problems = make_problems(
        args.steps * args.batch_size, 1000 + args.seed, "train", args.max_digits, args.ops
    )
    rng = random.Random(args.seed)
    data = Dataset.from_list([{"text": text(p, rng)} for p in problems])
    sft = tiny_sft_config("tiny-base", args)
    trainer = SFTTrainer(model=model, args=sft, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    print(f"trained in {time.time() - t0:.0f}s")

    # How well the base continues a held-out problem greedily (its own format, no chat).
    model.eval()
    tests = make_problems(150, 1000 + args.seed, "test", args.max_digits, args.ops)
    right: dict[str, list[int]] = {op: [0, 0] for op in args.ops}
    for p in tests:
        ids = tokenizer(p["problem"] + "\n", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=200, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)  # fmt: skip
        op = operation(p)
        right[op][0] += f"So the result is {p['answer']}." in tokenizer.decode(
            out[0][ids.shape[1] :]
        )
        right[op][1] += 1
    print(
        "held-out problems solved greedily in its own format:",
        {op: f"{a}/{n}" for op, (a, n) in right.items()},
    )

    if args.out.exists():
        shutil.rmtree(args.out)
    model.config.use_cache = True
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    for name in ("tokenizer_config.json",):  # keep the teacher's (it names Qwen2Tokenizer)
        shutil.copy(teacher / name, args.out / name)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"saved {args.out} ({size / 1e6:.1f} MB); {time.time() - t0:.0f}s in all")


if __name__ == "__main__":
    main()
