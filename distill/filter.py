"""`distill filter`: corpus -> per-row verdicts -> kept / rejected / report.

    distill filter --input traces/math500-r1 --output corpus/math500-r1 [--config filter.yaml]

Rejection sampling's second half: only verified-correct, readable traces reach the student.
Per-row checks (correctness, readability) run through the verification service
(`verify_rows`: worker processes, a hard wall-clock limit per row); their verdicts are cached
in `OUTPUT/.work/` so a rerun skips finished rows.
Corpus-level checks (duplicates, contamination) and the per-problem selection follow; every
row is written to `kept/` or `rejected/` with `correct`, `kept`, `reasons` and `checks`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distill.config import option, to_dict
from distill.errors import UserError
from distill.filters.corpus_checks import CorpusConfig, corpus_checks
from distill.filters.inputs import ROW_FIELDS, Deriver, corpus_rows, input_files, iter_batches
from distill.filters.readability import RowChecksConfig
from distill.filters.report import build_report, print_report, write_report
from distill.hub import check_token, push_dataset
from distill.records import (
    atomic_write_bytes,
    atomic_write_json,
    read_manifest,
    write_table,
)
from distill.verify import VerifyConfig
from distill.verify.service import verify_rows

if TYPE_CHECKING:  # heavy modules are imported where used: `distill --help` stays instant
    import pyarrow as pa

log = logging.getLogger(__name__)

FILTER_COLUMNS = ("correct", "kept", "reasons", "checks")
WORK = ".work"
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


def _write_outputs(
    cfg: FilterConfig, files: list[Path], decisions: dict[str, dict[str, Any]], staging: Path
) -> None:
    """Stream the input again, attach verdict columns, split into kept/ and rejected/."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers = {"kept": [], "rejected": []}
    counters = {"kept": 0, "rejected": 0}
    buffers: dict[str, list[pa.Table]] = {"kept": [], "rejected": []}
    derive = Deriver()
    for split in writers:
        (staging / split).mkdir(parents=True)

    def flush(split: str, force: bool = False) -> None:
        rows = sum(t.num_rows for t in buffers[split])
        if rows and (force or rows >= SHARD_ROWS):
            table = pa.concat_tables(buffers[split], promote_options="default")
            write_table(staging / split / f"shard-{counters[split]:05d}.parquet", table)
            counters[split] += 1
            buffers[split] = []

    for f, offset, batch in iter_batches(files):
        rows = batch.to_pylist()
        for i, row in enumerate(rows):
            derived = derive({k: row.get(k) for k in ROW_FIELDS}, f"{f}: row {offset + i}")
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

    started = time.time()
    if cfg.push_to_hub:
        check_token()  # before hours of verification, not after
    files = input_files(Path(cfg.input))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if total == 0:
        raise UserError(f"{cfg.input}: the corpus has no rows")
    input_key = {"path": str(cfg.input), "files": len(files), "rows": total}
    _check_output(cfg, input_key)
    out = cfg.output
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = verify_rows(
            corpus_rows(files), cfg.verify, also=cfg.rows, cache_dir=out / WORK, total=total,
            show_progress=cfg.progress,
        )  # fmt: skip
        decisions, corpus_info = corpus_checks(
            cfg.corpus, corpus_rows(files), results, cfg.verify.keep_unverified
        )
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
        push_dataset(out, cfg.push_to_hub, private=cfg.private)
    return report
