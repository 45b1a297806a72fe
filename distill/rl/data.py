"""The problems GRPO trains on: any dataset `distill generate` reads or a filter output, the
pass-rate band, and the prompts in the recipe's template."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.problems import DatasetSpec, Problem, load_problems
from distill.prompts import (
    R1_ZERO_TEMPLATE,
    build_messages,
    default_prompt,
    render_prompt,
)
from distill.rl.config import RLConfig, RLRecipe

log = logging.getLogger(__name__)


# --- data ------------------------------------------------------------------------------------


def pass_rates(folder: Path) -> dict[str, tuple[int, int]]:
    """Problem id -> (verified correct, verified) samples of a `distill filter` output."""
    from distill.records import corpus_files, is_filter_output, iter_rows, read_corpus

    if not is_filter_output(folder):
        raise UserError(f"{folder}: not a `distill filter` output (needed for pass rates)")
    rates: dict[str, list[int]] = {}
    for split in ("kept", "rejected"):
        files = corpus_files(folder, split=split)
        for row in iter_rows(read_corpus(files, columns=["problem_id", "correct"])):
            tally = rates.setdefault(str(row["problem_id"]), [0, 0])
            if row["correct"] is not None:
                tally[0] += bool(row["correct"])
                tally[1] += 1
    return {k: (c, n) for k, (c, n) in rates.items()}


def corpus_problems(folder: Path) -> list[Problem]:
    """The distinct problems of a filter output (kept and rejected), with their references."""
    from distill.records import corpus_files, iter_rows, read_corpus

    seen: dict[str, Problem] = {}
    for split in ("kept", "rejected"):
        files = corpus_files(folder, split=split)
        cols = ["problem_id", "problem", "domain", "reference"]
        for row in iter_rows(read_corpus(files, columns=cols)):
            pid = str(row["problem_id"])
            if pid not in seen:
                seen[pid] = Problem(pid, row["problem"], row["domain"], row["reference"])
    return sorted(seen.values(), key=lambda p: p.problem_id)


def load_rl_problems(cfg: RLConfig, keep_unreferenced: bool = False) -> tuple[list[Problem], dict[str, Any]]:  # fmt: skip
    """Problems for training and what was decided about them (counts for stats.json). `--data`
    may name several sources, comma-separated (R1's RL for all scenarios: reasoning prompts and
    general ones); problems without a reference stay only when a reward model scores them."""
    from distill.records import is_filter_output

    info: dict[str, Any] = {"data": cfg.data}
    problems: list[Problem] = []
    sources = []
    for part in (x.strip() for x in cfg.data.split(",") if x.strip()):
        data = Path(part).expanduser()
        if data.is_dir() and is_filter_output(data):
            found = corpus_problems(data)
            sources.append("filter output")
        else:
            spec = DatasetSpec(
                dataset=part, split=cfg.split, subset=cfg.subset, problem_column=cfg.problem_column,
                answer_column=cfg.answer_column, id_column=cfg.id_column, domain=cfg.domain, limit=cfg.limit,
            )  # fmt: skip
            found, source = load_problems(spec)
            sources.append(source)
        problems += found[: cfg.limit] if cfg.limit else found
    info["source"] = sources[0] if len(sources) == 1 else sources
    info["problems"] = len(problems)
    band = cfg.band()
    if band:
        source = Path(cfg.pass_rates or cfg.data).expanduser()
        rates = pass_rates(source)
        lo, hi = band
        kept = []
        unmeasured = 0
        for p in problems:
            c, n = rates.get(p.problem_id, (0, 0))
            if n == 0:
                unmeasured += 1
            elif lo <= c / n <= hi:
                kept.append(p)
        info["pass_rate_band"] = {"band": [lo, hi], "from": str(source), "kept": len(kept),
                                  "outside": len(problems) - len(kept) - unmeasured,
                                  "unmeasured": unmeasured}  # fmt: skip
        log.info(
            "pass-rate band [%g, %g] from %s: %d of %d problems kept (%d outside, %d unmeasured)",
            lo, hi, source, len(kept), len(problems), len(problems) - len(kept) - unmeasured, unmeasured,
        )  # fmt: skip
        problems = kept
    unverifiable = {id(p) for p in problems if p.reference in (None, "", "null", '""')}
    if unverifiable and keep_unreferenced:
        log.info("%d problems without a reference: the reward model scores them", len(unverifiable))
    elif unverifiable:
        log.info("%d problems without a reference dropped (accuracy cannot be decided; "
                 "--reward-model scores such prompts)", len(unverifiable))  # fmt: skip
        problems = [p for p in problems if id(p) not in unverifiable]
    info["no_reference"] = len(unverifiable)
    if not problems:
        raise UserError(f"{cfg.data}: no problems left to train on ({json.dumps(info)})")
    return problems, info


def build_prompt(tokenizer: Any, problem: Problem, recipe: RLRecipe) -> str:
    """The prompt text a problem becomes, ending with the prefill (TRL takes it as is)."""
    prefill = recipe.effective_prefill
    if recipe.template == "r1":
        messages = build_messages(problem.problem, default_prompt(problem.domain).user)
        text = render_prompt(tokenizer, messages, prefill)
        bos = getattr(tokenizer, "bos_token", None)
        if bos and text.startswith(bos):  # TRL tokenizes with special tokens: no BOS twice
            text = text[len(bos) :]
        return text
    if recipe.template == "r1-zero":
        return R1_ZERO_TEMPLATE.replace("{problem}", problem.problem) + prefill
    return problem.problem + "\n" + prefill


def build_dataset(tokenizer: Any, problems: list[Problem], recipe: RLRecipe) -> tuple[Any, int]:
    """TRL's prompt dataset (plain-text prompts + the columns rewards read); prompts longer
    than `max_prompt_tokens` are dropped and counted."""
    from datasets import Dataset

    rows, dropped = [], 0
    for p in problems:
        prompt = build_prompt(tokenizer, p, recipe)
        if len(tokenizer(prompt)["input_ids"]) > recipe.max_prompt_tokens:
            dropped += 1
            continue
        rows.append({"prompt": prompt, "problem": p.problem, "problem_id": p.problem_id,
                     "domain": p.domain, "reference": p.reference})  # fmt: skip
    if dropped:
        log.info("%d prompts longer than %d tokens dropped", dropped, recipe.max_prompt_tokens)
    return Dataset.from_list(rows), dropped


