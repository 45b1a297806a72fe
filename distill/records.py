"""The trace record and corpus I/O: parquet shards, manifest, resume index, filter outputs.

A corpus is a folder of `shard-NNNNN.parquet` files plus `manifest.json`. Shards are
immutable and written atomically (temp file + rename), so a killed run leaves only whole
shards; the resume index is rebuilt from them, never from a separate ledger that could
disagree. It loads with `datasets.load_dataset("parquet", data_files="DIR/*.parquet")`.

A filter output (kept/, rejected/, the report) is switched whole through one pointer, and
every reader goes through `corpus_files`, which refuses one a run did not finish.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill import __version__
from distill.errors import EnvFailure, UserError
from distill.lock import output_lock

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
    # JSON of the row's per-row checks ({"passed", "reasons", "checks"}) where `distill generate
    # --until-correct` verified it, else null. Every shard has it, so a corpus topped up with
    # verdicts still loads as one table (datasets refuses shards whose columns differ).
    ("verdict", "string"),
]
FIELDS = [name for name, _ in COLUMNS]
VERDICT = "verdict"


@lru_cache(maxsize=1)
def schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, tp)()) for name, tp in COLUMNS])


def with_verdict_column(table: pa.Table) -> pa.Table:
    """A shard as this version writes it: shards of older versions lack the verdict column."""
    import pyarrow as pa

    if VERDICT not in table.column_names:
        table = table.append_column(VERDICT, pa.nulls(table.num_rows, pa.string()))
    return table.cast(schema())


def write_failure(path: Path, e: OSError) -> Exception:
    """A failed write as the one line the user sees, naming the path: a full disk is the
    environment's failure (exit 1), a place that cannot be written the user's (exit 2)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return EnvFailure(
            f"{path}: no space left on device; free some and rerun the same command "
            "(work already written is kept)"
        )
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR):
        return UserError(f"{path}: cannot write ({e.strerror})")
    return EnvFailure(f"{path}: cannot write ({e.strerror or e})")


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write-then-rename so readers (and a rerun after SIGKILL) never see half a file. A failed
    write leaves neither its temp file nor a changed `path`, and raises one line (above)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_failure(path, e) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _write_atomically(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def write_table(path: Path, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    def write(tmp: Path) -> None:
        if table.num_rows:
            pq.write_table(table, tmp, compression="zstd")
        else:
            # The schema and no row group at all, as `datasets` writes an empty split: a 0-row
            # group makes its parquet reader fail ("BatchSize must be greater than 0").
            pq.ParquetWriter(tmp, table.schema, compression="zstd").close()

    _write_atomically(path, write)


def shard_paths(folder: Path) -> list[Path]:
    """Whole shards of a corpus folder, in write order (temp files are ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if SHARD_RE.match(p.name))


def corpus_files(path: str | Path, split: str = "kept") -> list[Path]:
    """Parquet files of a corpus: a file, a folder of shards, a folder of such folders (the
    parts of a sharded run), or a filter output: its `split` (kept/ unless asked otherwise)
    or the split folder given, read only from an output a run finished (else a UserError)."""
    if split not in FILTER_SPLITS:
        raise ValueError(f"split must be one of {FILTER_SPLITS}, got {split!r}")
    p = Path(path)
    if p.name in FILTER_SPLITS:  # OUT/kept, or OUT/.output-N/kept resolved from it
        generation = p.parent.name.startswith(GENERATION)
        owner = p.parent.parent if generation else p.parent
        if is_filter_output(owner):
            root = filter_output_root(owner)
            if generation and root != p.parent.resolve():
                raise UserError(f"{p}: not the current output of {owner}; read {owner / p.name}")
            return shard_paths(root / p.name)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise UserError(f"{p}: no such corpus folder")
    if is_filter_output(p):
        return shard_paths(filter_output_root(p) / split)
    own = shard_paths(p) or sorted(p.glob("*.parquet"))
    if own:
        return own
    parts = [sub for sub in sorted(p.iterdir()) if sub.is_dir() and not sub.name.startswith(".")]
    nested = [f for sub in parts for f in shard_paths(sub)]
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
    with output_lock(output, "distill merge"):
        if any(not p.name.startswith(".") for p in output.iterdir()):
            if not overwrite:
                raise UserError(f"{output}: already exists (use --overwrite to replace it)")
            remove_corpus(output)
        return _merge_into(output, inputs, first)


def _merge_into(output: Path, inputs: list[Path], first: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    seen: set[str] = set()
    manifest = {
        k: v for k, v in first.items() if k not in ("counts", "shard", "created", "updated")
    }
    manifest["merged_from"] = [str(f) for f in inputs]
    writer = CorpusWriter(output, manifest)
    duplicates = 0
    for folder in inputs:
        for shard in shard_paths(folder):
            table = with_verdict_column(pq.read_table(shard))
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


# --- filter outputs -----------------------------------------------------------------------
# A filter output is switched whole. Each run writes a complete new generation beside the
# current one (`.output-N/`: kept/, rejected/, report.json, ...) and then points `.output` at
# it with one atomic rename. `kept`, `rejected` and the report files at the top are links
# through `.output`, so any reader (distill's, or `datasets` globbing kept/*.parquet) sees the
# old output or the new one, never a mix, however the run is stopped.

FILTER_SPLITS = ("kept", "rejected")
FILTER_FILES = ("report.json", "report.md", "stats.json", "config.yaml", "lengths.png")
CURRENT = ".output"
GENERATION = ".output-"


def is_filter_output(folder: Path) -> bool:
    """A folder `distill filter` wrote to, finished or not, in this layout or the older one
    (real kept/ and rejected/ folders, switched one after the other)."""
    names = (CURRENT, *FILTER_SPLITS)
    return any(os.path.lexists(folder / n) for n in names) or any(folder.glob(GENERATION + "*"))


def filter_output_root(folder: Path) -> Path:
    """The folder holding the current, complete kept/, rejected/ and report of a filter
    output. An output no run finished (stopped before its first switch, or an older-layout
    output killed mid-swap) is a UserError: its splits must not be read as data."""
    current = folder / CURRENT
    if os.path.lexists(current):
        if (current / "report.json").is_file():
            return current.resolve()
    elif _older_layout_complete(folder):
        return folder
    raise UserError(
        f"{folder}: an incomplete filter output (a `distill filter` run stopped before it "
        "finished); rerun that command to complete it"
    )


def _older_layout_complete(folder: Path) -> bool:
    # Outputs of distill before the pointer: complete when both splits are real folders
    # holding the rows the report counts (a kill mid-swap left one split missing or stale).
    import pyarrow.parquet as pq

    try:
        counts = json.loads((folder / "report.json").read_text())["counts"]
        return all(
            (folder / s).is_dir()
            and sum(pq.read_metadata(f).num_rows for f in shard_paths(folder / s)) == counts[s]
            for s in FILTER_SPLITS
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _generations(folder: Path) -> list[Path]:
    return [p for p in folder.glob(GENERATION + "*") if p.name[len(GENERATION) :].isdigit()]


def new_filter_output(folder: Path) -> Path:
    """An empty folder beside the current output for the next one to be written into. What a
    run stopped before its switch left behind goes first. The caller holds the output lock."""
    current = os.readlink(folder / CURRENT) if os.path.islink(folder / CURRENT) else None
    for old in _generations(folder):
        if old.name != current:
            shutil.rmtree(old)
    n = max((int(p.name[len(GENERATION) :]) for p in _generations(folder)), default=0) + 1
    generation = folder / f"{GENERATION}{n}"
    try:
        generation.mkdir()
    except OSError as e:
        raise write_failure(generation, e) from None
    return generation


def switch_filter_output(folder: Path, generation: Path) -> None:
    """Make a fully written `generation` the output, at once, then tidy up."""
    pointer = folder / f"{CURRENT}.tmp"
    try:
        pointer.unlink(missing_ok=True)
        os.symlink(generation.name, pointer)
        os.replace(pointer, folder / CURRENT)  # the switch: the old output before, this one after
        for name in (*FILTER_SPLITS, *FILTER_FILES):
            top = folder / name
            if top.is_symlink():
                continue
            if top.is_dir():  # an older-layout output, upgraded (readers already use the pointer)
                shutil.rmtree(top)
            else:
                top.unlink(missing_ok=True)
            os.symlink(f"{CURRENT}/{name}", top)
    except OSError as e:
        raise write_failure(folder / CURRENT, e) from None
    for old in _generations(folder):
        if old.name != generation.name:
            shutil.rmtree(old)
