"""Hugging Face Hub transport: the token check and pushes of models, checkpoints (to
revisions) and corpora. The cards themselves are rendered by `cards.py`.

The token comes from huggingface_hub's usual sources (HF_TOKEN, a saved login); it is checked
before any work starts and never written to a card, log or file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from distill.cards import dataset_card, write_model_card
from distill.errors import UserError
from distill.records import corpus_files, read_manifest

log = logging.getLogger(__name__)


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
    if (folder / "kept").is_dir():
        return {
            split: corpus_files(folder / split)
            for split in ("kept", "rejected")
            if (folder / split).is_dir()
        }
    return {"train": corpus_files(folder)}


def _manifest(folder: Path) -> dict[str, Any]:
    for candidate in (folder, folder / "kept"):
        m = read_manifest(candidate) if candidate.is_dir() else None
        if m:
            return m
    return {}


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

    import pyarrow.parquet as pq
    from huggingface_hub import HfApi

    splits = dataset_layout(folder)
    stage = Path(tempfile.mkdtemp(prefix="distill-push-"))
    (stage / "data").mkdir()
    for split, files in splits.items():
        for i, f in enumerate(files):
            (stage / "data" / f"{split}-{i:05d}-of-{len(files):05d}.parquet").symlink_to(
                f.resolve()
            )
    report_path = folder / "report.json"
    counts = {s: sum(pq.read_metadata(f).num_rows for f in files) for s, files in splits.items()}
    card = dataset_card(
        repo,
        _manifest(folder),
        json.loads(report_path.read_text()) if report_path.is_file() else None,
        counts,
        license,
    )
    (stage / "README.md").write_text(card)
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
    if (folder / "distill_train.yaml").is_file():
        write_model_card(folder, repo)
    elif not (folder / "README.md").is_file():
        raise UserError(
            f"{folder}: no model card (README.md) and no distill_train.yaml to write one from"
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
