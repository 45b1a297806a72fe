"""Throughput of `distill filter`, measured against baselines in the same run.

    python benchmarks/filter_throughput.py [--rows 8000] [--workers N] [--only maths|code] [--rounds 3]

1. Verification: a sequential loop of math-verify parse + verify (the open-r1 way: its
   accuracy reward parses the whole completion, one row after another, in one process, with
   math-verify's own signal timeouts) vs `distill filter` (the whole stage: parquet in, every
   per-row check in worker processes, dedup, report, kept/rejected out) on the same maths
   traces (~2k tokens each), 16 traces per problem sharing one gold. Prints rows/s of each and
   the ratio (goal >= 3x on 2 cores): medians of alternating rounds, each in fresh processes
   (imports, the workers' fork server and its preload counted every time); asserts the
   verdicts equal the slow path's on every row.
2. Code: tests per second of `distill filter` on a code corpus with many stdin tests per
   problem (a sample's tests run in one sandbox, a forked process each), against the floor of
   any process-per-test executor (starting one Python per test on every core) and against the
   previous path (one sandboxed interpreter per test).
3. Adversarial rows (power towers, 60k-character LaTeX) cost no more than their timeout.
4. Readability checks alone, one core, on 8k-token traces: rows/s (goal >= 2,000).

Golds come from MATH-500 (../shared/benchmarks) when present, else a built-in list; traces
are synthetic R1-style reasoning with a boxed answer, 70% correct.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from distill.prompts import format_trace

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "benchmarks" / "math500.jsonl"
FALLBACK_GOLDS = ["\\frac{1}{2}", "7425000", "[2, 5)", "\\sqrt{2}", "x^2+2x+1", "\\{1,2,3\\}", "30^\\circ", "12", "-3", "\\frac{\\sqrt{3}}{2}"]  # fmt: skip
SENTENCES = [
    "Let me compute {a} times {b}, which gives {c}.",
    "Wait, maybe I should double-check the sign of the {w} term.",
    "So we have $x^{{{a}}} + {b}x = {c}$, hence $x = \\frac{{{c}}}{{{b}}}$.",
    "Hmm, that doesn't look right; the {w} should be {a}.",
    "Alternatively, consider the substitution $y = x + {a}$ and expand $(y - {a})^2$.",
    "Therefore the {w} equals {c}, and the remainder is {b}.",
    "Now, the sum $\\sum_{{k=1}}^{{{a}}} k = {c}$ by the usual formula.",
    "I recall that {w} numbers satisfy this only when $n \\equiv {b} \\pmod{{{a}}}$.",
]
WORDS = [
    "prime",
    "even",
    "odd",
    "square",
    "triangular",
    "linear",
    "quadratic",
    "constant",
    "leading",
    "middle",
]


def reasoning(rng: random.Random, chars: int) -> str:
    parts, n = [], 0
    while n < chars:
        p = " ".join(
            rng.choice(SENTENCES).format(
                a=rng.randint(2, 99),
                b=rng.randint(2, 99),
                c=rng.randint(100, 9999),
                w=rng.choice(WORDS),
            )
            for _ in range(rng.randint(2, 6))
        )
        parts.append(p)
        n += len(p) + 2
    return "\n\n".join(parts)


def golds() -> list[str]:
    if SHARED.is_file():
        return [json.loads(line)["answer"] for line in SHARED.read_text().splitlines()]
    return FALLBACK_GOLDS


def near_miss(gold: str, rng: random.Random) -> str:
    """A wrong answer of the gold's own shape: one digit changed (else a term added)."""
    digits = [i for i, c in enumerate(gold) if c.isdigit()]
    if not digits:
        return f"{gold}+{rng.randint(1, 9)}"
    i = rng.choice(digits)
    return gold[:i] + rng.choice([d for d in "0123456789" if d != gold[i]]) + gold[i + 1 :]


def maths_rows(
    n: int, seed: int = 0, chars: int = 8000, samples: int = 1, wrong: str = "other"
) -> list[dict]:
    """n rows: n / samples problems, `samples` consecutive traces each (rejection sampling).
    30% are wrong: another problem's gold (`wrong="other"`: the same few hundred strings
    recur across the corpus) or a near miss of the gold (`"near"`: one digit changed, so
    wrong answers rarely repeat, as in real R1 corpora)."""
    rng = random.Random(seed)
    pool = golds()
    rows = []
    for i in range(n):
        q, k = divmod(i, samples)
        gold = pool[q % len(pool)]
        if rng.random() < 0.7:
            said = gold
        else:
            said = rng.choice(pool) if wrong == "other" else near_miss(gold, rng)
        r = reasoning(rng, chars)
        answer = f"{rng.choice(CLOSERS)} $\\boxed{{{said}}}$."
        rows.append({
            "id": f"q{q}/{k}", "problem_id": f"q{q}", "sample_index": k, "problem": f"Problem {q}: find the value.",
            "domain": "math", "reference": json.dumps(gold), "completion": format_trace(r, answer),
            "reasoning": r, "answer": answer, "finish_reason": "stop",
        })  # fmt: skip
    return rows


