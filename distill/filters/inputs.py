"""Reading a corpus for the filter: input checks, batches and derived fields.

Corpora made elsewhere need only problem, domain, reference and completion; the other trace
fields are derived here in one place, the same way on every pass over the input.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.errors import UserError
from distill.problems import stable_id
from distill.prompts import split_trace
from distill.records import corpus_files

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

REQUIRED = ("problem", "domain", "reference", "completion")
ROW_FIELDS = ("id", "problem_id", "sample_index", "problem", "domain", "reference", "completion",
              "reasoning", "answer", "finish_reason", "completion_tokens")  # fmt: skip


def input_files(path: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = corpus_files(path)
    for f in files:
        try:
            names = pq.read_schema(f).names
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{f}: unreadable parquet file ({e})") from None
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise UserError(
                f"{f}: missing column '{missing[0]}' (a corpus needs {', '.join(REQUIRED)})"
            )
    return files


def iter_batches(
    files: list[Path], columns: list[str] | None = None
) -> Iterator[tuple[Path, int, pa.RecordBatch]]:
    """(file, index of the batch's first row in that file, batch)."""
    import pyarrow.parquet as pq

    for f in files:
        names = pq.read_schema(f).names
        cols = [c for c in columns if c in names] if columns else None
        offset = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=cols):
            yield f, offset, batch
            offset += batch.num_rows


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """`items`, produced up to `depth` ahead in a thread: parquet decoding releases the GIL,
    so the next batch is read while the caller works on this one. The producer's exception
    is raised here; a consumer that stops early stops the producer."""
    import queue
    import threading

    q: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def offer(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("end", None))
        except BaseException as e:  # handed to the consumer, raised there
            offer(("error", e))

    threading.Thread(target=produce, name="distill-prefetch", daemon=True).start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


class Deriver:
    """Fills the trace fields a corpus made elsewhere may lack (ids, reasoning/answer, ...)."""

    def __init__(self) -> None:
        self.per_problem: dict[str, int] = {}

    def ids(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        """The row's problem_id, sample_index and id (and its text fields checked)."""
        for c in REQUIRED[:2]:
            if not isinstance(row.get(c), str):
                raise UserError(f"{where}: '{c}' must be text, got {row.get(c)!r}")
        if row.get("problem_id") is None:
            row["problem_id"] = stable_id(row["problem"])
        if row.get("sample_index") is None:
            row["sample_index"] = self.per_problem.get(row["problem_id"], 0)
        self.per_problem[row["problem_id"]] = max(
            self.per_problem.get(row["problem_id"], 0), row["sample_index"] + 1
        )
        if row.get("id") is None:
            row["id"] = f"{row['problem_id']}/{row['sample_index']}"
        return row

    def __call__(self, row: dict[str, Any], where: str, texts: bool = True) -> dict[str, Any]:
        """`texts=False`: a row read without its long texts, whose reasoning and answer the
        corpus holds (nothing to derive from the completion)."""
        self.ids(row, where)
        if texts and not isinstance(row.get("completion"), str):
            raise UserError(f"{where}: 'completion' must be text, got {row.get('completion')!r}")
        if texts and (row.get("reasoning") is None or row.get("answer") is None):
            row["reasoning"], row["answer"] = split_trace(row["completion"])
        if row.get("finish_reason") is None:
            row["finish_reason"] = "stop"
        return row


def _id_hash(key: str) -> int:
    digest = hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


ID_FIELDS = ["id", "problem_id", "sample_index", *REQUIRED[:2]]


def check_rows(files: list[Path]) -> None:
    """Refuse a bad row before any of them is verified: every row's text fields and a unique
    id, in one pass that reads the id columns and only the completions' validity (never their
    text: a million 8k-token completions are most of the corpus). An 8-byte hash per row is
    all it keeps: a set of a million id strings would be most of the filter's memory."""
    import pyarrow as pa

    derive, ids = Deriver(), array("q")
    for f, offset, batch in iter_batches(files, [*ID_FIELDS, "completion"]):
        text = batch.column(batch.schema.get_field_index("completion"))
        if pa.types.is_string(text.type) or pa.types.is_large_string(text.type):
            bad = text.is_null().to_pylist().index(True) if text.null_count else -1
        else:  # another type (dictionary-encoded, ...): what each value reads as
            values = text.to_pylist()
            bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), -1)
        names = [c for c in ID_FIELDS if c in batch.schema.names]
        for i, row in enumerate(batch.select(names).to_pylist()):
            where = f"{f}: row {offset + i}"
            key = derive.ids(row, where)["id"]
            if i == bad:
                raise UserError(f"{where}: 'completion' must be text, got {text[i].as_py()!r}")
            ids.append(_id_hash(key))
    _refuse_duplicate_ids(files, ids)


def corpus_rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    """Every row's trace fields, derived where absent, in corpus order (`check_rows` first)."""
    derive = Deriver()
    for f, offset, batch in iter_batches(files, list(ROW_FIELDS)):
        for i, row in enumerate(batch.to_pylist()):
            yield derive({k: row.get(k) for k in ROW_FIELDS}, f"{f}: row {offset + i}")


TEXTS = ("completion", "reasoning", "answer")


def decision_rows(
    batch: pa.RecordBatch, derive: Deriver, f: Path, offset: int
) -> list[dict[str, Any]]:
    """A batch's rows as `corpus_rows` derives them, for the filter's last pass, which decides
    each row from its ids, domain and length: without the long texts (most of a corpus's
    bytes) when nothing is derived from them, i.e. the reasoning, the answer and a token count
    are all there (a distill corpus). The texts keep their `None` then."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = batch.schema.names
    tokens = batch.column("completion_tokens") if "completion_tokens" in names else None
    lean = (
        all(c in names and not batch.column(c).null_count for c in ("reasoning", "answer"))
        and tokens is not None
        and not tokens.null_count
        and (pa.types.is_integer(tokens.type) or pa.types.is_floating(tokens.type))
        and (not batch.num_rows or pc.min(tokens).as_py() > 0)  # else lengths come from the text
    )
    cols = [c for c in ROW_FIELDS if c in names and not (lean and c in TEXTS)]
    return [derive({k: row.get(k) for k in ROW_FIELDS}, f"{f}: row {offset + i}", texts=not lean)
            for i, row in enumerate(batch.select(cols).to_pylist())]  # fmt: skip


def _refuse_duplicate_ids(files: list[Path], ids: array) -> None:
    import numpy as np

    values, counts = np.unique(np.frombuffer(ids, dtype=np.int64), return_counts=True)
    suspects = set(values[counts > 1].tolist())
    if not suspects:
        return
    # a second pass names the rows as a one-pass check would; equal hashes of different ids
    # (rare: 3% of billion-row corpora) cost only that pass
    derive, seen = Deriver(), {}
    for f, offset, batch in iter_batches(files, ID_FIELDS):
        for i, row in enumerate(batch.to_pylist()):
            where = f"{f}: row {offset + i}"
            key = derive.ids({k: row.get(k) for k in ID_FIELDS}, where)["id"]
            if _id_hash(key) not in suspects:
                continue
            if key in seen:
                raise UserError(f"{where}: duplicate id {key!r} (also at {seen[key]})")
            seen[key] = where
