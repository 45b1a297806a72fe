"""`distill filter`: corpus -> per-row verdicts -> kept / rejected / report.

    distill filter --input traces/math500-r1 --output corpus/math500-r1 [--config filter.yaml]

Rejection sampling's second half: only verified-correct, readable traces reach the student.
Per-row checks (correctness, readability) run through the verification service
(`verify_rows`: worker processes, a hard wall-clock limit per row); their verdicts are cached
in `OUTPUT/.work/` so a rerun skips finished rows.
Corpus-level checks (duplicates, contamination) and the per-problem selection follow; every
row is written to `kept/` or `rejected/` with `correct`, `kept`, `reasons` and `checks`.
Memory stays flat with corpus size: the input is streamed (three passes: row check, verify
with the corpus scan riding along, write), verdicts are read back from their cache row by row,
per-row state of the corpus step sits in an sqlite file in `.work/`, and only per-problem facts
are held.
The new output (both splits and the report) is written beside the old one and switched in
whole (`records.switch_filter_output`): a kill at any moment leaves the old output or the new
one, never a mix.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distill.config import dump_yaml, option, to_dict
from distill.errors import UserError
from distill.filters.corpus_checks import CorpusChecks, CorpusConfig
from distill.filters.decontam import build_index
from distill.filters.inputs import (
    ROW_FIELDS,
    Deriver,
    check_rows,
    corpus_rows,
    decision_rows,
    input_files,
    iter_batches,
    prefetched,
)
from distill.filters.readability import RowChecksConfig
from distill.filters.report import Tally, build_report, print_report, write_report
from distill.lock import output_lock
from distill.problems import in_shard, parse_shard
from distill.records import (
    FILTER_SPLITS,
    atomic_write_bytes,
    atomic_write_json,
    new_filter_output,
    read_manifest,
    switch_filter_output,
    write_table,
)
from distill.verify import VerifyConfig
from distill.verify.cache import VerdictCache, scratch_db
from distill.verify.service import settings_digest, verify_rows, warm_workers

if TYPE_CHECKING:  # heavy modules are imported where used: `distill --help` stays instant
    import pyarrow as pa

log = logging.getLogger(__name__)

# problem_correct / problem_verified: the row's problem's verified-correct and verified samples
# (its pass rate, the same on every row of a problem), for RL data selection and
# difficulty-aware SFT; report.json's `pass_rates` holds them per problem.
FILTER_COLUMNS = ("correct", "kept", "reasons", "checks", "problem_correct", "problem_verified")
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
    executor: Literal["local", "ray"] = option(
        "local",
        help="Where the per-row checks run: this machine's cores, or a Ray cluster (--ray-address).",
    )
    ray_address: str | None = option(
        None,
        help="Ray cluster to run the per-row checks on (auto, HEAD:6379, ray://HEAD:10001); "
        "unset: a Ray instance on this machine.",
    )
    shard: str | None = option(
        None,
        help="Run only the per-row checks of shard I/N of the problems (one Slurm array task "
        "each); then `--reduce` does the corpus step once.",
    )
    reduce: bool = option(
        False,
        help="Corpus step only, over the verdicts of every --shard run (refused while a shard "
        "is missing).",
    )
    overwrite: bool = option(False, help="Replace an existing filter output of another input.")
    push_to_hub: str | None = option(
        None, help="Push kept/rejected to this Hub dataset repo at the end."
    )
    private: bool = option(False, help="Create the Hub repo private.")
    progress: bool = option(True, help="Show progress bars.", cli=False)
    report: bool = option(True, help="Print the report table at the end.", cli=False)


def _write_outputs(files: list[Path], checks: CorpusChecks, generation: Path) -> Tally:
    """Stream the input again, decide each row, attach the verdict columns, split into kept/
    and rejected/; returns the report's counts, added up on the way. The rows' own columns
    stay Arrow data: only the fields a decision reads become Python objects (a corpus is
    mostly long completions, which need not become strings and back)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counters = {"kept": 0, "rejected": 0}
    buffers: dict[str, list[pa.Table]] = {"kept": [], "rejected": []}
    writes: list[Future[None]] = []
    derive = Deriver()
    tally = Tally()
    for split in counters:
        (generation / split).mkdir()

    def flush(split: str, force: bool = False) -> None:
        rows = sum(t.num_rows for t in buffers[split])
        if rows and (force or rows >= SHARD_ROWS):
            table = pa.concat_tables(buffers[split], promote_options="default")
            path = generation / split / f"shard-{counters[split]:05d}.parquet"
            writes.append(writer.submit(write_table, path, table))
            counters[split] += 1
            buffers[split] = []

    # Parquet reads and writes release the GIL: the next batch is read, and a full shard
    # written, in threads while this one decides rows.
    with ThreadPoolExecutor(1, thread_name_prefix="distill-write") as writer:
        for f, offset, batch in prefetched(iter_batches(files)):
            rows = decision_rows(batch, derive, f, offset)
            decisions = [checks.decide(row) for row in rows]
            for d, row in zip(decisions, rows, strict=True):
                tally.add(d, row)
            table = _with_verdicts(batch, rows, decisions)
            kept = pa.array([d["kept"] for d in decisions], pa.bool_())
            for split, mask in (("kept", kept), ("rejected", pc.invert(kept))):
                part = table.filter(mask)
                if part.num_rows:
                    buffers[split].append(part)
                    flush(split)
            if any(w.done() and w.exception() for w in writes):
                break  # a failed write (a full disk): raised below, before more work
        else:
            for split in counters:
                flush(split, force=True)
        for w in writes:
            w.result()
    # An empty split still gets one (empty) shard with the same columns, so it reads as 0 rows.
    schema = next((pq.read_schema(p) for p in sorted(generation.glob("*/shard-*.parquet"))), None)
    for split in counters:
        if counters[split] == 0 and schema is not None:
            write_table(generation / split / "shard-00000.parquet", schema.empty_table())
    return tally