CLOSERS = ["Putting it together, the answer is", "So the final answer is", "Therefore we get",
           "Hence the value is", "Thus,", "The answer:"]  # fmt: skip


def write_corpus(rows: list[dict], folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "shard-00000.parquet")


def fresh(fn, *args):
    """`fn(*args)` in a new process: sympy, math-verify and distill cache results globally, so
    a loop run after another in one process would find the work of the first already done."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def sequential(rows: list[dict]) -> float:
    """open-r1's accuracy reward (src/open_r1/rewards.py): parse the gold, parse the whole
    completion with its extraction config, verify; one row after another, in one process."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    pred_cfg = [
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                nits=False,
                malformed_operators=False,
                basic_latex=True,
                equations=True,
                boxed="all",
                units=True,
            ),
            boxed_match_priority=0,
            try_extract_without_anchor=False,
        )
    ]
    t = time.perf_counter()
    for row in rows:
        gold = parse(f"${json.loads(row['reference'])}$", extraction_mode="first_match")
        if gold:
            pred = parse(
                row["completion"], extraction_config=pred_cfg, extraction_mode="first_match"
            )
            verify(gold, pred)
    return time.perf_counter() - t


def sequential_own(rows: list[dict], cached: bool = False) -> tuple[float, dict[str, dict]]:
    """distill's maths check in one process: separates what parallel workers buy from what the
    check itself costs. `cached=False` is the slow path (answer part only, gold first, the gold
    parsed again for every row, no shortcut), whose verdicts the fast path must reproduce;
    True is what a worker runs (the gold parsed once per problem, the boxed-answer shortcut)."""
    from distill.verify.maths import check_math

    verdicts = {}
    t = time.perf_counter()
    for row in rows:
        verdicts[row["id"]] = check_math(row["reference"], row["answer"], None, gold_cache=cached).as_dict()
    return time.perf_counter() - t, verdicts


