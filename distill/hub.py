"""Hugging Face Hub transport: the token check and pushes of models, checkpoints (to
revisions) and corpora. The cards themselves are rendered by `cards.py`.

The token comes from huggingface_hub's usual sources (HF_TOKEN, a saved login); it is checked
before any work starts and never written to a card, log or file. Every Hub call has a timeout
(`hub_timeouts`), and a failing Hub is one line: a rejected token or repo is the user's to fix
(exit 2), an unreachable, silent or failing endpoint the environment's (exit 1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.cards import dataset_card, write_model_card
from distill.config import check_model_ref
from distill.errors import EnvFailure, UserError
from distill.lock import LOCK_NAME, output_lock
from distill.records import (
    FILTER_SPLITS,
    corpus_files,
    filter_output_root,
    is_filter_output,
    read_manifest,
    shard_paths,
)

log = logging.getLogger(__name__)

_timeouts_set = False


def hub_timeouts() -> float:
    """Give every huggingface_hub call a timeout (its default is none: an endpoint that accepts
    connections and never answers hangs a run for ever); `DISTILL_HUB_TIMEOUT` seconds, 60 by
    default, between bytes of an answer. Returns the timeout."""
    global _timeouts_set
    seconds = float(os.environ.get("DISTILL_HUB_TIMEOUT") or 60)
    if not _timeouts_set:
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import default_client_factory

        def client() -> Any:
            c = default_client_factory()  # keeps the library's hooks (offline mode, request ids)
            c.timeout = type(c.timeout)(seconds, connect=min(seconds, 10.0))
            return c

        set_client_factory(client)
        _timeouts_set = True
    return seconds


def _transport_errors() -> tuple[type[Exception], type[Exception]]:
    # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http
    return http.TimeoutException, http.TransportError


@contextlib.contextmanager
def hub_call(what: str) -> Iterator[None]:
    """Hub failures during `what` as one line (see the module docstring)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    timeout, transport = _transport_errors()
    endpoint = constants.ENDPOINT
    try:
        yield
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            raise UserError(
                f"the Hugging Face token was rejected (HTTP {status}) while {what}; set a valid HF_TOKEN"
            ) from None
        if status is not None and status < 500:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"the Hub refused {what} (HTTP {status}: {first})") from None
        raise EnvFailure(
            f"{endpoint}: the Hub failed while {what} (HTTP {status}); rerun later"
        ) from None
    except timeout:
        raise EnvFailure(
            f"{endpoint}: the Hugging Face Hub did not answer within {hub_timeouts():.0f} s while "
            f"{what}; check HF_ENDPOINT, or rerun later"
        ) from None
    except transport as e:
        raise EnvFailure(
            f"{endpoint}: cannot reach the Hugging Face Hub while {what} ({type(e).__name__}); "
            "check HF_ENDPOINT and the network"
        ) from None


def check_token() -> str:
    """The Hub user name for the current token; a missing or rejected token is a UserError,
    an unreachable or silent Hub an EnvFailure (both one line)."""
    from huggingface_hub import HfApi, get_token

    hub_timeouts()
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` before pushing")
    with hub_call("checking the token"):
        info = HfApi().whoami(token=token)
    return str(info.get("name") or "")


def push_model(folder: Path, repo: str, private: bool = False, revision: str | None = None) -> str:
    """Model, tokenizer, generation config and card to `repo`; pushing again updates in place."""
    from huggingface_hub import HfApi

    hub_timeouts()
    api = HfApi()
    with hub_call(f"pushing {folder} to {repo}"):
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo,
            repo_type="model",
            revision=revision,
            commit_message=f"distill: upload {folder.name}",
            ignore_patterns=[
                "checkpoint-*",
                "checkpoint-*/**",
                "runs/**",
                "*.sbatch",
                "slurm-*",
                "logs/**",  # the run's library chatter, with local paths in it
                "distill_train.launch.yaml",  # what launched processes replayed: distill_train.yaml has it
                LOCK_NAME,
            ],
        )
    log.info("pushed %s to %s%s", folder, repo, f"@{revision}" if revision else "")
    return str(getattr(info, "commit_url", repo))


def push_checkpoint(folder: Path, repo: str, step: int, private: bool = False) -> Any:
    """A training checkpoint to revision `step-NNNNNN`, in the background (training goes on)."""
    from huggingface_hub import HfApi

    hub_timeouts()
    api = HfApi()
    branch = f"step-{step:06d}"
    with hub_call(f"pushing checkpoint {step} to {repo}@{branch}"):
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
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
    """Splits of a corpus to push: a filter output (kept / rejected, only from an output a run
    finished: never rejected rows under a card that says kept) or raw traces (train)."""
    if is_filter_output(folder):
        root = filter_output_root(folder)
        return {split: shard_paths(root / split) for split in FILTER_SPLITS}
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
    # the report and manifest of the same output as the splits (the caller holds its lock)
    source = filter_output_root(folder) if is_filter_output(folder) else folder
    stage = Path(tempfile.mkdtemp(prefix="distill-push-"))
    (stage / "data").mkdir()
    for split, files in splits.items():
        for i, f in enumerate(files):
            (stage / "data" / f"{split}-{i:05d}-of-{len(files):05d}.parquet").symlink_to(
                f.resolve()
            )
    report_path = source / "report.json"
    counts = {s: sum(pq.read_metadata(f).num_rows for f in files) for s, files in splits.items()}
    card = dataset_card(
        repo,
        _manifest(source),
        json.loads(report_path.read_text()) if report_path.is_file() else None,
        counts,
        license,
    )
    (stage / "README.md").write_text(card)
    for extra in ("report.json", "report.md", "lengths.png"):
        if (source / extra).is_file():
            (stage / extra).symlink_to((source / extra).resolve())
    hub_timeouts()
    api = HfApi()
    with hub_call(f"pushing {folder} to datasets/{repo}"):
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, repo_type="dataset", branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(stage),
            repo_id=repo,
            repo_type="dataset",
            revision=revision,
            commit_message=f"distill: upload {folder.name}",
            # a re-push replaces the shards, never leaves stale ones
            delete_patterns=["data/*.parquet"],
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
    check_model_ref(str(folder), "push")  # never weights that a killed save half-wrote
    check_token()
    # never publish a folder a run is still writing (a model mid-training, a corpus mid-run)
    with output_lock(folder, "distill push"):
        if is_model_folder(folder):
            refresh_model_card(folder, repo)
            return push_model(folder, repo, private=private, revision=revision)
        return push_dataset(folder, repo, private=private, revision=revision, license=license)
