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
and the answer begins with `<think>\\n` (the chat template adds it). Sample with temperature
0.6 and top-p 0.95; leave room for long reasoning.

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
        f"A reasoning model distilled with [distill](https://github.com) from DeepSeek-R1-style traces: "
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
