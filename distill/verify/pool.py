"""A process pool whose per-item wall-clock limit kills the stuck worker, not the run.

math-verify's own timeouts use SIGALRM, which works only in a main thread, and a sympy call
on `9^9^9^9` or 100k characters of LaTeX can run for hours. Each item here has a deadline;
an overdue worker is SIGKILLed, its item reported as timed out, the item queued behind it
handed to a fresh worker. Each worker holds at most `depth` messages (one running, the next
already in its pipe), so it never waits for the dispatcher and a slow item delays little.

The source may also yield a group (a list of items): it travels to one worker in one message,
for work its items share (the samples of a problem share a parsed gold, cached in the
worker); the worker still answers item by item, and each item keeps its own deadline, counted
from the previous answer. A group's item that times out or crashes is reported alone; the
items behind it go back to the queue.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

Item = tuple[Any, Any, float]  # (key, payload, timeout seconds)


@dataclass
class Outcome:
    key: Any
    value: Any = None
    failure: str | None = None  # "timeout" or "crash: ..." when no value came back


def _worker(fn: Callable[[Any], Any], tasks: Connection, results: Connection) -> None:
    # Ctrl-C reaches every process of the terminal's group, but stopping is the parent's call
    # (it ends its workers on the way out): a worker never prints a KeyboardInterrupt
    # traceback, and a parent that is gone (interrupted, killed) just ends it, quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked in the server (below)
    # A thread takes messages off the pipe while the check runs: a message bigger than the
    # pipe's buffer (a group, or one 100 KB trace) would otherwise block the dispatcher's send
    # until this worker finished its current item, and starve the other workers meanwhile.
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read() -> None:
        try:
            while (message := tasks.recv()) is not None:
                inbox.put(message)
        except (EOFError, OSError):
            pass
        inbox.put(None)

    threading.Thread(target=read, name="inbox", daemon=True).start()
    try:
        while (message := inbox.get()) is not None:
            for key, payload in message if isinstance(message, list) else [message]:
                try:
                    value, failure = fn(payload), None
                except Exception as e:  # a check that raises is a bug, reported per item
                    value, failure = None, f"crash: {type(e).__name__}: {e}"
                results.send((key, value, failure))
    except (EOFError, OSError):  # the pipe closed under us: ConnectionReset, BrokenPipe
        return


def _widen(conn: Connection) -> None:
    # A pipe holds 64 KB; a group of 16 long traces is ~256 KB, so each send waited for the
    # worker's reader thread, which gets the GIL only between its checks (every 5 ms): the
    # dispatcher sat blocked in write() for a quarter of the run. 1 MB (Linux's default cap
    # for any user) takes both messages a worker holds at once.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)


class _Slot:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any]):
        tasks, self.tasks = ctx.Pipe(duplex=False)
        _widen(self.tasks)
        self.conn, results = ctx.Pipe(duplex=False)  # what the dispatcher waits on
        self.proc = ctx.Process(target=_worker, args=(fn, tasks, results), daemon=True)
        self.proc.start()
        tasks.close()
        results.close()
        self.inflight: deque[Item] = deque()
        self.messages: deque[int] = deque()  # items not yet answered, per message sent
        self.started = 0.0  # when the item at the front of `inflight` began

    def send(self, item: Item | list[Item]) -> bool:
        """False when the worker is already gone (the caller replaces it)."""
        group = item if isinstance(item, list) else [item]
        if not self.inflight:
            self.started = time.monotonic()
        self.inflight.extend(group)
        self.messages.append(len(group))
        message = [(k, p) for k, p, _ in group] if isinstance(item, list) else (item[0], item[1])
        try:
            self.tasks.send(message)
        except (BrokenPipeError, OSError):
            return False
        return True

    def answered(self) -> Item:
        """The front item got its answer: the next one starts now."""
        self.started = time.monotonic()
        self.messages[0] -= 1
        if not self.messages[0]:
            self.messages.popleft()
        return self.inflight.popleft()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()
        self.tasks.close()


def start_server(preload: list[str]) -> None:
    """Start the fork server the workers come from, importing `preload` (seconds: sympy):
    a caller with other work first (reading the input) starts it early, so that import runs
    beside that work on another core. A no-op once it runs."""
    from multiprocessing import forkserver, resource_tracker

    mp.get_context("forkserver").set_forkserver_preload(preload)
    # The server imports sympy for seconds before it ignores SIGINT itself: a Ctrl-C then
    # would print its import traceback under the run's one line. It starts with SIGINT
    # blocked (the mask survives exec); ours is restored at once, so a Ctrl-C sent meanwhile
    # still reaches us, just after the spawn.
    resource_tracker.ensure_running()  # first: its own start unblocks SIGINT on the way out
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_pool(
    fn: Callable[[Any], Any],
    items: Iterable[Item | list[Item]],
    workers: int,
    depth: int = 2,
    preload: list[str] | None = None,
) -> Iterator[Outcome]:
    """Apply `fn` to every payload in `workers` processes; yields outcomes as they finish."""
    ctx = mp.get_context("forkserver")
    # Workers fork from a server that already imported the checks: a replacement after a
    # timeout starts in milliseconds instead of re-importing sympy.
    start_server(preload or [])
    source = iter(items)
    pending: deque[Item] = deque()  # items of a dead worker, sent again one by one
    slots = [_Slot(ctx, fn) for _ in range(max(1, workers))]

    failures = 0  # workers in a row that died before finishing anything

    def fill(i: int) -> None:
        while len(slots[i].messages) < depth:
            item = pending.popleft() if pending else next(source, None)
            if item is None:
                return
            if not slots[i].send(item):
                restart(i)

    def restart(i: int) -> None:
        """Replace a dead worker; its unfinished items go back to the front of the queue."""
        nonlocal failures
        failures += 1
        if failures > 3 * len(slots):
            raise RuntimeError("worker processes keep dying before finishing any item")
        slot = slots[i]
        pending.extendleft(reversed(slot.inflight))
        slot.inflight.clear()
        slot.kill()
        slots[i] = _Slot(ctx, fn)

    try:
        for i in range(len(slots)):
            fill(i)
        while any(s.inflight for s in slots):
            now = time.monotonic()
            busy = [s for s in slots if s.inflight]
            wake = min(s.started + s.inflight[0][2] for s in busy)
            ready = wait([s.conn for s in busy], timeout=max(0.0, wake - now))
            for i, slot in enumerate(slots):
                if not slot.inflight:
                    continue
                if slot.conn in ready:
                    try:
                        key, value, failure = slot.conn.recv()
                    except (EOFError, OSError):
                        # the worker died (segfault, OOM kill): its current item is the culprit
                        key, _, _ = slot.inflight.popleft()
                        restart(i)
                        yield Outcome(key, failure="crash: worker died")
                    else:
                        slot.answered()
                        failures = 0
                        yield Outcome(key, value, failure)
                elif time.monotonic() - slot.started > slot.inflight[0][2]:
                    key, _, _ = slot.inflight.popleft()
                    restart(i)
                    failures -= 1  # a timeout is the item's fault, not the worker's
                    yield Outcome(key, failure="timeout")
                fill(i)
    finally:
        for slot in slots:
            if slot.proc.is_alive():
                with contextlib.suppress(OSError):
                    slot.tasks.send(None)
                slot.proc.join(timeout=1)
                if slot.proc.is_alive():
                    slot.kill()