def _with_verdicts(batch: pa.RecordBatch, rows: list[dict[str, Any]], decisions: list[dict[str, Any]]) -> pa.Table:
    """The batch as a table with what was derived filled in and the verdict columns added
    (replaced, when the input is itself a filter output), typed the same in every shard."""
    import pyarrow as pa

    table = pa.Table.from_batches([batch])

    def put(name: str, values: Any) -> None:
        nonlocal table
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)

    for k in ROW_FIELDS:
        if k not in batch.schema.names or batch.column(k).null_count:
            put(k, pa.array([r[k] for r in rows]))
    put("correct", pa.array([d["correct"] for d in decisions], pa.bool_()))
    put("kept", pa.array([d["kept"] for d in decisions], pa.bool_()))
    put("reasons", pa.array([d["reasons"] for d in decisions], pa.list_(pa.string())))
    put("checks", pa.array([json.dumps(d["checks"], ensure_ascii=False, default=str) for d in decisions], pa.string()))  # fmt: skip
    for name in ("problem_correct", "problem_verified"):
        put(name, pa.array([d[name] for d in decisions], pa.int64()))
    for name in ("sample_index", "completion_tokens", "prompt_tokens"):
        if name in table.column_names:
            put(name, table.column(name).cast(pa.int64()))
    for name in ("reference", "error"):  # all-null columns would infer a null type per shard
        if name in table.column_names and pa.types.is_null(table.column(name).type):
            put(name, table.column(name).cast(pa.string()))
    return table


def _same_input(previous: dict[str, Any], current: dict[str, Any]) -> bool:
    # by absolute path: `traces/x` and `/home/me/traces/x` are one input (older reports lack it)
    keys = ("resolved", "files", "rows") if "resolved" in previous else ("path", "files", "rows")
    return all(previous.get(k) == current.get(k) for k in keys)


def _check_output(cfg: FilterConfig, input_key: dict[str, Any]) -> None:
    out = cfg.output
    if not out.exists():
        return
    stamp = out / "report.json"
    entries = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "logs"]
    if stamp.is_file():
        previous = json.loads(stamp.read_text()).get("input")
        if previous and not _same_input(previous, input_key) and not cfg.overwrite:
            raise UserError(
                f"{out}: holds the filter output of another input ({previous.get('path')}); use --overwrite"
            )
    elif entries and not cfg.overwrite:
        raise UserError(f"{out}: exists and is not a distill filter output")
    if Path(cfg.input).resolve() == out.resolve():
        raise UserError(f"{out}: the output must differ from the input")


def _shard_dir(out: Path, shard: tuple[int, int]) -> Path:
    return out / WORK / f"shard-{shard[0]:05d}-of-{shard[1]:05d}"


def _executor(cfg: FilterConfig) -> Any:
    if cfg.executor == "ray":
        from distill.verify.ray_pool import ray_executor

        return ray_executor(cfg.ray_address)
    return None  # run_pool on this machine's cores


def _shard_folders(cfg: FilterConfig, input_key: dict[str, Any]) -> list[Path]:
    """The verdict folders of the --shard runs; with --reduce every shard must be finished."""
    found = sorted((cfg.output / WORK).glob("shard-*-of-*"))
    if not cfg.reduce:
        return found
    if not found:
        raise UserError(f"{cfg.output}: --reduce found no shard verdicts; run --shard I/N first")
    counts = {int(p.name.rsplit("-of-", 1)[1]) for p in found}
    if len(counts) != 1:
        raise UserError(
            f"{cfg.output}/{WORK}: shards of several splits ({sorted(counts)}); remove the stale ones"
        )
    n = counts.pop()
    digest = settings_digest(cfg.verify, cfg.rows)
    missing = []
    for i in range(n):
        done = _shard_dir(cfg.output, (i, n)) / "done.json"
        stamp = json.loads(done.read_text()) if done.is_file() else {}
        if stamp.get("digest") != digest or not _same_input(stamp.get("input", {}), input_key):
            missing.append(f"{i}/{n}")
    if missing:
        raise UserError(
            f"{cfg.output}: --reduce: shard(s) {', '.join(missing)} not finished with this input "
            "and these per-row settings; run them first"
        )
    return found


