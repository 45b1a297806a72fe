"""`distill demo`: the whole recipe on a CPU in minutes, with a tiny real reasoning teacher.

    distill demo            # about 10 minutes on 2 cores
    distill demo --quick    # the CI version

The bundled teacher (distill/assets/tiny-teacher, trained by scripts/train_tiny_teacher.py)
does column arithmetic step by step inside <think> and is right often, not always. The demo
generates traces from it, filters them, trains two fresh tiny students with the same budget,
one on the filtered corpus and one on the unfiltered traces, and evaluates the teacher and
the students on held-out problems. Everything lands under one output folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import option
from distill.log import console

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
    student_steps: int = option(
        300, help="Optimizer steps of each student (the same budget for both)."
    )
    seed: int = option(0, help="Seed of the problems and the training.")

    def sized(self) -> DemoConfig:
        if not self.quick:
            return self
        return DemoConfig(
            output=self.output, quick=True, train_problems=160, test_problems=48, samples=2,
            eval_samples=1, student_steps=40, seed=self.seed,
        )  # fmt: skip


def _write_problems(path: Path, problems: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    return path


def _fresh_student(folder: Path) -> Path:
    """The untrained student, saved, so it is evaluated exactly like the trained ones."""
    from distill.students.recipe import load_recipe
    from distill.students.sft import TINY_TEACHER, load_model, load_tokenizer

    if (folder / "model.safetensors").is_file():
        return folder
    recipe = load_recipe("tiny")
    tok = load_tokenizer(str(TINY_TEACHER), recipe)
    model = load_model(str(TINY_TEACHER), recipe, fresh=True)
    model.config.use_cache = True
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def _accuracy(report: dict[str, Any]) -> float:
    (m,) = report["benchmarks"].values()
    return float(m["pass@1"])


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Generate -> filter -> train two students -> evaluate; returns the numbers of the table."""
    from distill import synthetic
    from distill.evaluate import EvalConfig, evaluate
    from distill.filter import FilterConfig, filter_corpus
    from distill.generate import GenerateConfig, generate
    from distill.log import progress
    from distill.problems import DatasetSpec
    from distill.teachers.profile import load_profile
    from distill.teachers.vllm_engine import VLLMTeacher
    from distill.train import TrainConfig, train

    cfg = cfg.sized()
    out = cfg.output
    started = time.time()
    train_file = _write_problems(
        out / "data" / "train.jsonl", synthetic.make_problems(cfg.train_problems, cfg.seed, "train")
    )
    test_file = _write_problems(
        out / "data" / "test.jsonl", synthetic.make_problems(cfg.test_problems, cfg.seed, "test")
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
    bar = progress()
    with bar:
        task = bar.add_task("demo", total=len(stages))

        bar.update(task, description=stages[0])
        teacher = VLLMTeacher(teacher_profile)
        try:
            generate(
                GenerateConfig(
                    output=out / "traces",
                    data=DatasetSpec(dataset=str(train_file)),
                    samples=cfg.samples,
                ),
                teacher_profile,
                teacher,
            )
            bar.update(task, advance=1, description=stages[1])
            ecfg = EvalConfig(
                benchmark=[str(test_file)],
                output=out / "eval" / "teacher",
                samples=cfg.eval_samples,
            )
            numbers["teacher_accuracy"] = _accuracy(evaluate(ecfg, teacher_profile, teacher))
        finally:
            teacher.close()
        bar.update(task, advance=1, description=stages[2])

        report = filter_corpus(FilterConfig(input=out / "traces", output=out / "corpus"))
        numbers["kept_fraction"] = report["counts"]["kept_fraction"]
        numbers["traces"] = report["counts"]["in"]
        correct = report["correct"].get("true", 0)
        numbers["traces_correct_fraction"] = round(correct / max(1, report["counts"]["in"]), 4)
        bar.update(task, advance=1, description=stages[3])

        budget = {
            "max_steps": cfg.student_steps,
            "seed": cfg.seed,
            "data_seed": cfg.seed,
            "logging_steps": 10,
        }
        students = {
            "untrained": _fresh_student(out / "students" / "untrained"),
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
        bar.update(task, advance=1, description=stages[4])

        for name, folder in students.items():
            profile = load_profile("tiny", {"model": str(folder)})
            ecfg = EvalConfig(
                benchmark=[str(test_file)], output=out / "eval" / name, samples=cfg.eval_samples
            )
            numbers[f"student_{name}_accuracy"] = _accuracy(evaluate(ecfg, profile))
        bar.update(task, advance=1)
    numbers["wall_time_s"] = round(time.time() - started, 1)
    (out / "demo.json").write_text(json.dumps(numbers, indent=2) + "\n")
    _print(numbers, out)
    return numbers


def _print(n: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"distill demo → {out}")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("teacher accuracy (held-out, pass@1)", f"{100 * n['teacher_accuracy']:.1f}%")
    table.add_row(
        "traces kept by the filter", f"{100 * n['kept_fraction']:.1f}% of {n['traces']:,}"
    )
    table.add_row("student before training", f"{100 * n['student_untrained_accuracy']:.1f}%")
    table.add_row(
        "student after SFT on unfiltered traces",
        f"{100 * n['student_sft_unfiltered_accuracy']:.1f}%",
    )
    table.add_row(
        "student after SFT on filtered traces", f"{100 * n['student_sft_filtered_accuracy']:.1f}%"
    )
    table.add_row("wall time", f"{n['wall_time_s']:.0f} s")
    console.print(table)
