"""`distill demo`: the whole recipe on a CPU in minutes, with a tiny real reasoning teacher.

    distill demo            # about 10 minutes on 2 cores
    distill demo --quick    # the CI version

The bundled teacher (distill/assets/tiny-teacher, trained by scripts/train_tiny_teacher.py)
does column arithmetic step by step inside <think> and is right often, not always (it slips
most on multiplication). The students start from a tiny base model (distill/assets/tiny-base,
scripts/train_tiny_base.py) pretrained on plain-text column arithmetic that has never seen the
<think> format, as R1's students are base models. The demo generates traces from the teacher,
filters them, fine-tunes two copies of the base with the same budget, one on the filtered
corpus and one on the unfiltered traces, and evaluates the teacher and the students on
held-out problems. Everything lands under one output folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import synthetic
from distill.config import option
from distill.errors import UserError
from distill.evaluate import EvalConfig, evaluate
from distill.filter import FilterConfig, filter_corpus
from distill.filters.corpus_checks import CorpusConfig
from distill.generate import GenerateConfig, generate
from distill.lock import output_lock
from distill.log import console, progress
from distill.metrics import mean_and_stderr, paired_difference
from distill.plots import curves, grouped_bars, log_series
from distill.problems import DatasetSpec
from distill.records import atomic_write_bytes, atomic_write_json
from distill.rl_demo import RLDemoConfig, run_rl_demo
from distill.students.recipe import load_recipe
from distill.students.sft import model_source
from distill.synthetic import MAX_DIGITS, MIN_DIGITS, operation
from distill.teachers.profile import load_profile
from distill.teachers.vllm_engine import VLLMTeacher
from distill.train import TrainConfig, train

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """The demo's sizes; --quick shrinks them for CI."""

    output: Path = option(Path("runs/demo"), help="Folder for everything the demo writes.")
    quick: bool = option(False, help="Smaller sizes (CI): minutes instead of ten.")
    train_problems: int = option(800, help="Problems the teacher answers (training traces).")
    test_problems: int = option(200, help="Held-out problems for the evaluations.")
    samples: int = option(4, help="Teacher samples per training problem.")
    eval_samples: int = option(2, help="Samples per test problem in the evaluations.")
    max_digits: int = option(3, help="Longest operand of the demo's problems (2-5 digits).")
    ops: str = option(
        "+-×", help="Operations, drawn uniformly from this string (repeat one to weight it)."
    )
    student_steps: int = option(
        400, help="Optimizer steps of each student (the same budget for both)."
    )
    student_lr: float = option(1e-3, help="Peak learning rate of the students.")
    seed: int = option(0, help="Seed of the problems and the training.")
    rl: bool = option(
        False,
        help="Then R1's RL half (7-14 more minutes on 2 cores): GRPO on the filtered student, and RL on "
        "the base against distillation, each scored paired on the same held-out problems.",
    )

    def check(self) -> None:
        """Refuse impossible sizes before anything is written."""
        for name in ("train_problems", "test_problems", "samples", "eval_samples", "student_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"distill demo: --{name.replace('_', '-')} must be at least 1")
        if not MIN_DIGITS <= self.max_digits <= MAX_DIGITS:
            raise UserError(
                f"distill demo: --max-digits must be between {MIN_DIGITS} and {MAX_DIGITS}"
            )
        if not self.ops or set(self.ops) - set("+-×"):
            raise UserError(f"distill demo: --ops takes the characters + - ×, got {self.ops!r}")

    def sized(self) -> DemoConfig:
        if not self.quick:
            return self
        return dataclasses.replace(
            self, train_problems=160, test_problems=48, samples=2, eval_samples=1, student_steps=120
        )


def _write_problems(path: Path, problems: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(json.dumps(p) + "\n" for p in problems).encode())
    return path


def _accuracy(report: dict[str, Any]) -> float:
    (m,) = report["benchmarks"].values()
    return float(m["pass@1"])


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Generate -> filter -> train two students -> evaluate; returns the numbers of the table."""

    cfg.check()
    cfg = cfg.sized()
    with output_lock(cfg.output, "distill demo"):
        return _run_demo(cfg)


def _run_demo(cfg: DemoConfig) -> dict[str, Any]:
    out = cfg.output
    started = time.time()
    train_file = _write_problems(
        out / "data" / "train.jsonl",
        synthetic.make_problems(cfg.train_problems, cfg.seed, "train", cfg.max_digits, cfg.ops),
    )
    test_file = _write_problems(
        out / "data" / "test.jsonl",
        synthetic.make_problems(cfg.test_problems, cfg.seed, "test", cfg.max_digits, cfg.ops),
    )
    teacher_profile = load_profile("tiny")
    numbers: dict[str, Any] = {"config": {k: str(v) for k, v in vars(cfg).items()}}
    stages = [
        "teacher: generate traces",
        "teacher: evaluate",
        "filter",
        "students: train",
        "students: evaluate",
    ]
    seconds: dict[str, float] = {}
    numbers["seconds"] = seconds
    bar = progress(eta=False)  # stages take from seconds to minutes: no ETA from their mean
    stage_started = time.time()

    def next_stage(i: int) -> None:
        """Close stage i-1 (its wall time goes to demo.json) and show stage i."""
        nonlocal stage_started
        if i:
            seconds[stages[i - 1]] = round(time.time() - stage_started, 1)
            bar.update(task, advance=1)
        stage_started = time.time()
        if i < len(stages):
            bar.update(task, description=stages[i])

    with bar:
        task = bar.add_task("demo", total=len(stages))
        next_stage(0)
        teacher = VLLMTeacher(teacher_profile)
        try:
            generate(
                GenerateConfig(
                    output=out / "traces",
                    data=DatasetSpec(dataset=str(train_file)),
                    samples=cfg.samples,
                    report=False,  # the demo's own table says what matters
                ),
                teacher_profile,
                teacher,
            )
            next_stage(1)
            ecfg = EvalConfig(
                benchmark=[str(test_file)],
                output=out / "eval" / "teacher",
                samples=cfg.eval_samples,
                report=False,
            )
            numbers["teacher_accuracy"] = _accuracy(evaluate(ecfg, teacher_profile, teacher))
            numbers["by_op"] = {"teacher": _by_op(ecfg.output, test_file)}
        finally:
            teacher.close()
        next_stage(2)

        # Rejection sampling proper: correctness and readability. Dedup stays off: the tiny
        # teacher often writes the same correct working for a problem twice, and removing those
        # would confuse "kept by the filter" with "distinct".
        corpus_cfg = CorpusConfig(dedup=False, near_dup_threshold=0.0)
        report = filter_corpus(
            FilterConfig(input=out / "traces", output=out / "corpus", corpus=corpus_cfg, report=False)
        )
        numbers["kept_fraction"] = report["counts"]["kept_fraction"]
        numbers["traces"] = report["counts"]["in"]
        correct = report["correct"].get("true", 0)
        numbers["traces_correct_fraction"] = round(correct / max(1, report["counts"]["in"]), 4)
        next_stage(3)

        budget = {
            "max_steps": cfg.student_steps,
            "learning_rate": cfg.student_lr,
            "seed": cfg.seed,
            "data_seed": cfg.seed,
            "logging_steps": 10,
        }
        students = {
            "untrained": Path(model_source(load_recipe("tiny"), None)),
            "sft_unfiltered": out / "students" / "unfiltered",
            "sft_filtered": out / "students" / "filtered",
        }
        train(
            TrainConfig(
                data=str(out / "traces"), output=students["sft_unfiltered"], student="tiny"
            ),
            sft_overrides=budget,
        )
        train(
            TrainConfig(
                data=str(out / "corpus" / "kept"), output=students["sft_filtered"], student="tiny"
            ),
            sft_overrides=budget,
        )
        next_stage(4)

        for name, folder in students.items():
            profile = load_profile("tiny", {"model": str(folder)})
            ecfg = EvalConfig(benchmark=[str(test_file)], output=out / "eval" / name,
                              samples=cfg.eval_samples, report=False)  # fmt: skip
            numbers[f"student_{name}_accuracy"] = _accuracy(evaluate(ecfg, profile))
            numbers["by_op"][f"student_{name}"] = _by_op(ecfg.output, test_file)
        next_stage(len(stages))
    # the filter's effect, paired over the same held-out problems (their difficulty cancels)
    numbers["filtered_minus_unfiltered"] = paired_difference(
        list(_rates(out / "eval" / "sft_unfiltered").values()),
        list(_rates(out / "eval" / "sft_filtered").values()),
    )
    evals = {"teacher": out / "eval" / "teacher", "base": out / "eval" / "untrained",
             "SFT, unfiltered": out / "eval" / "sft_unfiltered", "SFT, filtered": out / "eval" / "sft_filtered"}  # fmt: skip
    numbers["plots"] = [str(p) for p in _plots(out, test_file, evals, {
        "SFT, unfiltered": students["sft_unfiltered"], "SFT, filtered": students["sft_filtered"]})]  # fmt: skip
    numbers["wall_time_s"] = round(time.time() - started, 1)
    atomic_write_json(out / "demo.json", numbers)
    _print(numbers, out)
    if cfg.rl:
        sft = numbers["seconds"].get("students: train", 0.0) / 2  # each student's share
        rl_cfg = RLDemoConfig(student=out / "students" / "filtered", output=out / "rl",
                              sft_seconds=sft, seed=cfg.seed, max_digits=cfg.max_digits)  # fmt: skip
        numbers["rl"] = run_rl_demo(rl_cfg.sized() if cfg.quick else rl_cfg)
        atomic_write_json(out / "demo.json", numbers)
    return numbers


def _rates(eval_dir: Path) -> dict[str, float]:
    """Problem id -> share of its samples verified correct, from an evaluation's verdicts."""
    import pyarrow.parquet as pq

    tally: dict[str, list[int]] = {}
    for r in pq.read_table(eval_dir / "samples" / "test.parquet").to_pylist():
        t = tally.setdefault(r["problem_id"], [0, 0])
        t[0] += bool(r["correct"])
        t[1] += 1
    return {pid: a / n for pid, (a, n) in sorted(tally.items())}


def _by_op(eval_dir: Path, test_file: Path) -> dict[str, float]:
    """Accuracy per operation (+, -, ×) from an evaluation's per-sample verdicts."""
    return {op: round(m, 4) for op, (m, _) in _by_op_with_error(eval_dir, test_file).items()}


def _by_op_with_error(eval_dir: Path, test_file: Path) -> dict[str, tuple[float, float]]:
    """Per operation: pass@1 and its standard error over that operation's problems."""
    problems = (json.loads(line) for line in test_file.read_text().splitlines())
    op_of = {p["id"]: operation(p) for p in problems}
    per_op: dict[str, list[float]] = {}
    for pid, rate in _rates(eval_dir).items():
        per_op.setdefault(op_of[pid], []).append(rate)
    return {op: mean_and_stderr(v) for op, v in sorted(per_op.items())}


def _plots(out: Path, test_file: Path, evals: dict[str, Path], students: dict[str, Path]) -> list[Path]:
    """demo.png: pass@1 per operation with standard errors; demo_loss.png: the students' loss."""
    groups = {name: {op: (100 * m, 100 * se) for op, (m, se) in _by_op_with_error(d, test_file).items()}
              for name, d in evals.items()}  # fmt: skip
    for name, folder in evals.items():
        rates = list(_rates(folder).values())
        m, se = mean_and_stderr(rates)
        groups[name]["all"] = (100 * m, 100 * se)
    made = [grouped_bars(out / "demo.png", groups, title="distill demo: pass@1 on held-out problems (± s.e.)",
                         ylabel="pass@1 (%)")]  # fmt: skip
    losses = {}
    for name, folder in students.items():
        history = folder / "log_history.json"
        if history.is_file():
            losses[name] = log_series(json.loads(history.read_text()), "loss")
    made.append(curves(out / "demo_loss.png", losses, title="distill demo: the students' SFT loss", ylabel="loss"))  # fmt: skip
    return [p for p in made if p is not None]


def _print(n: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    ops = list(n["by_op"]["teacher"])
    table = Table(
        title=f"distill demo → {out}",
        caption=f"pass@1 on {n['config']['test_problems']} held-out problems; "
        f"the filter kept {100 * n['kept_fraction']:.1f}% of {n['traces']:,} traces; "
        f"{n['wall_time_s']:.0f} s",
    )
    table.add_column("")
    table.add_column("accuracy", justify="right")
    for op in ops:
        table.add_column(op, justify="right")
    rows = [
        ("teacher", "teacher"),
        ("student before training", "student_untrained"),
        ("student after SFT on unfiltered traces", "student_sft_unfiltered"),
        ("student after SFT on filtered traces", "student_sft_filtered"),
    ]
    for label, key in rows:
        acc = n[f"{key}_accuracy"]
        per_op = [f"{100 * n['by_op'][key].get(op, 0.0):.1f}%" for op in ops]
        table.add_row(label, f"{100 * acc:.1f}%", *per_op)
    console.print(table)
    d = n["filtered_minus_unfiltered"]
    console.print(
        f"filtered - unfiltered, paired over the same {d['problems']} problems: "
        f"{100 * d['diff']:+.1f} points (95% CI {100 * d['ci95'][0]:+.1f} to {100 * d['ci95'][1]:+.1f})",
        soft_wrap=True,
    )
    for path in n.get("plots", []):
        console.print(f"plot: {path}", soft_wrap=True)  # a path stays whole to copy
