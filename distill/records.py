"""The trace record and corpus I/O: parquet shards, manifest, resume index.

A corpus is a folder of `shard-NNNNN.parquet` files plus `manifest.json`. Shards are
immutable and written atomically (temp file + rename), so a killed run leaves only whole
shards; the resume index is rebuilt from them, never from a separate ledger that could
disagree. It loads with `datasets.load_dataset("parquet", data_files="DIR/*.parquet")`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill import __version__
from distill.errors import UserError

if TYPE_CHECKING:  # pyarrow is imported where used: `distill --help` must stay instant
    import pyarrow as pa

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")

# (name, pyarrow type) of the trace record, in order (docs/corpus.md).
COLUMNS = [
    ("id", "string"),
    ("problem_id", "string"),
    ("sample_index", "int64"),
    ("problem", "string"),
    ("domain", "string"),
    ("reference", "string"),
    ("messages", "string"),
    ("completion", "string"),
    ("reasoning", "string"),
    ("answer", "string"),
    ("finish_reason", "string"),
    ("prompt_tokens", "int64"),
    ("completion_tokens", "int64"),
    ("teacher", "string"),
    ("sampling", "string"),
    ("error", "string"),
]
FIELDS = [name for name, _ in COLUMNS]


@lru_cache(maxsize=1)
def schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, tp)()) for name, tp in COLUMNS])


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write-then-rename so readers (and a rerun after SIGKILL) never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def write_table(path: Path, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_paths(folder: Path) -> list[Path]:
    """Whole shards of a corpus folder, in write order (temp files are ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if SHARD_RE.match(p.name))


