"""Verdicts of rows already verified, in atomic parquet shards: what a rerun reuses.

A verdict is reused only for the same row id with the same content digest, under the same
verification settings (a stamp of them sits in the folder; other settings start afresh).
Lookups go through an sqlite index of the shards on disk (`index.sqlite`, rebuilt from the
shards on every start, removed on close): a million verdicts never sit in memory, and the
filter reads each row's verdict back from it instead of holding them all.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from distill.records import atomic_write_json, write_failure, write_table

log = logging.getLogger(__name__)

CACHE_EVERY = 2000  # verdicts per shard: a kill loses at most this many rows of work
INDEX = "index.sqlite"


def row_digest(row: dict[str, Any]) -> str:
    """What a verdict depends on: the problem, its reference and the completion."""
    h = hashlib.sha1()
    for key in ("problem", "domain", "reference", "completion", "finish_reason"):
        h.update(str(row.get(key)).encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()


class _Scratch(sqlite3.Connection):
    """sqlite reports a full disk as its own error: raised here as any other full write is
    (`records.write_failure`), one line naming the file and saying a rerun resumes."""

    def _run(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
            raise write_failure(Path(self.path), full) from e

    def execute(self, *args: Any) -> sqlite3.Cursor:
        return self._run(super().execute, *args)

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        return self._run(super().executemany, *args)

    def commit(self) -> None:
        self._run(super().commit)

    def __exit__(self, *exc: Any) -> None:
        """Close and remove the file (a plain connection's `with` only commits)."""
        self.close()
        Path(self.path).unlink(missing_ok=True)


def scratch_db(path: Path) -> sqlite3.Connection:
    """A throwaway sqlite file (any old one is replaced): no journal, no fsync, since a crash
    only means rebuilding it from what it indexes."""
    for stale in (path, path.with_name(path.name + "-journal")):
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(path, factory=_Scratch)
    db.path = str(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    return db


class VerdictCache:
    """`reuse`: other cache folders (Slurm shards of the same run) read but never written;
    one made under other settings is ignored."""

    def __init__(self, folder: Path, settings_digest: str, reuse: list[Path] | None = None):
        import pyarrow.parquet as pq

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        stamp = folder / "config.json"
        if stamp.is_file() and json.loads(stamp.read_text()).get("digest") != settings_digest:
            log.info("verification settings changed: verdicts will be recomputed")
            for p in folder.glob("verdicts-*.parquet"):
                p.unlink()
        atomic_write_json(stamp, {"digest": settings_digest})
        shards = sorted(folder.glob("verdicts-*.parquet"))
        others = []
        for other in reuse or []:
            st = other / "config.json"
            if st.is_file() and json.loads(st.read_text()).get("digest") == settings_digest:
                others += sorted(other.glob("verdicts-*.parquet"))
            else:
                log.warning("%s: verdicts made under other settings, not reused", other)
        self.db = scratch_db(folder / INDEX)
        self.db.execute("CREATE TABLE verdicts (id TEXT PRIMARY KEY, digest TEXT, checks TEXT)")
        for p in [*others, *shards]:  # a later shard's verdict of a row replaces an earlier one
            t = pq.read_table(p, columns=["id", "digest", "checks"])
            self._index(
                zip(*(t.column(n).to_pylist() for n in ("id", "digest", "checks")), strict=True)
            )
        self.db.commit()
        self.next = len(shards)
        self.buffer: list[tuple[str, str, str]] = []

    def _index(self, rows: Any) -> None:
        self.db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", rows)

    def get(self, key: str, digest: str) -> dict[str, Any] | None:
        hit = self.db.execute("SELECT digest, checks FROM verdicts WHERE id = ?", (key,)).fetchone()
        return json.loads(hit[1]) if hit and hit[0] == digest else None

    def checks(self, key: str) -> dict[str, Any]:
        """The latest verdict of a row (after `verify_rows`, the one of its current content)."""
        hit = self.db.execute("SELECT checks FROM verdicts WHERE id = ?", (key,)).fetchone()
        if hit is None:
            raise KeyError(f"no verdict cached for row {key!r}")
        return json.loads(hit[0])

    def hold(self, key: str, checks: dict[str, Any]) -> None:
        """A verdict this run reads back but never reuses or keeps (a judge request that got
        no answer): indexed without a digest, so `get` misses it and a rerun asks again."""
        self._index([(key, "", json.dumps(checks, ensure_ascii=False, default=str))])

    def add(self, key: str, digest: str, checks: dict[str, Any]) -> None:
        text = json.dumps(checks, ensure_ascii=False, default=str)
        self._index([(key, digest, text)])
        self.buffer.append((key, digest, text))
        if len(self.buffer) >= CACHE_EVERY:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.buffer:
            keys, digests, checks = zip(*self.buffer, strict=True)
            table = pa.table({"id": list(keys), "digest": list(digests), "checks": list(checks)})
            write_table(self.folder / f"verdicts-{self.next:05d}.parquet", table)
            self.next += 1
            self.buffer = []
        self.db.commit()

    def close(self) -> None:
        """Remove the index (the shards are the cache; what is not flushed is dropped)."""
        self.db.__exit__()

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
