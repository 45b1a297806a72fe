"""`distill generate --until-correct K`: verified, adaptive rejection sampling.

Fixed `--samples N` spends N teacher samples on every problem; the filter later finds easy
problems with 16 correct answers when K were wanted and hard ones with none. Here each problem
is sampled in rounds (`--samples N` is the ceiling): every finished request's samples go
through the filter's own per-row checks (correctness + the readability rules, `verify_rows` in
worker processes) while the teacher keeps generating, and a problem with K samples that pass
stops being asked for; the others get another round, sized from their pass rate so far.

No round is a barrier: problems move independently (one request in flight per problem, the
others' requests keep the engine full), follow-up rounds jump the queue, and the request
stream says "nothing now" (None) to backends that accept it instead of ending. Time with no
teacher request in flight while work remains is measured (`idle_s`).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from distill.filters.corpus_checks import row_reasons
from distill.filters.readability import RowChecksConfig
from distill.problems import Problem
from distill.teachers import Request
from distill.verify import VerifyConfig
from distill.verify.pool import Outcome, run_pool
from distill.verify.service import verify_rows

_CLOSE = object()


def accepts_idle(teacher: Any) -> bool:
    """Whether a backend takes None from the request stream as 'nothing to ask now'."""
    return bool(getattr(teacher, "idle_requests", False))


def verdict_of(checks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the corpus row stores: the checks, and whether the row passes them all (the
    filter's per-row decision: `row_reasons` with undecided correctness counting as failed)."""
    reasons = row_reasons(checks, keep_unverified=False)
    return {"passed": not reasons, "reasons": reasons, "checks": checks}


def failure_checks(out: Outcome, limit: float | None = None) -> dict[str, dict[str, Any]]:
    # as verify_rows reports a worker that timed out or crashed
    if out.failure == "timeout":
        return {"correctness": {"ok": False, "reason": "verify_timeout", "limit_s": limit}}
    return {"correctness": {"ok": None, "reason": "verify_error", "error": out.failure}}


