"""Hugging Face Hub: model cards and pushes (models; checkpoints to revisions).

The token comes from huggingface_hub's usual sources (HF_TOKEN, a saved login); it is checked
before any work starts and never written to a card, log or file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from distill.errors import UserError

log = logging.getLogger(__name__)
TAGS = ["distill", "reasoning", "r1-distillation"]


def check_token() -> str:
    """The Hub user name for the current token; a missing or rejected token is a UserError."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` before pushing")
    try:
        info = HfApi().whoami(token=token)
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", "?")
        raise UserError(
            f"the Hugging Face token was rejected (HTTP {status}); set a valid HF_TOKEN"
        ) from None
    except OSError as e:
        raise UserError(
            f"cannot reach the Hugging Face Hub to check the token ({type(e).__name__})"
        ) from None
    return str(info.get("name") or "")


def _usage(repo: str) -> str:
    return f"""## How to prompt it

Like DeepSeek-R1's distilled models: no system prompt, every instruction in the user turn,
and the answer begins with `<think>\\n` (the chat template adds it).
Sample with temperature 0.6 and top-p 0.95; leave room for long reasoning.

```python
from vllm import LLM, SamplingParams

llm = LLM("{repo}")
params = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=32768)
question = "What is 7 * 8? Please reason step by step, and put your final answer within \\\\boxed{{}}."
out = llm.chat([{{"role": "user", "content": question}}], params)
print(out[0].outputs[0].text)   # reasoning ... </think> then the answer
```
"""


def _table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def write_model_card(
    output: Path,
    base_model: str,
    data: str,
    recipe: Any,
    stats: dict[str, Any],
    log_history: list[dict[str, Any]] | None = None,
    repo: str | None = None,
) -> Path:
    """README.md with metadata valid for huggingface_hub's ModelCard."""
    from huggingface_hub import ModelCard, ModelCardData

    datasets = [data] if "/" in data and not Path(data).exists() else None
    card_data = ModelCardData(base_model=None if base_model.startswith("/") else base_model, library_name="transformers",
                              tags=[*TAGS, "sft", "trl"], datasets=datasets, pipeline_tag="text-generation")  # fmt: skip
    hyper = {k: recipe.sft[k] for k in ("learning_rate", "lr_scheduler_type", "num_train_epochs", "max_length",
             "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_ratio", "packing") if k in recipe.sft}  # fmt: skip
    hyper.update(
        strategy=recipe.distributed.strategy,
        nodes=recipe.distributed.nodes,
        gpus_per_node=recipe.distributed.gpus_per_node,
    )
    metrics = {
        k: stats[k]
        for k in (
            "examples",
            "dropped_too_long",
            "tokens_seen",
            "steps",
            "train_runtime_s",
            "first_loss",
            "final_loss",
        )
        if k in stats
    }
    evals = output / "eval_results.md"
    body = [
        f"# {repo or output.name}",
        "",
        "A reasoning model distilled with distill from DeepSeek-R1-style traces: "
        f"`{base_model}` fine-tuned (SFT only, as in the R1 paper) on `{data}`.",
        "",
        "## Training",
        "",
        f"Recipe `{recipe.name}`, chat template `{recipe.chat_template}` (the reasoning stays in the target; "
        f"eos `{recipe.eos_token}`, pad `{recipe.pad_token}`).",
        "",
        _table(hyper),
        "",
        "## Training metrics",
        "",
        _table(metrics),
        "",
    ]
    if evals.is_file():
        body += ["## Evaluation", "", evals.read_text().strip(), ""]
    body.append(_usage(repo or "path/to/this/model"))
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body))
    path = output / "README.md"
    card.save(str(path))
    if log_history:
        (output / "log_history.json").write_text(json.dumps(log_history, indent=1) + "\n")
    return path


def push_model(folder: Path, repo: str, private: bool = False, revision: str | None = None) -> str:
    """Model, tokenizer, generation config and card to `repo`; pushing again updates in place."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo, branch=revision, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo,
        repo_type="model",
        revision=revision,
        commit_message=f"distill: upload {folder.name}",
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.sbatch", "slurm-*"],
    )
    log.info("pushed %s to %s%s", folder, repo, f"@{revision}" if revision else "")
    return str(getattr(info, "commit_url", repo))


def push_checkpoint(folder: Path, repo: str, step: int, private: bool = False) -> Any:
    """A training checkpoint to revision `step-NNNNNN`, in the background (training goes on)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    branch = f"step-{step:06d}"
    api.create_branch(repo, branch=branch, exist_ok=True)
    return api.upload_folder(
        folder_path=str(folder),
        repo_id=repo,
        revision=branch,
        commit_message=f"checkpoint {step}",
        run_as_future=True,
    )


# --- datasets -------------------------------------------------------------------------------


def dataset_layout(folder: Path) -> dict[str, list[Path]]:
    """Splits of a corpus to push: a filter output (kept / rejected) or raw traces (train)."""
    from distill.records import corpus_files

    if (folder / "kept").is_dir():
        return {
            split: corpus_files(folder / split)
            for split in ("kept", "rejected")
            if (folder / split).is_dir()
        }
    return {"train": corpus_files(folder)}


def _manifest(folder: Path) -> dict[str, Any]:
    from distill.records import read_manifest

    for candidate in (folder, folder / "kept"):
        m = read_manifest(candidate) if candidate.is_dir() else None
        if m:
            return m
    return {}


