"""Model and dataset cards, rendered from plain data (dicts a run wrote down), never from live
objects, so a card can be re-rendered later from the files of a folder. Sending them to the Hub
is `hub.py`'s job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.config import load_yaml
from distill.filters.report import reason_meanings
from distill.prompts import PREFILL, THINK_CLOSE, THINK_OPEN
from distill.records import atomic_write_bytes

TAGS = ["distill", "reasoning", "r1-distillation"]
SHOWN_PREFILL = PREFILL.encode("unicode_escape").decode()  # <think>\n, as markdown shows it
# SFT hyperparameters a reader of a card wants, in this order, when the run set them.
HYPERPARAMETERS = [
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps",
    "num_train_epochs", "max_steps", "max_length", "per_device_train_batch_size",
    "gradient_accumulation_steps", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm",
    "packing", "padding_free", "gradient_checkpointing", "bf16", "seed",
]  # fmt: skip


def table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def usage(repo: str) -> str:
    return f"""## How to prompt it

Like DeepSeek-R1's distilled models: no system prompt, every instruction in the user turn,
and the answer begins with `{SHOWN_PREFILL}` (the chat template adds it).
Sample with temperature 0.6 and top-p 0.95; leave room for long reasoning.

```python
from vllm import LLM, SamplingParams

llm = LLM("{repo}")
params = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=32768)
question = "What is 7 * 8? Please reason step by step, and put your final answer within \\\\boxed{{}}."
out = llm.chat([{{"role": "user", "content": question}}], params)
print(out[0].outputs[0].text)   # reasoning ... {THINK_CLOSE} then the answer
```
"""


def hyperparameters(sft: dict[str, Any], distributed: dict[str, Any]) -> dict[str, Any]:
    """The effective SFT settings (recipe merged with the run's overrides) worth a card row."""
    rows = {k: sft[k] for k in HYPERPARAMETERS if k in sft}
    rows.update(
        {
            k: distributed[k]
            for k in ("strategy", "nodes", "gpus_per_node", "world_size", "global_batch")
            if k in distributed
        }
    )
    return rows


def model_card(
    *,
    name: str,
    base_model: str,
    data: str,
    recipe: dict[str, Any],
    sft: dict[str, Any],
    stats: dict[str, Any],
    evals: str | None = None,
    repo: str | None = None,
    data_on_hub: bool = False,
) -> str:
    """README.md of a trained student, with metadata valid for huggingface_hub's ModelCard."""
    from huggingface_hub import ModelCardData

    datasets = [data] if data_on_hub else None
    meta = ModelCardData(
        base_model=None if base_model.startswith("/") else base_model,
        library_name="transformers",
        tags=[*TAGS, "sft", "trl"],
        datasets=datasets,
        pipeline_tag="text-generation",
    )
    shown = ["examples", "dropped_too_long", "tokens_seen", "steps", "train_runtime_s",
             "first_loss", "final_loss"]  # fmt: skip
    metrics = {k: stats[k] for k in shown if k in stats}
    body = [
        f"# {repo or name}",
        "",
        "A reasoning model distilled with distill from DeepSeek-R1-style traces: "
        f"`{base_model}` fine-tuned (SFT only, as in the R1 paper) on `{data}`.",
        "",
        "## Training",
        "",
        f"Recipe `{recipe.get('name')}`, chat template `{recipe.get('chat_template')}` (the "
        f"reasoning stays in the target; eos `{recipe.get('eos_token')}`, pad "
        f"`{recipe.get('pad_token')}`).",
        "",
        table(hyperparameters(sft, recipe.get("distributed") or {})),
        "",
        "## Training metrics",
        "",
        table(metrics),
        "",
    ]
    if evals:
        body += ["## Evaluation", "", evals.strip(), ""]
    body.append(usage(repo or "path/to/this/model"))
    return f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(body)


REWARD_MEANINGS = {
    "accuracy": "1 when `distill filter` would verify the answer correct (math-verify, choice, sandboxed tests), else 0",
    "format": "1 when the completion follows the template's layout, else 0",
    "language": "share of the reasoning's words in the problem's language (R1's language consistency)",
    "overlong": "DAPO's soft overlong penalty, 0 down to -1 near max_completion_length",
    "reward_model": "the reward model's score of the conversation, on prompts without a checkable answer",
}
RL_CURVES = ["reward", "accuracy/pass_rate", "completions/clipped_ratio", "completions/mean_length", "entropy"]  # fmt: skip


def rl_model_card(
    *,
    name: str,
    base_model: str,
    recipe: str,
    template: str,
    prefill: str,
    rewards: dict[str, float],
    hyperparameters: dict[str, Any],
    stats: dict[str, Any],
    repo: str | None = None,
) -> str:
    """README.md of a policy `distill rl` trained: rewards, template, hyperparameters, curves."""
    from huggingface_hub import ModelCardData

    meta = ModelCardData(base_model=None if base_model.startswith(("/", ".", "assets/")) else base_model,
                         library_name="transformers", tags=[*TAGS, "grpo", "trl"],
                         pipeline_tag="text-generation")  # fmt: skip
    first, last = stats["first"], stats["last"]
    curves = ["| metric | first 10% of steps | last 10% of steps |", "|---|---:|---:|"]
    curves += [f"| {k} | {first.get(k)} | {last.get(k)} |" for k in RL_CURVES]
    rule_only = "reward_model" not in rewards
    body = [
        f"# {repo or name}", "",
        f"`{base_model}` trained with GRPO (TRL) by `distill rl`, recipe `{recipe}`: R1's "
        f"reinforcement-learning stage{' with rule rewards only' if rule_only else ''}.", "",
        "## Rewards", "",
        table({f"{r} (weight {w})": REWARD_MEANINGS[r] for r, w in rewards.items()}), "",
        f"Template `{template}`" + (f", prefill `{prefill!r}`" if prefill else "") + ".", "",
        "## Hyperparameters", "", table(hyperparameters), "",
        "## Training curves", "", "\n".join(curves), "", "![curves](curves.png)", "",
        f"{stats['steps']} steps, {stats['generation_rounds']} generation rounds of "
        f"{stats['completions_per_round']} completions, {stats['wall_time_s']} s.", "",
    ]  # fmt: skip
    if template == "r1":
        body.append(usage(repo or "path/to/this/model"))
    return f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(body)


def dataset_card(
    repo: str,
    manifest: dict[str, Any],
    report: dict[str, Any] | None,
    counts: dict[str, int],
    license: str,
) -> str:
    """README.md of a pushed corpus: provenance, counts, the filter report, how to load it."""
    from huggingface_hub import DatasetCardData

    teacher = manifest.get("teacher", {})
    source = manifest.get("source", {})
    meta = DatasetCardData(
        license=license,
        tags=["distill", "reasoning", "synthetic"],
        task_categories=["text-generation"],
        pretty_name=repo.split("/")[-1],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in counts],
            }
        ],
    )
    lines = [
        f"# {repo}",
        "",
        f"Reasoning traces in DeepSeek-R1 format (`{THINK_OPEN}...{THINK_CLOSE}` then the "
        "answer), made with distill: a teacher sampled several responses per problem"
        + (", then `distill filter` kept the verified-correct, readable ones." if report else "."),
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{repo}")  # splits: {", ".join(counts)}',
        "```",
        "",
        "## Provenance",
        "",
        table(
            {
                "teacher": f"`{teacher.get('model', 'unknown')}` ({teacher.get('backend', '?')} backend)",
                "sampling": f"`{json.dumps(manifest.get('sampling', {}), sort_keys=True)}`",
                "samples per problem": manifest.get("samples", "?"),
                "source dataset": f"`{source.get('dataset', 'unknown')}`"
                + (f" ({source['split']})" if source.get("split") else ""),
                "source fingerprint": f"`{source.get('fingerprint', '?')}`",
                "rows": ", ".join(f"{s}: {n:,}" for s, n in counts.items()),
            }
        ),
        "",
    ]
    if report:
        meanings = report.get("reason_vocabulary") or reason_meanings()
        c = report["counts"]
        lines += [
            "## Filtering",
            "",
            f"{c['in']:,} rows in, {c['kept']:,} kept ({100 * c['kept_fraction']:.1f}%), "
            f"{c['rejected']:,} rejected.",
            "",
            "| reason | rows | meaning |",
            "|---|---:|---|",
        ]
        lines += [
            f"| `{r}` | {n:,} | {meanings.get(r, '')} |" for r, n in report["reasons"].items()
        ]
        lines += [
            "",
            "A row counts under every reason it failed. Each row keeps `correct`, `kept`, "
            "`reasons` and `checks` (JSON details).",
            "",
        ]
    lines += [
        "## Fields",
        "",
        "`id`, `problem_id`, `sample_index`, `problem`, `domain`, `reference` (JSON), `messages` "
        "(JSON, the prompt the teacher saw), `completion` (starts with "
        f"`{SHOWN_PREFILL}`), `reasoning`, `answer`, `finish_reason`, `prompt_tokens`, "
        "`completion_tokens`, `teacher`, `sampling`, `error`.",
        "",
        f"## Licence\n\n{license}; the problems keep the licence of their source dataset and the "
        "completions the terms of the teacher model.",
    ]
    return f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def write_model_card(folder: Path, repo: str | None = None) -> Path:
    """(Re)write README.md of a model `distill train` made, from the files it left: the
    resolved run (distill_train.yaml), training stats and any eval results."""
    run = load_yaml(folder / "distill_train.yaml")
    stats_path = folder / "training_stats.json"
    evals = folder / "eval_results.md"
    recipe = run["recipe"]
    ran = {k: run[k] for k in ("world_size", "global_batch") if k in run}  # what really ran
    recipe = {**recipe, "distributed": {**(recipe.get("distributed") or {}), **ran}}
    text = model_card(
        name=folder.name,
        base_model=run["train"].get("model") or recipe["base_model"],
        data=run["train"]["data"],
        recipe=recipe,
        # what the run really used (TRL defaults included), else what the recipe asked for
        sft=run.get("sft_effective")
        or {**recipe.get("sft", {}), **(run.get("sft_overrides") or {})},
        stats=json.loads(stats_path.read_text()) if stats_path.is_file() else {},
        evals=evals.read_text() if evals.is_file() else None,
        repo=repo,
        data_on_hub="/" in run["train"]["data"] and not Path(run["train"]["data"]).exists(),
    )
    path = folder / "README.md"
    atomic_write_bytes(path, text.encode())
    return path
