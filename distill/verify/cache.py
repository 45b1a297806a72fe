"""Verdicts of rows already verified, in atomic parquet shards: what a rerun reuses.

A verdict is reused only for the same row id with the same content digest, under the same
verification settings (a stamp of them sits in the folder; other settings start afresh).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from distill.records import atomic_write_json, write_table

log = logging.getLogger(__name__)

CACHE_EVERY = 2000  # verdicts per shard: a kill loses at most this many rows of work


def row_digest(row: dict[str, Any]) -> str:
    """What a verdict depends on: the problem, its reference and the completion."""
    h = hashlib.sha1()
    for key in ("problem", "domain", "reference", "completion", "finish_reason"):
        h.update(str(row.get(key)).encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()


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
        self.done: dict[str, tuple[str, str]] = {}
        shards = sorted(folder.glob("verdicts-*.parquet"))
        others = []
        for other in reuse or []:
            st = other / "config.json"
            if st.is_file() and json.loads(st.read_text()).get("digest") == settings_digest:
                others += sorted(other.glob("verdicts-*.parquet"))
            else:
                log.warning("%s: verdicts made under other settings, not reused", other)
        for p in [*others, *shards]:
            t = pq.read_table(p)
            for k, d, c in zip(
                *(t.column(n).to_pylist() for n in ("id", "digest", "checks")), strict=True
            ):
                self.done[k] = (d, c)
        self.next = len(shards)
        self.buffer: list[tuple[str, str, str]] = []

    def get(self, key: str, digest: str) -> dict[str, Any] | None:
        hit = self.done.get(key)
        return json.loads(hit[1]) if hit and hit[0] == digest else None

    def add(self, key: str, digest: str, checks: dict[str, Any]) -> None:
        text = json.dumps(checks, ensure_ascii=False, default=str)
        self.done[key] = (digest, text)
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
