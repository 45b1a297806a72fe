"""The per-row checks on a Ray cluster: `run_pool`'s contract, spread over every node.

    distill filter --input traces/x --output corpus/x --executor ray --ray-address auto

Rows travel in chunks (one Ray task each, one CPU). Inside a task the chunk runs through the
same `run_pool` as on one machine, with one worker process: every row keeps its hard
wall-clock limit (a stuck row is SIGKILLed and reported as `verify_timeout`), code still runs
in the sandbox of `sandbox.py` on that node, and verdicts are the same as a local run's.
Ray reuses its worker processes, so the fork server that preloaded sympy starts once per
worker, not once per chunk. Outcomes stream back as chunks finish; at most two chunks per
cluster CPU are in flight, so the driver never holds the corpus.

Every node needs distill installed (`pip install -e ".[ray]"`, the same version). Ray is
imported here only, when the executor is asked for: `distill --help` stays instant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from distill.errors import UserError
from distill.verify.pool import Item, Outcome, run_pool

log = logging.getLogger(__name__)

# rows per Ray task (a problem's group stays whole): ~1 s of maths work, far above the ~1 ms a
# task costs Ray
CHUNK = 256


def _run_chunk(fn: Callable[[Any], Any], items: list[Item], preload: list[str]) -> list[tuple]:
    return [(o.key, o.value, o.failure) for o in run_pool(fn, items, 1, preload=preload)]


def _chunks(items: Iterable[Item | list[Item]], rows: int) -> Iterator[list[Item | list[Item]]]:
    """Parts of about `rows` rows each; a group (a problem's samples) stays whole."""
    part: list[Item | list[Item]] = []
    n = 0
    for item in items:
        part.append(item)
        n += len(item) if isinstance(item, list) else 1
        if n >= rows:
            yield part
            part, n = [], 0
    if part:
        yield part


def ray_executor(address: str | None = None, chunk: int = CHUNK) -> Callable[..., Iterator[Outcome]]:
    """An executor for `verify_rows`: `address` is a cluster's (`auto`, `ray://head:10001`,
    `head:6379`); None starts a Ray instance on this machine (what the tests use)."""
    try:
        import ray
    except ImportError:
        raise UserError(
            '--executor ray: Ray is not installed (pip install -e ".[ray]")'
        ) from None

    def execute(
        fn: Callable[[Any], Any],
        items: Iterable[Item | list[Item]],
        workers: int,
        preload: list[str] | None = None,
    ) -> Iterator[Outcome]:
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)  # fmt: skip
            except ConnectionError as e:
                raise UserError(f"--ray-address {address}: cannot connect ({e})") from None
        task = ray.remote(num_cpus=1, max_retries=3)(_run_chunk)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        log.info("ray: %d CPUs in the cluster, %d rows per task", cpus, chunk)
        parts = _chunks(items, chunk)
        inflight: list[Any] = []
        while True:
            while len(inflight) < 2 * cpus:
                part = next(parts, None)
                if part is None:
                    break
                inflight.append(task.remote(fn, part, list(preload or [])))
            if not inflight:
                return
            done, inflight = ray.wait(inflight, num_returns=1)
            for key, value, failure in ray.get(done[0]):
                yield Outcome(key, value, failure)

    return execute
