"""Measure the bundled tiny teacher the way the R1 recipe samples it (vLLM, CPU works).

    python scripts/check_tiny_teacher.py                    # 200 held-out problems x 4 samples
    python scripts/check_tiny_teacher.py --show-errors 3    # also print a few wrong traces

Prints the sample accuracy (the teacher should be right often but not always, so a
correctness filter has work to do), the share of well-formed samples (a <think> block, then a
\\boxed{} answer, stopped at eos) and the mean completion length. For wrong samples it also
says where the working first departs from the reference working (column line, read-back line,
summary), to check that the errors are real reasoning slips rather than noise.
"""

import argparse
import re
from collections import Counter
from pathlib import Path

from distill.synthetic import USER_SUFFIX, make_problems, operation, solve

ROOT = Path(__file__).resolve().parents[1]
COMPLETION_RE = re.compile(r"<think>\n(.*?)\n</think>\n\n(.*)", re.DOTALL)
BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def boxed_answer(text: str) -> str | None:
    """The last \\boxed{} after </think>, or None when the completion is not well formed."""
    m = COMPLETION_RE.fullmatch(text)
    found = BOXED_RE.findall(m.group(2)) if m else []
    return found[-1].strip() if found else None


def first_slip(reasoning: str, reference: str) -> str:
    """Which kind of line the sampled working first differs from the reference in."""
    for got, want in zip([*reasoning.split("\n"), ""], reference.split("\n"), strict=False):
        if got != want:
            return "read-back line" if want.startswith(("Reading", "Dropping")) else "column line"
    return "summary"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "distill" / "assets" / "tiny-teacher"))
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-errors", type=int, default=0)
    args = ap.parse_args()

    from vllm import LLM, SamplingParams  # heavy: import only when run

    # Held-out (test-split) problems; seed 1, so not just the bundled demo set (seed 0's first 64).
    problems = make_problems(args.problems, seed=1, split="test")
    llm = LLM(
        model=args.model,
        dtype="float32",
        gpu_memory_utilization=0.2,
        max_model_len=512,
        seed=args.seed,
        enforce_eager=True,
    )
    tok = llm.get_tokenizer()
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"{p['problem']}\n{USER_SUFFIX}"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        + "<think>\n"
        for p in problems
    ]
    # R1 sampling. No per-request seed (vLLM CPU rejects it): the engine is seeded instead, yet on
    # CPU two runs still differ by a point or two of accuracy (batching changes the draws).
    params = SamplingParams(n=args.n, temperature=0.6, top_p=0.95, max_tokens=args.max_tokens)
    outputs = llm.generate(prompts, params)

    correct = well_formed = tokens = total = 0
    per_problem, slips, finish, by_op = [], Counter(), Counter(), Counter()
    errors = []
    for p, out in zip(problems, outputs, strict=True):
        right = 0
        for o in out.outputs:
            text = "<think>\n" + o.text  # the prefill is part of the completion (R1 format)
            answer = boxed_answer(text)
            total += 1
            tokens += len(o.token_ids)
            finish[o.finish_reason] += 1
            well_formed += answer is not None and o.finish_reason == "stop"
            if answer == p["answer"]:
                correct += 1
                right += 1
                by_op[operation(p)] += 1
            else:
                m = COMPLETION_RE.fullmatch(text)
                slips[first_slip(m.group(1), solve(p)) if m else "malformed"] += 1
                errors.append((p, text))
        per_problem.append(right)

    n = args.n
    print(f"teacher: {args.model}")
    print(f"samples: {total} ({len(problems)} held-out problems x {n}), T=0.6, top_p=0.95")
    print(f"accuracy (sample-level pass@1): {correct / total:.1%}")
    print(f"well-formed (<think>…</think> + \\boxed, stopped at eos): {well_formed / total:.1%}")
    print(f"mean completion tokens: {tokens / total:.1f}  finish reasons: {dict(finish)}")
    print(
        f"problems with all {n} right: {per_problem.count(n)}, mixed: "
        f"{sum(0 < r < n for r in per_problem)}, none right: {per_problem.count(0)}"
    )
    ops = Counter(operation(p) for p in problems)
    print(
        "accuracy by operation: "
        + ", ".join(f"{o} {by_op[o] / (n * k):.0%}" for o, k in ops.items())
    )
    print(f"where wrong samples first leave the reference working: {dict(slips)}")
    for p, text in errors[: args.show_errors]:
        print(f"\n--- {p['problem']} (gold {p['answer']})\n{text}")


if __name__ == "__main__":
    main()