class Verifier:
    """One `verify_rows` call for the whole run, in a background thread, fed by a queue: the
    worker processes start once, and each verdict is handed back as soon as it is known."""

    def __init__(self, verify: VerifyConfig, rows: RowChecksConfig, workers: int | None = None):
        self.verify = verify if workers is None else replace(verify, workers=workers)
        self.rows_cfg = rows
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.verdicts: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.in_pool = 0  # rows handed to the pool whose verdict has not come back
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="verify", daemon=True)
        self.thread.start()

    def submit(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.inbox.put(row)

    def close(self) -> None:
        self.inbox.put(_CLOSE)
        self.thread.join(timeout=60)

    def _rows(self) -> Iterator[dict[str, Any]]:
        while (row := self.inbox.get()) is not _CLOSE:
            yield row

    def _executor(self, fn: Callable, items: Iterator, workers: int, preload: Any = None):
        # run_pool reads None from its source as "nothing now" and ends once nothing is in
        # its workers: so block for the next row only when the pool is empty.
        def source() -> Iterator[Any]:
            while True:
                if self.in_pool and self.inbox.empty():
                    yield None
                    continue
                item = next(items, None)
                if item is None:
                    return
                self.in_pool += 1
                yield item

        limits: dict[str, float] = {}
        for out in run_pool(fn, _tap(source(), limits), workers, preload=preload):
            self.in_pool -= 1
            checks = failure_checks(out, limits.get(out.key)) if out.failure else out.value
            self.verdicts.put((out.key, checks))
            yield out

    def _run(self) -> None:
        try:
            verify_rows(self._rows(), self.verify, also=self.rows_cfg, show_progress=False,
                        executor=self._executor)  # fmt: skip
        except BaseException as e:  # surfaced to the generate loop
            self.error = e
            self.verdicts.put(("", {}))


def _tap(items: Iterator[Any], limits: dict[str, float]) -> Iterator[Any]:
    for item in items:
        if item is not None:
            limits[item[0]] = item[2]
        yield item


@dataclass
class ProblemState:
    problem: Problem
    drawn: set[int] = field(default_factory=set)  # indices back from the teacher (or on disk)
    asked: set[int] = field(default_factory=set)  # indices requested, not back yet
    verifying: int = 0  # samples back, verdict pending
    passed: int = 0  # samples that pass every per-row check (distinct completions)
    correct: int = 0
    verified: int = 0  # samples whose correctness was decided (true or false)
    samples: int = 0  # samples with a verdict
    rounds: int = 0
    tokens: int = 0
    completions: set[int] = field(default_factory=set)  # hashes of passed completions


class Scheduler:
    """Which problem to ask for how many samples next, from the verdicts so far."""

    def __init__(self, states: dict[str, ProblemState], k: int, n: int, verifier: Verifier,
                 idle_ok: bool, messages: dict[str, list[dict[str, str]]],
                 prefill: dict[str, str], distinct: bool = True):  # fmt: skip
        self.states, self.k, self.n = states, k, n
        self.verifier, self.idle_ok = verifier, idle_ok
        self.messages, self.prefill, self.distinct = messages, prefill, distinct
        self.lock = threading.RLock()
        self.pending: dict[str, dict[str, Any]] = {}  # row id -> row awaiting its verdict
        self.ready_rows: list[dict[str, Any]] = []  # rows with their verdict, to be written
        self.ready: deque[str] = deque(p for p, s in states.items() if self._wants(s))
        self.finished = len(states) - len(self.ready)  # problems with nothing left to do
        self.inflight = 0  # samples asked of the teacher and not back
        self.requests = 0
        self.idle_s = 0.0
        self.inflight_area = 0.0  # integral of in-flight samples over time
        self.started = self._mark = time.monotonic()

    # -- state ------------------------------------------------------------------------------
    def _wants(self, s: ProblemState) -> bool:
        return (not s.asked and not s.verifying and s.passed < self.k
                and len(s.drawn) < self.n)  # fmt: skip

    def _size(self, s: ProblemState) -> int:
        """Samples for the next round: enough to expect K passes at the rate seen so far."""
        need = self.k - s.passed
        rate = (s.passed + 1) / (s.samples + 2)  # Laplace: a first round asks for K
        return max(1, min(self.n - len(s.drawn), math.ceil(need / rate) if s.samples else need))

    def _tick(self) -> None:
        now = time.monotonic()
        self.inflight_area += self.inflight * (now - self._mark)
        self._mark = now

    def done(self) -> bool:
        with self.lock:
            busy = any(s.verifying for s in self.states.values())
            return not self.ready and not self.inflight and not busy

    def poll(self, block: float = 0.0) -> None:
        """Apply the verdicts that have come back (waiting up to `block` s for the first)."""
        try:
            items = [self.verifier.verdicts.get(timeout=block) if block else
                     self.verifier.verdicts.get_nowait()]  # fmt: skip
        except queue.Empty:
            return
        while True:
            try:
                items.append(self.verifier.verdicts.get_nowait())
            except queue.Empty:
                break
        if self.verifier.error is not None:
            raise self.verifier.error
        with self.lock:
            for key, checks in items:
                self._apply(key, checks)

    def _apply(self, key: str, checks: dict[str, Any]) -> None:
        row = self.pending.pop(key)
        s = self.states[row["problem_id"]]
        verdict = verdict_of(checks)
        ok = checks.get("correctness", {}).get("ok")
        if verdict["passed"]:
            h = hash(row["completion"])
            if self.distinct and h in s.completions:  # the filter drops exact duplicates
                verdict = {**verdict, "passed": False, "reasons": ["duplicate"]}
            else:
                s.completions.add(h)
                s.passed += 1
        s.samples += 1
        s.verified += ok is not None
        s.correct += bool(ok)
        s.verifying -= 1
        row["verdict"] = json.dumps(verdict, ensure_ascii=False, default=str)
        self.ready_rows.append(row)
        if self._wants(s):
            self.ready.appendleft(s.problem.problem_id)  # follow-ups first: a short tail
        elif not s.asked and not s.verifying:
            self.finished += 1

    def take_rows(self) -> list[dict[str, Any]]:
        with self.lock:
            rows, self.ready_rows = self.ready_rows, []
            return rows

    # -- teacher side ---------------------------------------------------------------------
    def _next(self) -> Request | None:
        while self.ready:
            s = self.states[self.ready.popleft()]
            if not self._wants(s):
                continue
            size = self._size(s)
            free = [i for i in range(self.n) if i not in s.drawn and i not in s.asked]
            indices = free[:size]
            s.asked.update(indices)
            s.rounds += 1
            self.requests += 1
            self._tick()
            self.inflight += len(indices)
            pid = s.problem.problem_id
            return Request(pid, self.messages[pid], indices, self.prefill[pid])
        return None

    def stream(self) -> Iterator[Request | None]:
        """The requests of one teacher stream. Ends when everything is done, or (for a
        backend that cannot take None) when all work left is already in flight."""
        while True:
            self.poll()
            with self.lock:
                req = self._next()
                inflight = self.inflight
            if req is not None:
                yield req
                continue
            if self.done():
                return
            if not inflight:  # the teacher has nothing: waiting on verdicts is idle time
                t0 = time.monotonic()
                self.poll(block=0.05)
                self.idle_s += time.monotonic() - t0
                continue
            if not self.idle_ok:
                return  # the backend drains what is in flight; the caller opens a new stream
            yield None

    def returned(self, records: list[dict[str, Any]]) -> None:
        """A request's samples came back: count them and send them to verification."""
        with self.lock:
            self._tick()
            for row in records:
                s = self.states[row["problem_id"]]
                s.asked.discard(row["sample_index"])
                s.drawn.add(row["sample_index"])
                s.verifying += 1
                s.tokens += row["completion_tokens"]
                self.inflight -= 1
                self.pending[row["id"]] = row
        self.verifier.submit(records)

    def summary(self) -> dict[str, Any]:
        self._tick()
        wall = time.monotonic() - self.started
        return {
            "requests": self.requests,
            "idle_s": round(self.idle_s, 2),
            "wall_s": round(wall, 2),
            "idle_share": round(self.idle_s / wall, 4) if wall else 0.0,
            "mean_inflight_samples": round(self.inflight_area / wall, 1) if wall else 0.0,
        }


def pass_rates(states: dict[str, ProblemState]) -> dict[str, dict[str, int]]:
    """Problem id -> {correct, verified, samples, passed, rounds}: correct / verified is the
    pass rate `distill filter` reports (report.json `pass_rates`) and `--pass-rate-band` uses."""
    return {
        pid: {
            "correct": s.correct,
            "verified": s.verified,
            "samples": s.samples,
            "passed": s.passed,
            "rounds": s.rounds,
        }
        for pid, s in sorted(states.items())
    }


def restore(
    state: ProblemState, row: dict[str, Any], verdict: dict[str, Any], distinct: bool = True
) -> None:
    """Count a row already on disk (with its verdict) into its problem's state."""
    ok = verdict["checks"].get("correctness", {}).get("ok")
    state.drawn.add(row["sample_index"])
    state.samples += 1
    state.verified += ok is not None
    state.correct += bool(ok)
    state.tokens += row.get("completion_tokens") or 0
    h = hash(row.get("completion") or "")
    if verdict["passed"] and not (distinct and h in state.completions):
        state.passed += 1
        state.completions.add(h)