def filter_verdicts(out: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    got = {}
    for split in ("kept", "rejected"):
        for f in sorted((out / split).glob("shard-*.parquet")):
            for row in pq.read_table(f, columns=["id", "checks"]).to_pylist():
                got[row["id"]] = json.loads(row["checks"])["correctness"]
    return got


def run_filter(
    rows: list[dict], work: Path, workers: int | None, verify_timeout: float = 10.0, dedup: bool = True
) -> tuple[float, dict]:
    from distill.filter import FilterConfig, filter_corpus
    from distill.filters.corpus_checks import CorpusConfig
    from distill.verify import VerifyConfig

    src, out = work / f"in-{len(rows)}-{time.time_ns()}", work / f"out-{time.time_ns()}"
    write_corpus(rows, src)
    cfg = FilterConfig(
        input=src,
        output=out,
        verify=VerifyConfig(workers=workers, verify_timeout=verify_timeout),
        progress=False,
        report=False,
        # the code corpus's problems share their wording: near-duplicate detection would drop them
        corpus=CorpusConfig() if dedup else CorpusConfig(dedup=False, near_dup_threshold=0.0),
    )
    t = time.perf_counter()
    report = filter_corpus(cfg)
    elapsed = time.perf_counter() - t
    report["verdicts"] = filter_verdicts(out)
    return elapsed, report


def readability(n: int, tokens: int = 8000) -> float:
    from distill.filters.readability import RowChecksConfig

    rng = random.Random(1)
    rows = []
    for _ in range(n):
        r = reasoning(rng, int(tokens * 3.6))
        rows.append({"problem": "Find all integers $n$ such that $n^2 + 3n$ is prime.", "domain": "math", "reasoning": r,
                     "answer": "So \\boxed{2}.", "completion": format_trace(r, "So \\boxed{2}."), "finish_reason": "stop"})  # fmt: skip
    checks = RowChecksConfig()  # every rule, as the filter runs them in its workers
    t = time.perf_counter()
    for row in rows:
        checks(row)
    return n / (time.perf_counter() - t)


CODE_SOLUTIONS = [  # (weight, program): R1-style answers to "print the sum of the numbers"
    (6, "print(sum(map(int, input().split())))"),
    (2, "import sys\nnums = [int(x) for x in sys.stdin.read().split()]\ntotal = 0\nfor x in nums:\n    total += x\nprint(total)"),
    (1, "print(sum(map(int, input().split())) + 1)"),  # wrong on the first test
    (1, "xs = list(map(int, input().split()))\nprint(sum(x for x in xs if x < 990))"),  # wrong late
]


def code_rows(problems: int, samples: int, tests: int, seed: int = 0) -> list[dict]:
    """A code corpus: stdin/stdout problems with `tests` cases each, `samples` answers per
    problem (80% correct, some wrong at the first test, some only on a late one)."""
    rng = random.Random(seed)
    programs = [p for w, p in CODE_SOLUTIONS for _ in range(w)]
    rows = []
    for q in range(problems):
        cases = [[rng.randint(0, 999) for _ in range(rng.randint(1, 30))] for _ in range(tests)]
        ref = json.dumps({"inputs": [" ".join(map(str, c)) + "\n" for c in cases],
                          "outputs": [f"{sum(c)}\n" for c in cases]})  # fmt: skip
        for k in range(samples):
            answer = f"Sum them.\n```python\n{rng.choice(programs)}\n```"
            rows.append({"id": f"c{q}/{k}", "problem_id": f"c{q}", "sample_index": k,
                         "problem": f"Print the sum of the numbers on one line (problem {q}).",
                         "domain": "code", "reference": ref, "answer": answer, "finish_reason": "stop",
                         "completion": format_trace(f"Read the numbers of problem {q}.", answer)})  # fmt: skip
    return rows


def python_start_floor(starts: int = 40) -> float:
    """Seconds to start and stop one Python (the sandbox's interpreter, isolated mode): what any
    executor that starts a process per test pays per test before running anything."""
    import subprocess

    from distill.verify.sandbox import isolation

    interpreter = isolation()["interpreter"] or sys.executable
    times = []
    for _ in range(starts):
        t = time.perf_counter()
        subprocess.run([interpreter, "-I", "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def tests_run(verdicts: dict[str, dict]) -> int:
    """Tests executed: all of a passing sample's, up to and including the failing one else."""
    return sum(v["passed"] + (0 if v["ok"] else 1) for v in verdicts.values())


def code_benchmark(args: argparse.Namespace, work: Path, cores: int) -> None:
    from distill.verify.code_tests import check_code

    rows = code_rows(args.code_problems, args.code_samples, args.code_tests)
    workers = min(cores, args.workers or cores)
    floor = python_start_floor()
    elapsed, report = run_filter(rows, work, args.workers, dedup=False)
    verdicts = {k: {"ok": v["ok"], "passed": v.get("passed", 0)} for k, v in report["verdicts"].items()}
    ran = tests_run(verdicts)
    ours = ran / elapsed
    floor_rate = workers / floor  # every core starting interpreters, nothing else
    # the previous path, one sandboxed interpreter per test, on a sample of the rows
    sample = rows[: max(4, len(rows) // 40)]
    t = time.perf_counter()
    old_ran = 0
    for row in sample:
        for stdin, out in zip(*json.loads(row["reference"]).values(), strict=True):
            single = json.dumps({"inputs": [stdin], "outputs": [out]})
            old_ran += 1
            if not check_code(single, row["answer"]).ok:
                break
    old_rate = old_ran / (time.perf_counter() - t) * workers
    kept = report["counts"]["kept"]
    print(f"code: {len(rows)} samples of {args.code_problems} problems, {args.code_tests} stdin tests each; "
          f"{ran:,} tests run (early stop at the first failure), kept {kept}")  # fmt: skip
    print(f"floor of a process per test: {1000 * floor:.1f} ms to start one Python -> at most "
          f"{floor_rate:,.0f} tests/s on {workers} cores")  # fmt: skip
    print(f"one sandboxed interpreter per test (the previous path): {old_rate:,.0f} tests/s "
          f"(measured on {len(sample)} samples, scaled to {workers} cores)")  # fmt: skip
    print(f"distill filter, a sample's tests in one sandbox: {ours:,.0f} tests/s ({elapsed:.1f} s)")
    print(f"code ratio distill/floor = {ours / floor_rate:.2f}x; distill/previous = {ours / old_rate:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--samples", type=int, default=16, help="traces per problem (OpenThoughts: 16)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the maths loop and stage (medians)")
    ap.add_argument("--workers", type=int, default=None, help="default: every core")
    ap.add_argument("--readability-rows", type=int, default=500)
    ap.add_argument("--code-problems", type=int, default=40)
    ap.add_argument("--code-samples", type=int, default=8)
    ap.add_argument("--code-tests", type=int, default=50, help="stdin tests per problem")
    ap.add_argument("--only", choices=["maths", "code"], default=None, help="run one part")
    ap.add_argument("--wrong", choices=["other", "near"], default="other",
                    help="wrong maths answers: another problem's gold, or a near miss of the gold")  # fmt: skip
    args = ap.parse_args()
    os.environ.setdefault("DISTILL_NO_PROGRESS", "1")
    import logging

    logging.disable(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="filter-bench-"))
    cores = len(os.sched_getaffinity(0))
    try:
        if args.only != "maths":
            code_benchmark(args, work, cores)
        if args.only == "code":
            return
        rows = maths_rows(args.rows, samples=args.samples, wrong=args.wrong)
        own, slow = fresh(sequential_own, rows)
        own_fast, _ = fresh(sequential_own, rows, True)
        # This VM's speed drifts by 20-30% within minutes: the loop and the stage alternate,
        # each round in fresh processes, and the ratio is that of the medians.
        seqs, pars = [], []
        for _ in range(args.rounds):
            seqs.append(fresh(sequential, rows))
            par, report = fresh(run_filter, rows, work, args.workers)
            pars.append(par)
        seq, par = statistics.median(seqs), statistics.median(pars)
        fast = report["verdicts"]
        differ = [k for k in slow if fast.get(k) != slow[k]]
        assert not differ, f"{len(differ)} rows differ from the slow path, e.g. {differ[0]}: {fast.get(differ[0])} vs {slow[differ[0]]}"
        print(
            f"cores: {cores}, rows: {args.rows} maths traces, {args.samples} per problem (golds: {'MATH-500' if SHARED.is_file() else 'built-in'}; wrong answers: {args.wrong})"
        )
        print(
            f"sequential math-verify loop  {args.rows / seq:8.1f} rows/s  ({seq:.1f} s)  (open-r1: whole completion)"
        )
        print(
            f"distill's check, sequential  {args.rows / own:8.1f} rows/s  ({own:.1f} s)  (answer part only, one process)"
        )
        print(
            f"distill's check + shortcut   {args.rows / own_fast:8.1f} rows/s  ({own_fast:.1f} s)  (gold once per problem, boxed-answer shortcut, one process)"
        )
        print(
            f"distill filter (whole stage) {args.rows / par:8.1f} rows/s  ({par:.1f} s), kept {report['counts']['kept']}"
        )
        print(
            f"maths ratio distill/sequential = {seq / par:.2f}x (goal >= 3x on 2 cores; medians of "
            f"{args.rounds} rounds, each round's: {', '.join(f'{s / p:.2f}x' for s, p in zip(seqs, pars, strict=True))}); "
            f"vs distill's slow path in one process: {own / par:.2f}x"
        )
        print(f"verdicts identical to the slow path (gold parsed per row) on all {len(slow)} rows")

        timeout = 3.0
        adversarial = maths_rows(200, seed=2)
        for k, answer in enumerate(
            [
                "\\boxed{9^{9^{9^{9^{9}}}}}",
                "\\boxed{"
                + "+".join(f"\\frac{{{i}}}{{{i + 1}}}x^{{{i}}}" for i in range(4000))
                + "}",
            ]
            * 2
        ):
            adversarial[k]["answer"] = answer
            adversarial[k]["completion"] = f"<think>\nx\n</think>\n\n{answer}"
        clean_time, _ = run_filter(maths_rows(200, seed=2), work, args.workers, timeout)
        adv_time, rep = run_filter(adversarial, work, args.workers, timeout)
        extra = adv_time - clean_time
        budget = 4 * timeout / min(cores, args.workers or cores)
        print(
            f"adversarial: 4 rows (2 power towers, 2 x 60k-char LaTeX) add {extra:.1f} s over the clean run "
            f"(their timeouts allow {budget:.1f} s on {min(cores, args.workers or cores)} workers); "
            f"verify_timeout rows: {rep['reasons'].get('verify_timeout', 0)}"
        )

        rate = readability(args.readability_rows)
        print(f"readability checks, one core, 8k-token traces: {rate:,.0f} rows/s (goal >= 2,000)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