def corpus_files(path: str | Path) -> list[Path]:
    """Parquet files of a corpus: a folder of shards, a folder of such folders, or a file."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise UserError(f"{p}: no such corpus folder")
    own = shard_paths(p) or sorted(p.glob("*.parquet"))
    if own:
        return own
    nested = [f for sub in sorted(p.iterdir()) if sub.is_dir() for f in shard_paths(sub)]
    if not nested:
        raise UserError(f"{p}: no parquet shards found")
    return nested


def read_corpus(
    paths: str | Path | Iterable[str | Path], columns: list[str] | None = None
) -> pa.Table:
    """One table from one or several corpus folders (e.g. the parts of a sharded run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(paths, str | Path):
        paths = [paths]
    tables = []
    for path in paths:
        for f in corpus_files(path):
            try:
                tables.append(pq.read_table(f, columns=columns))
            except (pa.ArrowInvalid, OSError) as e:
                raise UserError(f"{f}: unreadable parquet shard ({e})") from None
            except KeyError as e:
                raise UserError(f"{f}: missing column {e}") from None
    if not tables:
        return schema().empty_table() if columns is None else pa.table({c: [] for c in columns})
    return pa.concat_tables(tables, promote_options="default")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None


def corpus_counts(folder: Path) -> dict[str, Any]:
    """Counts for the manifest, recomputed from the shards on disk."""
    table = read_corpus_or_empty(folder, ["problem_id", "finish_reason", "completion_tokens"])
    return {
        "rows": table.num_rows,
        "problems": len(set(table.column("problem_id").to_pylist())),
        "shards": len(shard_paths(folder)),
        "completion_tokens": int(sum(table.column("completion_tokens").to_pylist())),
        "finish_reasons": dict(Counter(table.column("finish_reason").to_pylist())),
    }


def read_corpus_or_empty(folder: Path, columns: list[str]) -> pa.Table:
    import pyarrow as pa

    shards = shard_paths(folder)
    if not shards:
        return pa.table({c: pa.array([], schema().field(c).type) for c in columns})
    return read_corpus(shards, columns=columns)


class CorpusWriter:
    """Appends immutable shards to a corpus folder and keeps its manifest current."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = folder
        self.manifest = manifest
        folder.mkdir(parents=True, exist_ok=True)
        # Temp files are what a kill mid-write leaves behind; they never became shards.
        for stale in folder.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
        existing = [int(SHARD_RE.match(p.name).group(1)) for p in shard_paths(folder)]
        self.next_index = max(existing, default=-1) + 1
        self.manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.write_manifest()

    def write_shard(self, rows: list[dict[str, Any]]) -> Path:
        import pyarrow as pa

        path = self.folder / f"shard-{self.next_index:05d}.parquet"
        write_table(path, pa.Table.from_pylist(rows, schema=schema()))
        self.next_index += 1
        return path

    def write_manifest(self) -> None:
        self.manifest["counts"] = corpus_counts(self.folder)
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest["tool_version"] = __version__
        self.manifest["format_version"] = FORMAT_VERSION
        atomic_write_json(self.folder / MANIFEST, self.manifest)


def done_index(folder: Path, retry_errors: bool = False) -> dict[str, set[int]]:
    """problem_id -> sample indices already on disk (the resume index); with `retry_errors`,
    rows that failed (`finish_reason == "error"`) do not count as done."""
    table = read_corpus_or_empty(folder, ["problem_id", "sample_index", "finish_reason"])
    done: dict[str, set[int]] = {}
    cols = (table.column(c).to_pylist() for c in ("problem_id", "sample_index", "finish_reason"))
    for pid, idx, reason in zip(*cols, strict=True):
        if not (retry_errors and reason == "error"):
            done.setdefault(pid, set()).add(idx)
    return done


def compact(folder: Path) -> int:
    """Keep one row per (problem_id, sample_index): a retried `error` row gives way to its
    replacement (else the newest row wins). Shards holding dropped rows are rewritten
    atomically. Returns the number of rows dropped."""
    import pyarrow.parquet as pq

    best: dict[tuple[str, int], tuple[bool, int, int]] = {}
    for s, path in enumerate(shard_paths(folder)):
        t = pq.read_table(path, columns=["problem_id", "sample_index", "finish_reason"])
        cols = (t.column(c).to_pylist() for c in ("problem_id", "sample_index", "finish_reason"))
        for r, (pid, idx, reason) in enumerate(zip(*cols, strict=True)):
            rank = (reason != "error", s, r)
            if (pid, idx) not in best or rank > best[(pid, idx)]:
                best[(pid, idx)] = rank
    keep: dict[int, set[int]] = {}
    for _, s, r in best.values():
        keep.setdefault(s, set()).add(r)
    dropped = 0
    for s, path in enumerate(shard_paths(folder)):
        rows = pq.read_metadata(path).num_rows
        kept = sorted(keep.get(s, ()))
        if len(kept) == rows:
            continue
        dropped += rows - len(kept)
        if kept:
            write_table(path, pq.read_table(path).take(kept))
        else:
            path.unlink()
    return dropped


def iter_rows(table: pa.Table, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    for batch in table.to_batches(batch_size):
        yield from batch.to_pylist()


def merge_corpora(inputs: list[Path], output: Path, overwrite: bool = False) -> dict[str, Any]:
    """Join the folders of a sharded run (`--shard I/N`) into one corpus, exactly once."""
    import pyarrow.parquet as pq

    manifests = []
    for folder in inputs:
        m = read_manifest(folder)
        if m is None:
            raise UserError(f"{folder}: not a distill corpus (no {MANIFEST})")
        manifests.append((folder, m))
    first_folder, first = manifests[0]
    for folder, m in manifests[1:]:
        for key in ("teacher", "sampling", "prompts"):
            if m.get(key) != first.get(key):
                raise UserError(
                    f"{folder}: {key} differs from {first_folder}; only parts of one run merge"
                )
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise UserError(f"{output}: already exists (use --overwrite to replace it)")
        remove_corpus(output)
    seen: set[str] = set()
    manifest = {
        k: v for k, v in first.items() if k not in ("counts", "shard", "created", "updated")
    }
    manifest["merged_from"] = [str(f) for f in inputs]
    writer = CorpusWriter(output, manifest)
    duplicates = 0
    for folder in inputs:
        for shard in shard_paths(folder):
            table = pq.read_table(shard).cast(schema())
            ids = table.column("id").to_pylist()
            keep = [i for i, row_id in enumerate(ids) if row_id not in seen]
            duplicates += len(ids) - len(keep)
            seen.update(ids[i] for i in keep)
            if keep:
                write_table(
                    writer.folder / f"shard-{writer.next_index:05d}.parquet", table.take(keep)
                )
                writer.next_index += 1
    writer.manifest["duplicates_dropped"] = duplicates
    writer.write_manifest()
    return writer.manifest


def remove_corpus(folder: Path) -> None:
    """Delete what distill wrote in a folder (shards, manifest, stats), nothing else."""
    for p in shard_paths(folder):
        p.unlink()
    for name in (MANIFEST, "stats.json", "config.yaml"):
        (folder / name).unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
