"""Verify rows: the one entry that `distill filter`, `distill eval` and `distill rl` call.

Each row's checks run in a worker process with a hard wall-clock limit (`verify/pool.py`): the
correctness check of its domain, plus any per-row checks the caller adds (the filter's
readability rules) in the same worker, so a row crosses a pipe once. A worker stuck on a row is
killed and the row reported as `verify_timeout`, never as a verdict. Rows the rules cannot
decide go to the generative judge when one is configured. Verdicts come back in memory, keyed
by row id; with a cache they are also kept on disk, so a rerun skips finished rows. The filter
asks for them on disk only (`collect=False`): it reads each back from the cache when it needs
it, so a million rows' verdicts are never held at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from distill.config import to_dict
from distill.log import progress
from distill.verify import VerifyConfig, check_correctness
from distill.verify.cache import VerdictCache, row_digest
from distill.verify.code_tests import count_tests
from distill.verify.judge import needs_judge, run_judge
from distill.verify.pool import Item, Outcome, run_pool, start_server

log = logging.getLogger(__name__)

Checks = dict[str, dict[str, Any]]  # check name -> verdict as a dict ("correctness", ...)
# (fn, items, workers, preload=...) -> outcomes, as they finish: `run_pool` or the Ray one
Executor = Callable[..., Iterator[Outcome]]
# imported once in the fork server, so every worker (and every replacement after a timeout
# kill) starts warm instead of importing sympy on its first row
PRELOAD = ["distill.verify.maths", "distill.verify.choice", "distill.verify.code_tests",
           "math_verify"]  # fmt: skip


GROUP = 16  # a problem's maths samples sent to one worker at once, at most


def _grouped(rows: Iterable[tuple[dict[str, Any], Item]]) -> Iterator[Item | list[Item]]:
    """Consecutive maths rows of one problem go to one worker together (`run_pool` groups):
    the gold is parsed and each distinct boxed answer judged once there, not once in every
    worker. Other rows go one by one: a problem's code samples may each run for seconds, and
    one worker holding sixteen of them would leave the others idle at the end."""
    group: list[Item] = []
    problem = None
    for row, item in rows:
        pid = row.get("problem_id") if row.get("domain") == "math" else None
        if group and (pid is None or pid != problem or len(group) >= GROUP):
            yield group if len(group) > 1 else group[0]
            group = []
        if pid is None:
            yield item
        else:
            group.append(item)
            problem = pid
    if group:
        yield group if len(group) > 1 else group[0]


def _preload(also: Any) -> list[str]:
    return PRELOAD + ([type(also).__module__] if also is not None else [])


def warm_workers(also: Any = None) -> None:
    """Start the local workers' fork server now (it imports sympy for a second or more), so
    that happens beside what the caller does before `verify_rows` (`run_pool` then finds it)."""
    start_server(_preload(also))


def row_timeout(row: dict[str, Any], cfg: VerifyConfig) -> float:
    """The wall-clock limit of one row: code pays each test's own sandbox limit, plus slack."""
    if row.get("domain") == "code":
        return cfg.verify_timeout + cfg.code.timeout * max(1, count_tests(row.get("reference"))) + 5
    return cfg.verify_timeout


def _check(payload: tuple[dict[str, Any], VerifyConfig, Callable[[dict], Checks] | None]) -> Checks:
    row, cfg, also = payload
    out = {"correctness": check_correctness(row, cfg).as_dict()}
    if also is not None:
        out.update(also(row))
    return out


