"""Write the data of the shipped `r1-tiny` pipeline (distill/assets/r1-tiny/), deterministically.

    python scripts/make_r1_tiny_data.py

- train.jsonl: 600 arithmetic problems (the demo's task: up to 3 digits, + - ×) that every
  reasoning stage draws from (cold start, both RL stages, rejection sampling, distillation);
- test.jsonl: 100 held-out problems of the same task (the split is a function of the
  operands, so they never appear in train.jsonl) for the eval stages;
- chat.jsonl: 160 non-reasoning chat turns (`messages`) with short direct answers and no
  chain of thought: R1's stage-3 "non-reasoning data" (writing, factual QA, self-cognition;
  for simple queries R1 gives no CoT), scaled down to what a model of this vocabulary can say.
"""

import json
import random
from pathlib import Path

from distill.synthetic import make_problems

OUT = Path(__file__).resolve().parents[1] / "distill" / "assets" / "r1-tiny"

FIXED = [
    ("Hello!", "Hello! Ask me an arithmetic question and I will work it out."),
    ("Hi", "Hi! Give me a sum, a difference or a product."),
    ("Who are you?", "I am a tiny model trained with distill. I do column arithmetic."),
    ("What can you do?", "I add, subtract and multiply numbers, one column at a time."),
    ("Thank you!", "You are welcome."),
    ("Are you a person?", "No, I am a small language model."),
    ("Goodbye", "Goodbye!"),
    ("Can you help me with maths?", "Yes. Ask me to add, subtract or multiply two numbers."),
]


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(f"r1-tiny-chat-{seed}")
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in FIXED]  # fmt: skip
    while len(rows) < n:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        kind = rng.randrange(5)
        if kind == 0 and a != b:
            q, ans = f"Which is larger, {a} or {b}?", f"{max(a, b)} is larger."
        elif kind == 1:
            q, ans = f"Is {a} even or odd?", f"{a} is {'even' if a % 2 == 0 else 'odd'}."
        elif kind == 2:
            q, ans = f"How many digits does {a} have?", f"{a} has {len(str(a))} digits."
        elif kind == 3:
            q, ans = f"What is the last digit of {a}?", f"The last digit of {a} is {a % 10}."
        else:
            q, ans = f"Repeat this number: {a}", f"{a}"
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]})  # fmt: skip
    return rows


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write(OUT / "train.jsonl", make_problems(600, 0, "train", max_digits=3))
    write(OUT / "test.jsonl", make_problems(100, 0, "test", max_digits=3))
    write(OUT / "chat.jsonl", chat_rows(160))
    print(f"wrote {OUT}")