def dataset_card(folder: Path, repo: str, splits: dict[str, list[Path]], license: str) -> str:
    """README.md of a pushed corpus: provenance, counts, the filter report, how to load it."""
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard, DatasetCardData

    manifest = _manifest(folder)
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    counts = {s: sum(pq.read_metadata(f).num_rows for f in files) for s, files in splits.items()}
    teacher = manifest.get("teacher", {})
    source = manifest.get("source", {})
    data = DatasetCardData(
        license=license,
        tags=["distill", "reasoning", "synthetic"],
        task_categories=["text-generation"],
        pretty_name=repo.split("/")[-1],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
            }
        ],
    )
    lines = [
        f"# {repo}",
        "",
        "Reasoning traces in DeepSeek-R1 format (`<think>...</think>` then the answer), made with "
        "distill: a teacher sampled several responses per problem"
        + (", then `distill filter` kept the verified-correct, readable ones." if report else "."),
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{repo}")  # splits: {", ".join(splits)}',
        "```",
        "",
        "## Provenance",
        "",
        _table(
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
        from distill.filters.report import REASONS

        c = report["counts"]
        lines += ["## Filtering", "", f"{c['in']:,} rows in, {c['kept']:,} kept ({100 * c['kept_fraction']:.1f}%), {c['rejected']:,} rejected.", "",
                  "| reason | rows | meaning |", "|---|---:|---|"]  # fmt: skip
        lines += [f"| `{r}` | {n:,} | {REASONS.get(r, '')} |" for r, n in report["reasons"].items()]
        lines += [
            "",
            "A row counts under every reason it failed. Each row keeps `correct`, `kept`, `reasons` and `checks` (JSON details).",
            "",
        ]
    lines += [
        "## Fields",
        "",
        "`id`, `problem_id`, `sample_index`, `problem`, `domain`, `reference` (JSON), `messages` (JSON, the prompt "
        "the teacher saw), `completion` (starts with `<think>\\n`), `reasoning`, `answer`, `finish_reason`, "
        "`prompt_tokens`, `completion_tokens`, `teacher`, `sampling`, `error`.",
        "",
        f"## Licence\n\n{license}; the problems keep the licence of their source dataset and the completions "
        "the terms of the teacher model.",
    ]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def push_dataset(
    folder: Path,
    repo: str,
    private: bool = False,
    revision: str | None = None,
    license: str = "other",
) -> str:
    """A corpus as a Hub dataset (parquet under data/, card with split configs); pushing again
    replaces the data files in place."""
    import tempfile

    from huggingface_hub import HfApi

    splits = dataset_layout(folder)
    stage = Path(tempfile.mkdtemp(prefix="distill-push-"))
    (stage / "data").mkdir()
    for split, files in splits.items():
        for i, f in enumerate(files):
            (stage / "data" / f"{split}-{i:05d}-of-{len(files):05d}.parquet").symlink_to(
                f.resolve()
            )
    (stage / "README.md").write_text(dataset_card(folder, repo, splits, license))
    for extra in ("report.json", "report.md", "lengths.png"):
        if (folder / extra).is_file():
            (stage / extra).symlink_to((folder / extra).resolve())
    api = HfApi()
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo, repo_type="dataset", branch=revision, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(stage),
        repo_id=repo,
        repo_type="dataset",
        revision=revision,
        commit_message=f"distill: upload {folder.name}",
        delete_patterns=[
            "data/*.parquet"
        ],  # a re-push replaces the shards, never leaves stale ones
    )
    log.info("pushed %s to datasets/%s", folder, repo)
    return str(getattr(info, "commit_url", repo))


# --- the `distill push` entry ----------------------------------------------------------------


def is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def refresh_model_card(folder: Path, repo: str) -> None:
    """Rewrite the card of a model `distill train` made, with the repo name and any eval results."""
    import yaml

    from distill.config import from_dict
    from distill.students.recipe import StudentRecipe

    resolved = folder / "distill_train.yaml"
    if not resolved.is_file():
        if not (folder / "README.md").is_file():
            raise UserError(
                f"{folder}: no model card (README.md) and no distill_train.yaml to write one from"
            )
        return
    data = yaml.safe_load(resolved.read_text())
    recipe = from_dict(StudentRecipe, data["recipe"], str(resolved))
    stats_path = folder / "training_stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    history_path = folder / "log_history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else None
    base = data["train"].get("model") or recipe.base_model
    write_model_card(
        folder,
        base_model=base,
        data=data["train"]["data"],
        recipe=recipe,
        stats=stats,
        log_history=history,
        repo=repo,
    )


def push(
    folder: Path,
    repo: str,
    private: bool = False,
    revision: str | None = None,
    license: str = "other",
) -> str:
    """`distill push`: a model folder or a corpus, whichever `folder` holds."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    if "/" not in repo or repo.count("/") != 1:
        raise UserError(f"--repo {repo!r}: expected owner/name")
    check_token()
    if is_model_folder(folder):
        refresh_model_card(folder, repo)
        return push_model(folder, repo, private=private, revision=revision)
    dataset_layout(folder)  # a UserError when there is nothing to push
    return push_dataset(folder, repo, private=private, revision=revision, license=license)
