"""Adaptive rejection sampling (`--until-correct 2 --samples 16`) against fixed `--samples 16`
and fixed `--samples 4`, measured in one run on one engine.

    python benchmarks/adaptive_sampling.py                  # 256 held-out arithmetic problems
    python benchmarks/adaptive_sampling.py --problems 64 --k 2 --ceiling 16 --fixed 16,4

The bundled tiny teacher (distill/assets/tiny-teacher) on the demo's arithmetic task: it gets
addition nearly always right and multiplication about half the time, so some problems are
easy and some hard. The user wants K kept samples per problem for as many problems as
possible. Each arm is the whole `generate()` entry function on the same engine, then the
real `distill filter` decides what is kept, with the settings `distill demo` uses for this
task: keep all, no dedup (schoolbook column arithmetic is near-deterministic, so most samples
of a problem are the same text; the adaptive arm runs with --no-distinct to match) and no
near-duplicate-problem detection ("What is a + b?" problems look alike as text). Printed per arm:
teacher output tokens, problems reaching K kept samples, problems with at least one, teacher
tokens per problem reaching K, wall time; for the adaptive arm also its engine idle time.
Goal: >= 2x fewer tokens per problem reaching K than fixed-16 with as many problems reaching
K (within noise), and more problems reaching K than fixed-4.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import Counter
from pathlib import Path


def kept_per_problem(corpus: Path, out: Path) -> tuple[Counter[str], int]:
    """Kept samples per problem by `distill filter` (keep all), and its count of problems."""
    from distill.filter import FilterConfig, filter_corpus
    from distill.filters.corpus_checks import CorpusConfig
    from distill.records import read_corpus

    corpus_cfg = CorpusConfig(dedup=False, near_dup_threshold=0)  # as `distill demo` filters
    cfg = FilterConfig(input=corpus, output=out, corpus=corpus_cfg,
                       progress=False, report=False)  # fmt: skip
    report = filter_corpus(cfg)
    kept = read_corpus(out / "kept", columns=["problem_id"]).column("problem_id").to_pylist()
    return Counter(kept), report.get("problems", 0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--problems", type=int, default=256)
    ap.add_argument("--k", type=int, default=2, help="kept samples wanted per problem")
    ap.add_argument("--ceiling", type=int, default=16, help="--samples of the adaptive arm")
    ap.add_argument("--fixed", default="16,4", help="--samples of the fixed arms")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from distill import synthetic
    from distill.generate import GenerateConfig, generate
    from distill.problems import DatasetSpec
    from distill.records import read_corpus, read_manifest
    from distill.teachers import make_teacher
    from distill.teachers.profile import load_profile

    work = Path(tempfile.mkdtemp(prefix="adaptive-"))
    data = work / "problems.jsonl"
    problems = synthetic.make_problems(args.problems, args.seed, "test")
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))
    profile = load_profile("tiny")
    t0 = time.time()
    teacher = make_teacher(profile)
    print(f"engine up in {time.time() - t0:.0f} s; {args.problems} problems, K = {args.k}")

    arms = [(f"adaptive --until-correct {args.k} --samples {args.ceiling}", args.ceiling, args.k)]
    arms += [(f"fixed --samples {n}", n, None) for n in map(int, args.fixed.split(","))]
    results = []
    try:
        for name, n, k in arms:
            out = work / name.replace(" ", "_").replace("-", "")
            cfg = GenerateConfig(output=out, data=DatasetSpec(dataset=str(data)), samples=n,
                                 until_correct=k, distinct=False, progress=False)  # fmt: skip
            t = time.time()
            stats = generate(cfg, profile, teacher)
            wall = time.time() - t
            tokens = sum(read_corpus(out, ["completion_tokens"]).column(0).to_pylist())
            kept, _ = kept_per_problem(out, work / f"{out.name}-filtered")
            reach = sum(c >= args.k for c in kept.values())
            row = {"arm": name, "samples": stats["rows"], "teacher_tokens": tokens,
                   "reached_k": reach, "at_least_one": len(kept), "wall_s": round(wall, 1),
                   "tokens_per_reached": round(tokens / max(reach, 1))}  # fmt: skip
            if k:
                a = read_manifest(out)["adaptive"]
                row.update(idle_s=a["idle_s"], idle_share=a["idle_share"],
                           mean_inflight=a["mean_inflight_samples"], rounds_mean=a["rounds_mean"],
                           rounds_max=a["rounds_max"], self_reached_k=a["reached_k"])  # fmt: skip
            results.append(row)
            print(json.dumps(row))
    finally:
        teacher.close()

    p = args.problems
    print(
        f"\n| arm | samples | teacher tokens | reach K={args.k} | >= 1 kept | tokens / problem reaching K | wall |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['arm']} | {r['samples']:,} | {r['teacher_tokens']:,} | {r['reached_k']} / {p} "
              f"| {r['at_least_one']} / {p} | {r['tokens_per_reached']:,} | {r['wall_s']} s |")  # fmt: skip
    ad, f16 = results[0], results[1]
    # binomial s.e. of a difference of two shares of p problems (independent draws)
    se = math.sqrt(sum(x * (1 - x) for x in (ad["reached_k"] / p, f16["reached_k"] / p)) / p) * p
    print(
        f"\ntokens per problem reaching K: fixed-16 / adaptive = "
        f"{f16['tokens_per_reached'] / max(ad['tokens_per_reached'], 1):.2f}x (goal >= 2)"
    )
    print(
        f"problems reaching K: adaptive - fixed-16 = {ad['reached_k'] - f16['reached_k']:+d} "
        f"(s.e. of the difference ~{se:.1f})"
    )
    if len(results) > 2:
        print(
            f"problems reaching K: adaptive - fixed-{arms[2][1]} = "
            f"{ad['reached_k'] - results[2]['reached_k']:+d} (goal > 0)"
        )
    print(
        f"adaptive engine idle (no request in flight while work remained): {ad['idle_s']} s "
        f"= {ad['idle_share']:.1%} of its wall time; mean samples in flight {ad['mean_inflight']}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":  # vLLM's worker processes re-import __main__
    main()
