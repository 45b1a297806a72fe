"""`distill filter`: corpus -> per-row verdicts -> kept / rejected / report.

    distill filter --input traces/math500-r1 --output corpus/math500-r1 [--config filter.yaml]

Rejection sampling's second half: only verified-correct, readable traces reach the student.
Per-row checks (correctness, readability) run in worker processes with a hard wall-clock
limit per row; their verdicts are cached in `OUTPUT/.work/` so a rerun skips finished rows.
Corpus-level checks (duplicates, contamination) and the per-problem selection follow; every
row is written to `kept/` or `rejected/` with `correct`, `kept`, `reasons` and `checks`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distill.config import option, to_dict
from distill.errors import UserError
from distill.filters.rows import RowChecksConfig
from distill.filters.select import CorpusConfig
from distill.problems import stable_id
from distill.prompts import split_completion
from distill.records import (
    atomic_write_bytes,
    atomic_write_json,
    corpus_files,
    read_manifest,
    write_table,
)
from distill.verify import VerifyConfig

if TYPE_CHECKING:  # heavy modules are imported where used: `distill --help` stays instant
    import pyarrow as pa

log = logging.getLogger(__name__)

REQUIRED = ("problem", "domain", "reference", "completion")
ROW_FIELDS = ("id", "problem_id", "sample_index", "problem", "domain", "reference", "completion",
              "reasoning", "answer", "finish_reason", "completion_tokens")  # fmt: skip
FILTER_COLUMNS = ("correct", "kept", "reasons", "checks")
WORK = ".work"
CACHE_EVERY = 2000
# imported once in the fork server, so every worker (and every replacement after a
# timeout kill) starts warm instead of importing sympy on its first row
PRELOAD = ["distill.filters.rows", "distill.filters.readability", "distill.verify.maths",
           "distill.verify.choice", "distill.verify.code_tests", "math_verify"]  # fmt: skip
SHARD_ROWS = 10_000


@dataclass
class FilterConfig:
    """What `distill filter` does."""

    input: Path = option(help="Corpus folder (or parquet file) to filter.")
    output: Path = option(help="Output folder: kept/, rejected/, report.json, report.md.")
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    rows: RowChecksConfig = field(default_factory=RowChecksConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    overwrite: bool = option(False, help="Replace an existing filter output of another input.")
    push_to_hub: str | None = option(
        None, help="Push kept/rejected to this Hub dataset repo at the end."
    )
    private: bool = option(False, help="Create the Hub repo private.")
    progress: bool = option(True, help="Show progress bars.", cli=False)
    report: bool = option(True, help="Print the report table at the end.", cli=False)


def _input_files(path: Path) -> list[Path]:
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


def _iter_batches(
    files: list[Path], columns: list[str] | None = None
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    import pyarrow.parquet as pq

    for f in files:
        names = pq.read_schema(f).names
        cols = [c for c in columns if c in names] if columns else None
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=cols):
            yield f, batch


class _Deriver:
    """Fills the trace fields a corpus made elsewhere may lack (ids, reasoning/answer, ...)."""

    def __init__(self) -> None:
        self.per_problem: dict[str, int] = {}
        self.seen: dict[str, str] = {}

    def __call__(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        for c in (*REQUIRED[:2], "completion"):
            if not isinstance(row.get(c), str):
                raise UserError(f"{where}: '{c}' must be text, got {row.get(c)!r}")
        if row.get("reasoning") is None or row.get("answer") is None:
            row["reasoning"], row["answer"] = split_completion(row["completion"])
        if row.get("problem_id") is None:
            row["problem_id"] = stable_id(row["problem"])
        if row.get("sample_index") is None:
            row["sample_index"] = self.per_problem.get(row["problem_id"], 0)
        self.per_problem[row["problem_id"]] = max(
            self.per_problem.get(row["problem_id"], 0), row["sample_index"] + 1
        )
        if row.get("id") is None:
            row["id"] = f"{row['problem_id']}/{row['sample_index']}"
        if row["id"] in self.seen:
            raise UserError(f"{where}: duplicate id {row['id']!r} (also at {self.seen[row['id']]})")
        self.seen[row["id"]] = where
        if row.get("finish_reason") is None:
            row["finish_reason"] = "stop"
        return row


def _digest(row: dict[str, Any]) -> str:
    h = hashlib.sha1()
    for key in ("problem", "domain", "reference", "completion", "finish_reason"):
        h.update(str(row.get(key)).encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()


def _rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    derive = _Deriver()
    for f, batch in _iter_batches(files, list(ROW_FIELDS)):
        start = 0
        for i, row in enumerate(batch.to_pylist()):
            yield derive({k: row.get(k) for k in ROW_FIELDS}, f"{f}: row {start + i}")
        start += batch.num_rows


class VerdictCache:
    """Verdicts of finished rows, in atomic parquet shards under OUTPUT/.work/."""

    def __init__(self, folder: Path, config_digest: str):
        import pyarrow.parquet as pq

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        stamp = folder / "config.json"
        if stamp.is_file() and json.loads(stamp.read_text()).get("digest") != config_digest:
            log.info("row-check settings changed: verdicts will be recomputed")
            for p in folder.glob("verdicts-*.parquet"):
                p.unlink()
        atomic_write_json(stamp, {"digest": config_digest})
        self.done: dict[str, tuple[str, str]] = {}
        shards = sorted(folder.glob("verdicts-*.parquet"))
        for p in shards:
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


def _row_timeout(row: dict[str, Any], cfg: FilterConfig) -> float:
    from distill.verify.code_tests import count_tests

    if row["domain"] == "code":
        # each test run has its own sandbox timeout; this is only the backstop
        return (
            cfg.verify.verify_timeout
            + cfg.verify.code.timeout * max(1, count_tests(row["reference"]))
            + 5
        )
    return cfg.verify.verify_timeout


def _verify_rows(
    cfg: FilterConfig, files: list[Path], total: int, cache: VerdictCache
) -> dict[str, dict[str, Any]]:
    """Per-row checks for every row (cached ones reused); returns id -> checks."""
    from distill.filters.rows import check_row
    from distill.log import progress
    from distill.verify.pool import run_pool

    results: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    limits: dict[str, float] = {}

    def todo() -> Iterator[tuple[str, dict[str, Any], float]]:
        for row in _rows(files):
            digest = _digest(row)
            cached = cache.get(row["id"], digest)
            if cached is not None:
                results[row["id"]] = cached
                bar.update(task, advance=1)
                continue
            digests[row["id"]] = digest
            limits[row["id"]] = _row_timeout(row, cfg)
            yield row["id"], (row, cfg.verify, cfg.rows), limits[row["id"]]

    workers = cfg.verify.workers or len(os.sched_getaffinity(0))
    bar = progress("{task.fields[rate]} rows/s", disable=not cfg.progress)
    started, fresh = time.time(), 0
    with bar:
        task = bar.add_task("verify", total=total, rate="-")
        for out in run_pool(check_row, todo(), workers, preload=PRELOAD):
            limit = limits.pop(out.key)
            if out.failure == "timeout":
                checks = {
                    "correctness": {"ok": False, "reason": "verify_timeout", "limit_s": limit}
                }
            elif out.failure:
                checks = {
                    "correctness": {"ok": None, "reason": "verify_error", "error": out.failure}
                }
            else:
                checks = out.value
            results[out.key] = checks
            cache.add(out.key, digests.pop(out.key), checks)
            fresh += 1
            bar.update(task, advance=1, rate=f"{fresh / max(time.time() - started, 1e-9):,.0f}")
    cache.flush()
    if fresh < len(results):
        log.info("reused %d cached row verdicts, checked %d rows", len(results) - fresh, fresh)
    return results


def _judge(cfg: FilterConfig, files: list[Path], results: dict[str, dict[str, Any]]) -> None:
    """Ask a generative judge about rows the rules could not decide."""
    from distill.verify.judge import needs_judge, run_judge

    rows = [r for r in _rows(files) if needs_judge(r, results[r["id"]]["correctness"])]
    if not rows:
        log.info("judge: no undecided rows")
        return
    for row_id, verdict in run_judge(cfg.verify, rows).items():
        results[row_id]["correctness"] = verdict


def _write_outputs(
    cfg: FilterConfig, files: list[Path], decisions: dict[str, dict[str, Any]], staging: Path
) -> None:
    """Stream the input again, attach verdict columns, split into kept/ and rejected/."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers = {"kept": [], "rejected": []}
    counters = {"kept": 0, "rejected": 0}
    buffers: dict[str, list[pa.Table]] = {"kept": [], "rejected": []}
    derive = _Deriver()
    for split in writers:
        (staging / split).mkdir(parents=True)

    def flush(split: str, force: bool = False) -> None:
        rows = sum(t.num_rows for t in buffers[split])
        if rows and (force or rows >= SHARD_ROWS):
            table = pa.concat_tables(buffers[split], promote_options="default")
            write_table(staging / split / f"shard-{counters[split]:05d}.parquet", table)
            counters[split] += 1
            buffers[split] = []

    for f, batch in _iter_batches(files):
        rows = batch.to_pylist()
        for i, row in enumerate(rows):
            derived = derive({k: row.get(k) for k in ROW_FIELDS}, f"{f}: row {i}")
            row.update({k: derived[k] for k in ROW_FIELDS if row.get(k) is None})
            d = decisions[derived["id"]]
            row.update(correct=d["correct"], kept=d["kept"], reasons=d["reasons"],
                       checks=json.dumps(d["checks"], ensure_ascii=False, default=str))  # fmt: skip
        for split, want in (("kept", True), ("rejected", False)):
            part = [r for r in rows if r["kept"] is want]
            if part:
                buffers[split].append(_table(part))
                flush(split)
    for split in writers:
        flush(split, force=True)
    # An empty split still gets one (empty) shard with the same columns, so it loads as 0 rows.
    schema = next((pq.read_schema(p) for p in sorted(staging.glob("*/shard-*.parquet"))), None)
    for split in writers:
        if counters[split] == 0 and schema is not None:
            write_table(staging / split / "shard-00000.parquet", schema.empty_table())


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    types = {"correct": pa.bool_(), "kept": pa.bool_(), "reasons": pa.list_(pa.string()), "checks": pa.string(),
             "sample_index": pa.int64(), "completion_tokens": pa.int64(), "prompt_tokens": pa.int64()}  # fmt: skip
    for name, tp in types.items():
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).cast(tp))
    for name in ("reference", "error"):  # all-null columns would infer a null type per shard
        if name in table.column_names and pa.types.is_null(table.column(name).type):
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).cast(pa.string()))
    return table


