"""vLLM's engine core in its own process (vLLM's default) or in distill's, on this machine.

    python benchmarks/engine_process.py                  # the bundled tiny teacher, CPU
    python benchmarks/engine_process.py --rounds 3 --problems 256

Each round starts a fresh `python` per mode (alternating, so machine noise hits both alike)
that builds distill's `Engine` from the tiny profile with `engine.multiprocessing` set,
streams the R1 maths prompt of `--problems` problems x `--samples` samples through it, and
closes it. Prints, per mode, the median engine start, generation output tokens/s, close and
the whole process's wall time, and the ratios own-process / in-process. The profile's unset
default picks the in-process engine core on a CPU and vLLM's own process on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
from distill.prompts import build_messages, PREFILL
from distill.teachers import Request
from distill.teachers.profile import load_profile
from distill.teachers.vllm_engine import Engine

def main():
    own, problems, samples = sys.argv[1] == "own", int(sys.argv[2]), int(sys.argv[3])
    profile = load_profile("tiny", {"engine.multiprocessing": own})
    t = time.time()
    engine = Engine(profile)
    started = time.time()
    user = profile.prompt_for("math").user
    reqs = [Request(f"p{i}", build_messages(f"What is {i} + {2 * i}?", user), list(range(samples)), PREFILL)
            for i in range(problems)]
    tokens = sum(s.completion_tokens for batch in engine.stream(iter(reqs)) for s in batch)
    generated = time.time()
    engine.close()
    closed = time.time()
    print(json.dumps({"start": started - t, "tok_s": tokens / (generated - started),
                      "tokens": tokens, "close": closed - generated}))

if __name__ == "__main__":
    main()
"""


def run(mode: str, problems: int, samples: int) -> dict[str, float]:
    t = time.time()
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(problems), str(samples)],
                       capture_output=True, text=True, check=True)  # fmt: skip
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall"] = time.time() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"own": [], "in": []}
    for i in range(args.rounds):
        for mode in ("own", "in") if i % 2 == 0 else ("in", "own"):
            runs[mode].append(run(mode, args.problems, args.samples))
            r = runs[mode][-1]
            print(f"round {i + 1} {mode:>3}: start {r['start']:.1f} s, {r['tok_s']:,.0f} tok/s "
                  f"({r['tokens']:,} tokens), close {r['close']:.1f} s, process {r['wall']:.1f} s",
                  flush=True)  # fmt: skip
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("start", "tok_s", "close", "wall")}
           for m, rs in runs.items()}  # fmt: skip
    print(f"cores: {len(os.sched_getaffinity(0))}, tiny teacher, {args.problems} problems x {args.samples} samples, {args.rounds} rounds (medians)")  # fmt: skip
    for mode, label in (("own", "engine core in its own process"), ("in", "engine core in this process")):
        m = med[mode]
        print(f"{label:<32} start {m['start']:5.1f} s  {m['tok_s']:8,.0f} tok/s  close {m['close']:4.1f} s  process {m['wall']:5.1f} s")  # fmt: skip
    o, i = med["own"], med["in"]
    print(f"ratio own/in: start {o['start'] / i['start']:.2f}x, process {o['wall'] / i['wall']:.2f}x; "
          f"generation tok/s in/own {i['tok_s'] / o['tok_s']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
