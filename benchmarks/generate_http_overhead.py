"""Cost of serving the teacher over HTTP: `vllm serve` + distill's openai backend vs raw
`vllm.LLM` in-process, on the same prompts and engine configuration, in the same run.

    python benchmarks/generate_http_overhead.py                 # tiny random Qwen2, CPU
    python benchmarks/generate_http_overhead.py --model PATH

Phase 1 runs one `LLM.chat` call over every conversation in-process, then frees the engine;
phase 2 starts `distill serve` (vllm serve) with the same engine settings and runs the whole
`distill generate` stage through the openai backend (n samples per request, bounded
concurrency). Prints output tokens/s of each and their ratio: what HTTP, JSON and the client
cost next to an in-process engine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit("vllm serve exited early")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit("vllm serve did not start")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model")
    ap.add_argument("--problems", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=256)
    args = ap.parse_args()
    os.environ.setdefault("DISTILL_NO_PROGRESS", "1")

    from distill.generate import GenerateConfig, generate
    from distill.problems import DatasetSpec
    from distill.prompts import build_messages
    from distill.teachers.profile import load_profile
    from distill.tiny import make_model

    work = Path(tempfile.mkdtemp(prefix="http-overhead-"))
    model = args.model or str(make_model(work / "model", hidden=128, layers=2, heads=2))
    engine = {
        "model": model,
        "engine.max_model_len": 1024,
        "engine.gpu_memory_utilization": 0.2,
        "sampling.max_tokens": args.max_tokens,
    }
    profile_file = work / "teacher.yaml"
    import yaml

    from distill.config import to_dict

    local = load_profile("tiny", engine)
    profile_file.write_text(
        yaml.safe_dump({k: v for k, v in to_dict(local).items() if k not in ("name",)})
    )
    data = work / "problems.jsonl"
    texts = [f"What is {i} + {2 * i + 7}?" for i in range(args.problems)]
    data.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "problem": t, "answer": str(3 * i + 7)}) + "\n"
            for i, t in enumerate(texts)
        )
    )

    # Phase 1: raw vllm.LLM, in-process.
    from vllm import SamplingParams

    from distill.teachers.vllm_engine import Engine, sampling_kwargs

    template = local.prompts["math"]
    conversations = [
        [*build_messages(t, template.user), {"role": "assistant", "content": template.prefill}]
        for t in texts
    ]
    eng = Engine(local)
    params = SamplingParams(**sampling_kwargs(local.sampling, args.samples))
    eng.llm.chat(
        conversations[:8],
        params,
        use_tqdm=False,
        add_generation_prompt=False,
        continue_final_message=True,
    )
    t = time.perf_counter()
    outs = eng.llm.chat(
        conversations,
        params,
        use_tqdm=False,
        add_generation_prompt=False,
        continue_final_message=True,
    )
    raw_s = time.perf_counter() - t
    raw_tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    eng.close()
    del eng, outs

    # Phase 2: vllm serve + the openai backend, through the whole generate stage.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "serve", "--teacher", str(profile_file), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, server)
        served = load_profile(str(profile_file), {
            "backend": "openai", "server.base_url": url, "server.continue_final_message": True,
            "server.max_concurrency": args.concurrency,
        })  # fmt: skip
        warm = GenerateConfig(
            output=work / "warm",
            data=DatasetSpec(dataset=str(data), limit=8),
            samples=args.samples,
            progress=False,
        )
        generate(warm, served)
        cfg = GenerateConfig(
            output=work / "corpus",
            data=DatasetSpec(dataset=str(data)),
            samples=args.samples,
            progress=False,
        )
        t = time.perf_counter()
        stats = generate(cfg, served)
        http_s = time.perf_counter() - t
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    http_tokens = stats["completion_tokens_this_run"]
    raw_rate, http_rate = raw_tokens / raw_s, http_tokens / http_s
    print(
        f"raw vllm.LLM.chat (in-process)     {raw_tokens:>9,d} tokens in {raw_s:7.2f} s = {raw_rate:>9,.0f} output tok/s"
    )
    print(
        f"vllm serve + distill openai backend {http_tokens:>9,d} tokens in {http_s:7.2f} s = {http_rate:>9,.0f} output tok/s"
    )
    print(
        f"ratio http/raw = {http_rate / raw_rate:.3f}; {args.problems} problems x n={args.samples}, max_tokens {args.max_tokens}, "
        f"concurrency {args.concurrency}"
    )


if __name__ == "__main__":
    main()