def _run_shard(cfg: FilterConfig, files: list[Path], input_key: dict[str, Any]) -> dict[str, Any]:
    """One Slurm array task: the per-row checks of 1/N of the problems, as cached verdicts."""
    shard = parse_shard(cfg.shard)
    assert shard is not None
    folder = _shard_dir(cfg.output, shard)
    with output_lock(folder, f"distill filter --shard {cfg.shard}"):  # shards run side by side
        _check_output(cfg, input_key)
        count = 0

        def rows() -> Iterator[dict[str, Any]]:
            nonlocal count
            for r in corpus_rows(files):
                if in_shard(r["problem_id"], shard):
                    count += 1
                    yield r

        verify_rows(
            rows(), cfg.verify, also=cfg.rows, cache_dir=folder, collect=False,
            show_progress=cfg.progress, executor=_executor(cfg), label=f"verify {cfg.shard}",
            group=True,
        )  # fmt: skip
        info = {"shard": cfg.shard, "rows": count, "input": input_key,
                "digest": settings_digest(cfg.verify, cfg.rows)}  # fmt: skip
        atomic_write_json(folder / "done.json", info)
    log.info("shard %s: %d rows verified; `distill filter --reduce` once every shard is done",
             cfg.shard, count)  # fmt: skip
    return info


def filter_corpus(cfg: FilterConfig) -> dict[str, Any]:
    """Filter a corpus; returns the report (also written as report.json / report.md).
    With `shard`, only that shard's per-row verdicts (returns what it did)."""
    import pyarrow.parquet as pq

    started = time.time()
    if cfg.shard and cfg.reduce:
        raise UserError("--shard and --reduce: one run is a shard or the reduce step, not both")
    if cfg.push_to_hub and not cfg.shard:
        from distill.hub import check_token  # the Hub client and cards: only for a push

        check_token()  # before hours of verification, not after
    files = input_files(Path(cfg.input))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if total == 0:
        raise UserError(f"{cfg.input}: the corpus has no rows")
    if cfg.executor == "local" and not cfg.reduce:
        warm_workers(cfg.rows)  # their imports run beside the checks and set-up below
    check_rows(files)  # a bad row or a duplicate id: refused before hours of verification
    input_key = {"path": str(cfg.input), "resolved": str(Path(cfg.input).resolve()),
                 "files": len(files), "rows": total}  # fmt: skip
    if cfg.shard:
        return _run_shard(cfg, files, input_key)
    # every benchmark name is checked (and loaded) before any row is verified
    c = cfg.corpus
    benchmarks = build_index(c.decontaminate, c.contamination_ngram) if c.decontaminate else None
    out = cfg.output
    created = not out.exists()
    with output_lock(out, "distill filter"):
        _check_output(cfg, input_key)
        # the scratch indexes (verdicts, the corpus step's per-row state) go when the run ends
        with ExitStack() as scratch:
            try:
                shards = _shard_folders(cfg, input_key)
                digest = settings_digest(cfg.verify, cfg.rows)
                cache = scratch.enter_context(VerdictCache(out / WORK, digest, shards))
                db = scratch.enter_context(scratch_db(out / WORK / "corpus.sqlite"))
                checks = CorpusChecks(
                    cfg.corpus, cache.checks, db, cfg.verify.keep_unverified, benchmarks
                )
                # the corpus step sees each row as it is read and counts each verdict as it
                # arrives: one pass over the input for both
                verify_rows(
                    corpus_rows(files), cfg.verify, also=cfg.rows, cache=cache, collect=False,
                    total=total, show_progress=cfg.progress,
                    executor=None if cfg.reduce else _executor(cfg),
                    on_row=checks.see, on_verdict=checks.count, group=True,
                )  # fmt: skip
                checks.finish()
            except UserError:
                if created:  # a bad row found mid-way: leave no half-made output behind
                    shutil.rmtree(out, ignore_errors=True)
                raise
            # the whole new output is written beside the current one, then switched in at once
            generation = new_filter_output(out)
            tally = _write_outputs(files, checks, generation)
        manifest = read_manifest(Path(cfg.input)) if Path(cfg.input).is_dir() else None
        report = build_report(cfg, tally, checks.info(), input_key, started)
        report["judge_overturned"] = tally.overturned  # counted apart (--judge-wrong)
        for split in FILTER_SPLITS:
            m = dict(manifest or {})
            m["filter"] = {"split": split, "input": str(cfg.input), "config": to_dict(cfg)}
            m["counts"] = {"rows": report["counts"][split]}
            m["pass_rates"] = report["pass_rates"]  # per problem: what RL and curricula select on
            atomic_write_json(generation / split / "manifest.json", m)
        write_report(generation, report, tally)
        atomic_write_bytes(
            generation / "config.yaml",
            dump_yaml(to_dict(cfg)).encode(),
        )
        switch_filter_output(out, generation)
        if cfg.report:
            print_report(report, out)
        if cfg.push_to_hub:
            from distill.hub import push_dataset

            push_dataset(out, cfg.push_to_hub, private=cfg.private)
    return report
