"""Overhead of `distill generate` over raw `vllm.LLM.chat`, measured in the same run.

    python benchmarks/generate_overhead.py                 # tiny random Qwen2, CPU
    python benchmarks/generate_overhead.py --model PATH    # any local model

Both paths share one engine (same configuration, same weights, same process), get the same
prompts (the R1 maths prompt with the "<think>\\n" prefill) and the same sampling with n
samples per problem. The raw path is a single `LLM.chat` call over every conversation; the
distill path is the whole `generate()` entry function: dataset loading, prompt rendering,
streaming, record building, parquet shards and manifest. Prints output tokens/s of each and
their ratio (goal >= 0.98). Rounds alternate so machine noise hits both paths alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", help="model folder (default: a tiny random Qwen2 built here)")
    ap.add_argument("--problems", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()

    from vllm import SamplingParams

    from distill.generate import GenerateConfig, generate
    from distill.problems import DatasetSpec
    from distill.prompts import build_messages
    from distill.teachers.profile import load_profile
    from distill.teachers.vllm_engine import VLLMTeacher, sampling_kwargs
    from distill.tiny import make_model

    work = Path(tempfile.mkdtemp(prefix="gen-overhead-"))
    model = args.model or str(make_model(work / "model", hidden=128, layers=2, heads=2))
    profile = load_profile(
        "tiny",
        {
            "model": model,
            "engine.max_model_len": 1024,
            "engine.gpu_memory_utilization": 0.2,
            "sampling.max_tokens": args.max_tokens,
        },
    )
    data = work / "problems.jsonl"
    with data.open("w") as f:
        for i in range(args.problems):
            f.write(
                json.dumps(
                    {
                        "id": f"q{i}",
                        "problem": f"What is {i} + {2 * i + 7}?",
                        "answer": str(3 * i + 7),
                    }
                )
                + "\n"
            )
    template = profile.prompts["math"]
    conversations = [
        [
            *build_messages(f"What is {i} + {2 * i + 7}?", template.user, template.system),
            {"role": "assistant", "content": template.prefill},
        ]
        for i in range(args.problems)
    ]
    teacher = VLLMTeacher(profile)
    llm = teacher.engine.llm
    params = SamplingParams(**sampling_kwargs(profile.sampling, args.samples))

    def raw() -> tuple[int, float]:
        t = time.perf_counter()
        outs = llm.chat(
            conversations,
            params,
            use_tqdm=False,
            add_generation_prompt=False,
            continue_final_message=True,
        )
        return sum(len(c.token_ids) for o in outs for c in o.outputs), time.perf_counter() - t

    def distill(round_: int) -> tuple[int, float]:
        cfg = GenerateConfig(
            output=work / f"corpus-{round_}",
            data=DatasetSpec(dataset=str(data)),
            samples=args.samples,
            progress=False,
        )
        t = time.perf_counter()
        stats = generate(cfg, profile, teacher)
        return stats["completion_tokens_this_run"], time.perf_counter() - t

    # Warm-up: first-call costs (kernels, datasets import) belong to neither path.
    llm.chat(
        conversations[:8],
        params,
        use_tqdm=False,
        add_generation_prompt=False,
        continue_final_message=True,
    )
    distill(-1)
    results: dict[str, list[tuple[int, float]]] = {"raw vllm.LLM.chat": [], "distill generate": []}
    for r in range(args.rounds):
        results["raw vllm.LLM.chat"].append(raw())
        results["distill generate"].append(distill(r))
    teacher.close()

    rates = {}
    for name, runs in results.items():
        tokens = sum(t for t, _ in runs)
        seconds = sum(s for _, s in runs)
        rates[name] = tokens / seconds
        print(
            f"{name:20s} {tokens:>9,d} tokens in {seconds:7.2f} s = {rates[name]:>9,.0f} output tok/s"
        )
    # Two cores are shared by the engine, its worker and this process: single rounds swing by
    # +-10%, so rounds alternate; the figure is total tokens over total time of all rounds.
    per_round = sorted(
        (d[0] / d[1]) / (r[0] / r[1])
        for r, d in zip(results["raw vllm.LLM.chat"], results["distill generate"], strict=True)
    )
    overall = rates["distill generate"] / rates["raw vllm.LLM.chat"]
    print(f"per-round ratios: {', '.join(f'{x:.3f}' for x in per_round)}")
    print(
        f"ratio distill/raw = {overall:.3f} over {args.rounds} alternating rounds (median per round "
        f"{statistics.median(per_round):.3f}; goal >= 0.98); {args.problems} problems x n={args.samples}, "
        f"max_tokens {args.max_tokens}"
    )


if __name__ == "__main__":
    main()