def settings_digest(cfg: VerifyConfig, also: Any = None) -> str:
    """What every cached verdict depends on besides the row itself (not where it ran: the
    number of workers, a Ray cluster or a Slurm shard give the same verdicts)."""
    verify = {k: v for k, v in to_dict(cfg).items() if k != "workers"}
    settings = [verify, to_dict(also) if also is not None else None]
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def verify_rows(
    rows: Iterable[dict[str, Any]],
    cfg: VerifyConfig,
    *,
    also: Callable[[dict[str, Any]], Checks] | None = None,
    cache_dir: Path | None = None,
    cache: VerdictCache | None = None,
    collect: bool = True,
    total: int | None = None,
    show_progress: bool = True,
    label: str = "verify",
    executor: Executor | None = None,
    reuse: list[Path] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_verdict: Callable[[str, Checks], None] | None = None,
    group: bool = False,
) -> dict[str, Checks]:
    """Row id -> its checks: `correctness` (+ whatever `also` returns). Rows need `id`,
    `domain`, `reference` and `answer` (and what `also` reads). `also` must be picklable: it
    runs in the workers (a dataclass instance with `__call__`, e.g. the filter's rules).
    `executor`: where the checks run (default `run_pool` on this machine's cores; the Ray
    executor of `verify/ray_pool.py` has the same signature). `cache_dir`: a verdict cache
    opened (and closed) here; `reuse`: more verdict caches to read (the Slurm shards'
    folders), never written. `cache`: one the caller opened (made with `settings_digest(cfg,
    also)`) and keeps open to read verdicts back. `collect=False`: verdicts go to the cache
    only and the returned dict is empty (memory stays flat however many rows). `on_row(row)`
    sees every row in input order before it is checked, `on_verdict(id, checks)` every
    row's final verdict as it is known (in any order): the filter's corpus step rides along
    this pass instead of reading the corpus again. `group`: send a problem's consecutive
    maths rows to one worker together (`_grouped`), for callers that hand over whole corpora;
    a streaming caller (adaptive sampling) waits for each row's verdict and must not."""

    own = cache is None and cache_dir is not None
    if own:
        cache = VerdictCache(cache_dir, settings_digest(cfg, also), reuse or [])
    if not collect and cache is None:
        raise ValueError("verify_rows(collect=False) needs a cache to keep the verdicts in")
    results: dict[str, Checks] = {}
    digests: dict[str, str] = {}  # rows in the pool or waiting for the judge: not yet cached
    limits: dict[str, float] = {}
    waiting: dict[str, dict[str, Any]] = {}  # rows in the pool, kept for the judge
    to_judge: list[dict[str, Any]] = []
    judging: dict[str, Checks] = {}  # the rules' verdicts of the rows in `to_judge`
    reused = 0

    def todo() -> Iterator[Item | list[Item]]:
        if group:
            return _grouped(rows_to_check())
        return (item for _, item in rows_to_check())

    def rows_to_check() -> Iterator[tuple[dict[str, Any], Item]]:
        nonlocal reused
        for row in rows:
            key = row["id"]
            if on_row:
                on_row(row)
            digest = row_digest(row)
            cached = cache.get(key, digest) if cache else None
            if cached is not None:
                if collect:
                    results[key] = cached
                if on_verdict:
                    on_verdict(key, cached)
                reused += 1
                bar.update(task, advance=1)
                continue
            digests[key], limits[key] = digest, row_timeout(row, cfg)
            if cfg.judge:
                waiting[key] = row
            yield row, (key, (row, cfg, also), limits[key])

    def keep(key: str, checks: Checks, unanswered: bool = False) -> None:
        if collect:
            results[key] = checks
        if on_verdict:
            on_verdict(key, checks)
        if cache and unanswered:  # a dead judge endpoint: this run's verdict, asked again later
            digests.pop(key)
            cache.hold(key, checks)
        elif cache:
            cache.add(key, digests.pop(key), checks)

    workers = cfg.workers or len(os.sched_getaffinity(0))
    preload = _preload(also)
    bar = progress("{task.fields[rate]} rows/s", disable=not show_progress)
    started, fresh = time.time(), 0
    try:
        with bar:
            task = bar.add_task(label, total=total, rate="-")
            for out in (executor or run_pool)(_check, todo(), workers, preload=preload):
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
                row = waiting.pop(out.key, None)
                if row is not None and needs_judge(row, checks["correctness"], cfg):
                    judging[out.key] = checks
                    to_judge.append(row)
                else:
                    keep(out.key, checks)
                fresh += 1
                bar.update(task, advance=1, rate=f"{fresh / max(time.time() - started, 1e-9):,.0f}")
        if to_judge:
            rules = {key: checks["correctness"] for key, checks in judging.items()}
            verdicts = run_judge(cfg, to_judge, rules)
            for key, checks in judging.items():  # a row the judge gave no reply keeps the rules'
                verdict = verdicts.get(key)
                failed = verdict is None or bool(verdict["judge"].get("error"))
                keep(key, checks if verdict is None else {**checks, "correctness": verdict}, failed)
        if cache:
            cache.flush()
    finally:
        if own:
            cache.close()
    if reused:
        log.info("reused %d cached row verdicts, checked %d rows", reused, fresh)
    return results
