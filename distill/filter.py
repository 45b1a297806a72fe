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
from distill.filters import corpus as cio
from distill.filters.rows import RowChecksConfig
from distill.filters.select import CorpusConfig
from distill.records import (
    atomic_write_bytes,
    atomic_write_json,
    read_manifest,
    write_table,
)
from distill.verify import VerifyConfig

if TYPE_CHECKING:  # heavy modules are imported where used: `distill --help` stays instant
    import pyarrow as pa

log = logging.getLogger(__name__)

FILTER_COLUMNS = ("correct", "kept", "reasons", "checks")
WORK = ".work"
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
    cfg: FilterConfig, files: list[Path], total: int, cache: cio.VerdictCache
) -> dict[str, dict[str, Any]]:
    """Per-row checks for every row (cached ones reused); returns id -> checks."""
    from distill.filters.rows import check_row
    from distill.log import progress
    from distill.verify.pool import run_pool

    results: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    limits: dict[str, float] = {}

    def todo() -> Iterator[tuple[str, dict[str, Any], float]]:
        for row in cio.rows(files):
            digest = cio.digest(row)
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

    rows = [r for r in cio.rows(files) if needs_judge(r, results[r["id"]]["correctness"])]
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
    derive = cio.Deriver()
    for split in writers:
        (staging / split).mkdir(parents=True)

    def flush(split: str, force: bool = False) -> None:
        rows = sum(t.num_rows for t in buffers[split])
        if rows and (force or rows >= SHARD_ROWS):
            table = pa.concat_tables(buffers[split], promote_options="default")
            write_table(staging / split / f"shard-{counters[split]:05d}.parquet", table)
            counters[split] += 1
            buffers[split] = []

    for f, offset, batch in cio.iter_batches(files):
        rows = batch.to_pylist()
        for i, row in enumerate(rows):
            derived = derive({k: row.get(k) for k in cio.ROW_FIELDS}, f"{f}: row {offset + i}")
            row.update({k: derived[k] for k in cio.ROW_FIELDS if row.get(k) is None})
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
    files = cio.input_files(Path(cfg.input))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if total == 0:
        raise UserError(f"{cfg.input}: the corpus has no rows")
    input_key = {"path": str(cfg.input), "files": len(files), "rows": total}
    _check_output(cfg, input_key)
    out = cfg.output
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    row_digest = hashlib.sha1(
        json.dumps([to_dict(cfg.verify), to_dict(cfg.rows)], sort_keys=True).encode()
    ).hexdigest()
    try:
        cache = cio.VerdictCache(out / WORK, row_digest)
        results = _verify_rows(cfg, files, total, cache)
        if cfg.verify.judge:
            _judge(cfg, files, results)
        decisions, corpus_info = corpus_checks(cfg, cio.rows(files), results)
    except UserError:
        if created:  # a bad row found mid-way: leave no half-made output behind
            shutil.rmtree(out, ignore_errors=True)
        raise

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