def _check_output(cfg: FilterConfig, input_key: dict[str, Any]) -> None:
    out = cfg.output
    if not out.exists():
        return
    stamp = out / "report.json"
    entries = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if stamp.is_file():
        previous = json.loads(stamp.read_text()).get("input")
        if previous and previous != input_key and not cfg.overwrite:
            raise UserError(
                f"{out}: holds the filter output of another input ({previous.get('path')}); use --overwrite"
            )
    elif entries and not cfg.overwrite:
        raise UserError(f"{out}: exists and is not a distill filter output")
    if Path(cfg.input).resolve() == out.resolve():
        raise UserError(f"{out}: the output must differ from the input")


def filter_corpus(cfg: FilterConfig) -> dict[str, Any]:
    """Filter a corpus; returns the report (also written as report.json / report.md)."""
    import pyarrow.parquet as pq

    from distill.filters.report import build_report, print_report, write_report
    from distill.filters.select import corpus_checks

    started = time.time()
    if cfg.push_to_hub:
        from distill.hub import check_token

        check_token()  # before hours of verification, not after
    files = _input_files(Path(cfg.input))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if total == 0:
        raise UserError(f"{cfg.input}: the corpus has no rows")
    input_key = {"path": str(cfg.input), "files": len(files), "rows": total}
    _check_output(cfg, input_key)
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    row_digest = hashlib.sha1(
        json.dumps([to_dict(cfg.verify), to_dict(cfg.rows)], sort_keys=True).encode()
    ).hexdigest()
    cache = VerdictCache(out / WORK, row_digest)

    results = _verify_rows(cfg, files, total, cache)
    if cfg.verify.judge:
        _judge(cfg, files, results)
    decisions, corpus_info = corpus_checks(cfg, _rows(files), results)

    staging = out / WORK / f"staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    _write_outputs(cfg, files, decisions, staging)
    manifest = read_manifest(Path(cfg.input)) if Path(cfg.input).is_dir() else None
    report = build_report(cfg, decisions, corpus_info, input_key, started)
    for split in ("kept", "rejected"):
        m = dict(manifest or {})
        m["filter"] = {"split": split, "input": str(cfg.input), "config": to_dict(cfg)}
        m["counts"] = {"rows": report["counts"][split]}
        atomic_write_json(staging / split / "manifest.json", m)
        target = out / split
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / split, target)
    shutil.rmtree(staging, ignore_errors=True)
    write_report(out, report, decisions, corpus_info["meta"])
    atomic_write_bytes(
        out / "config.yaml",
        yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True).encode(),
    )
    if cfg.report:
        print_report(report, out)
    if cfg.push_to_hub:
        from distill.hub import push_dataset

        push_dataset(out, cfg.push_to_hub, private=cfg.private)
    return report
