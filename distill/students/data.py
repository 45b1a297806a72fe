"""Training examples: a corpus (kept/) or any chat dataset -> tokenized conversations.

An example is the conversation the teacher had: the user turn is the problem with the prompt
the teacher saw, the assistant turn the R1 trace (`prompts.training_target`). Examples are
tokenized here with the training template's assistant mask, so samples longer than
`max_length` can be dropped and counted: never truncated mid-thought.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.problems import DatasetSpec, has_splits, open_dataset
from distill.prompts import (
    build_messages,
    default_prompt,
    normalize_trace,
    split_trace,
    training_target,
)
from distill.records import corpus_files

log = logging.getLogger(__name__)


def _corpus_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    messages = json.loads(row["messages"]) if row.get("messages") else None
    if not messages:
        template = default_prompt(row.get("domain") or "math")
        messages = build_messages(row["problem"], template.user, template.system)
    messages = [m for m in messages if m["role"] != "assistant"]
    reasoning, answer = row.get("reasoning"), row.get("answer")
    if reasoning is None or answer is None:
        reasoning, answer = split_trace(row.get("completion") or "")
    return [*messages, {"role": "assistant", "content": training_target(reasoning, answer)}]


def _as_chat(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UserError(f"expected text or a list of chat messages, got {type(value).__name__}")


def to_conversation(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    """One training conversation from a corpus row or a chat-dataset row."""
    if "completion" in row and "problem" in row:
        return _corpus_messages(row)
    if row.get("messages"):
        messages = _as_chat(row["messages"], "user")
    elif "prompt" in row and "completion" in row:
        messages = _as_chat(row["prompt"], "user") + _as_chat(row["completion"], "assistant")
    else:
        raise UserError(f"{where}: no messages, prompt/completion or problem/completion columns")
    if not messages or messages[-1]["role"] != "assistant":
        raise UserError(f"{where}: the conversation does not end with an assistant turn")
    messages[-1] = {"role": "assistant", "content": normalize_trace(messages[-1]["content"])}
    return messages


def load_rows(source: str, split: str | None = None) -> tuple[Any, str]:
    """A `datasets.Dataset` of raw rows from a corpus folder, file or dataset, and its name.

    A dataset with splits (a Hub id, or a local folder in the Hub's layout) gives its train
    split unless `split` says otherwise: training never reads a test split by default."""
    import datasets

    datasets.disable_progress_bars()  # TRL's bars and our summary say what matters

    path = Path(source)
    if path.is_dir() and (path / "kept").is_dir() and not list(path.glob("*.parquet")):
        log.info("%s is a filter output: training on its kept/ split", path)
        path = path / "kept"
    if path.is_dir() and not has_splits(path):
        if split:
            raise UserError(f"--split {split}: {path} is a corpus folder, which has no splits")
        files = [str(f) for f in corpus_files(path)]
        import pyarrow.parquet as pq

        # datasets refuses a 0-row split outright ("corresponds to no data"): say it plainly
        if sum(pq.read_metadata(f).num_rows for f in files) == 0:
            raise UserError(f"{path}: no training examples (0 rows; a filter that kept none?)")
        return datasets.load_dataset("parquet", data_files=files, split="train"), str(path)
    ds, _ = open_dataset(DatasetSpec(dataset=source, split=split), default_split="train")
    return ds, source


def build_dataset(
    tokenizer: Any,
    source: str,
    max_length: int,
    split: str | None = None,
    num_proc: int | None = None,
) -> tuple[Any, dict[str, int]]:
    """Tokenized examples (input_ids, assistant_masks) that fit `max_length`, and counts.

    `source` may name several datasets separated by commas (R1's stage-3 SFT: the filtered
    reasoning corpus plus non-reasoning data): each is read and tokenized on its own, then
    the examples are joined."""
    import datasets

    parts = [s.strip() for s in source.split(",") if s.strip()]
    if len(parts) > 1:
        built = [build_dataset(tokenizer, p, max_length, split, num_proc) for p in parts]
        counts = {k: sum(c[k] for _, c in built) for k in built[0][1]}
        return datasets.concatenate_datasets([ds for ds, _ in built]), counts
    rows, name = load_rows(source, split)
    if len(rows) == 0:
        raise UserError(f"{name}: no training examples")
    columns = set(rows.column_names)
    if not (
        {"messages"} & columns
        or {"prompt", "completion"} <= columns
        or {"problem", "completion"} <= columns
    ):
        raise UserError(
            f"{name}: needs messages, prompt/completion or problem/completion columns (has {', '.join(sorted(columns))})"
        )

    def tokenize(row: dict[str, Any], idx: int) -> dict[str, Any]:
        messages = to_conversation(row, f"{name}: row {idx}")
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        mask = list(out["assistant_masks"])
        if 1 not in mask:
            raise UserError(
                f"{name}: row {idx}: the chat template marks no assistant tokens ({{% generation %}} missing)"
            )
        return {"input_ids": list(out["input_ids"]), "assistant_masks": mask, "length": len(mask)}

    tokenized = rows.map(
        tokenize,
        with_indices=True,
        remove_columns=rows.column_names,
        num_proc=num_proc,
        desc="tokenizing",
    )
    kept = tokenized.filter(lambda n: n <= max_length, input_columns="length", num_proc=num_proc)
    counts = {
        "examples": len(tokenized),
        "kept": len(kept),
        "dropped_too_long": len(tokenized) - len(kept),
    }
    if counts["dropped_too_long"]:
        log.warning("%d of %d examples are longer than max_length %d tokens: dropped (never truncated mid-thought)",
                    counts["dropped_too_long"], counts["examples"], max_length)  # fmt: skip
    if len(kept) == 0:
        raise UserError(f"{name}: every example is longer than max_length {max_length}")
    counts["tokens"] = int(sum(kept["length"]))
    return kept.remove_columns("length"), counts
