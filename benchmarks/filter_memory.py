"""Peak memory of `distill filter` against corpus size: does it stay flat?

    python benchmarks/filter_memory.py [--rows 100000 1000000] [--workers N] [--verdicts cached]

Writes a synthetic maths corpus per size (parquet shards in the trace-record layout, built by
`filter_throughput.maths_rows`: 16 samples per problem, short ~300-character traces, 70%
correct), with exact duplicate completions (2% of rows) and near-duplicate problems (one in
50 repeats an earlier problem's wording plus a sentence), then runs `distill filter` on it in
a subprocess with every check on (exact dedup, MinHash near-duplicates, readability).
Prints, per size, the filter process's own peak RSS (VmHWM, polled), the peak RSS of the
largest process of its tree (wait4: the main process or a verification worker) and the wall
time, then the ratio of the largest size's peak to the smallest's against the goal (issue
#19: within 1.5x from 100k to 1M rows).

`--verdicts cached` first fills the output's verdict cache (`.work/`) as a finished
verification would (the readability rules run for real; correctness compares the boxed answer
with the gold, which is what math-verify decides on these answers, at a fraction of its
cost), so `distill filter` verifies nothing: what a rerun or `--reduce` does. Everything else
(reading every verdict back, dedup, selection, writing both splits, the report) runs as in a
first run, at sizes whose verification would take hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from filter_throughput import maths_rows, reasoning, write_corpus  # noqa: E402

GOAL = 1.5
CHUNK = 16_000  # rows generated and written per part: the generator's memory stays small


def problem_text(rng: random.Random, q: int) -> str:
    return f"Problem {q}. " + reasoning(rng, 160)


def write_synthetic(n: int, folder: Path, samples: int, chars: int, seed: int = 0) -> None:
    """n rows in parts of CHUNK rows (a folder of part folders: how sharded runs lay out)."""
    rng = random.Random(seed)
    texts: list[str] = []  # recent problem texts, to copy into near-duplicates
    for part, start in enumerate(range(0, n, CHUNK)):
        rows = maths_rows(min(CHUNK, n - start), seed=seed + part, chars=chars, samples=samples)
        problems: dict[str, str] = {}
        for i, row in enumerate(rows):
            pid = f"p{part}-{row['problem_id']}"
            if pid not in problems:
                near = texts and rng.random() < 0.02
                text = (
                    rng.choice(texts) + " Show your work." if near else problem_text(rng, start + i)
                )
                problems[pid] = text
                texts = [*texts[-200:], text]
            row.update(id=f"{pid}/{row['sample_index']}", problem_id=pid, problem=problems[pid])
            if i and rng.random() < 0.02:  # a resampled identical completion
                prev = rows[i - 1]
                row.update(completion=prev["completion"], reasoning=prev["reasoning"],
                           answer=prev["answer"])  # fmt: skip
        write_corpus(rows, folder / f"part-{part:05d}")


def fill_cache(src: Path, out: Path) -> None:
    """Every row's verdict in `out`'s verdict cache, as a finished verification leaves it."""
    import pyarrow.parquet as pq

    from distill.filters.readability import RowChecksConfig
    from distill.verify import VerifyConfig
    from distill.verify.cache import VerdictCache, row_digest
    from distill.verify.service import settings_digest

    rules = RowChecksConfig()
    cache = VerdictCache(out / ".work", settings_digest(VerifyConfig(), rules))
    for f in sorted(src.rglob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            gold, answer = json.loads(row["reference"]), row["answer"]
            said = answer[answer.index("\\boxed{") + 7 : answer.rindex("}$")]
            right = said == gold
            correctness = {"ok": right, "reason": None if right else "wrong_answer",
                           "gold": gold, "extracted": said}  # fmt: skip
            cache.add(row["id"], row_digest(row), {"correctness": correctness, **rules(row)})
    cache.flush()
    getattr(cache, "close", lambda: None)()  # (the index of the cache, where it has one)


def peak_of(cmd: list[str], log: Path) -> dict[str, float]:
    """Run `cmd`; its own peak RSS (VmHWM polled from /proc, MiB), the largest peak of its
    process tree (wait4's ru_maxrss, MiB) and the wall time."""
    hwm = [0.0]
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def poll() -> None:
            status = Path(f"/proc/{proc.pid}/status")
            while not done.is_set():
                try:
                    for line in status.read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            hwm[0] = max(hwm[0], int(line.split()[1]) / 1024)
                except OSError:
                    return
                done.wait(0.2)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        watcher.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"main_mib": hwm[0], "tree_mib": usage.ru_maxrss / 1024, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--samples", type=int, default=16, help="samples per problem")
    ap.add_argument("--chars", type=int, default=300, help="reasoning characters per trace")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--verdicts", choices=["real", "cached"], default="real",
                    help="cached: fill the verdict cache first (see above)")  # fmt: skip
    ap.add_argument("--work", type=Path, default=None, help="folder for corpora (default: tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the corpora and outputs")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="filter-memory-", dir=args.work))
    distill = shutil.which("distill") or str(Path(sys.executable).parent / "distill")
    results = {}
    try:
        for n in args.rows:
            src, out = work / f"in-{n}", work / f"out-{n}"
            t = time.perf_counter()
            write_synthetic(n, src, args.samples, args.chars)
            if args.verdicts == "cached":
                fill_cache(src, out)
            made = time.perf_counter() - t
            cmd = [distill, "filter", "--input", str(src), "--output", str(out)]
            cmd += ["--workers", str(args.workers)] if args.workers else []
            r = peak_of(cmd, work / f"filter-{n}.log")
            counts = json.loads((out / "report.json").read_text())["counts"]
            results[n] = r
            print(f"{n:>9,} rows: filter peak RSS {r['main_mib']:7.1f} MiB (largest process of "
                  f"its tree {r['tree_mib']:7.1f} MiB), wall {r['wall_s']:7.1f} s "
                  f"({n / r['wall_s']:,.0f} rows/s), kept {counts['kept']:,} "
                  f"[corpus{' and verdicts' if args.verdicts == 'cached' else ''} written in {made:.0f} s]", flush=True)  # fmt: skip
            if not args.keep:
                shutil.rmtree(src)
                shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if len(results) >= 2:
        small, large = min(results), max(results)
        ratio = results[large]["main_mib"] / results[small]["main_mib"]
        tree = results[large]["tree_mib"] / results[small]["tree_mib"]
        verdict = "met" if ratio <= GOAL else "not met"
        print(f"peak RSS {large:,} / {small:,} rows: {ratio:.2f}x (tree {tree:.2f}x); "
              f"goal <= {GOAL}x: {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
