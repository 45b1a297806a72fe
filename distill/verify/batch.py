"""Every test of one solution in one sandbox: a process per test without a Python start per test.

A code corpus has tens to hundreds of tests per problem, and starting a sandboxed interpreter
costs more than most tests run. Here the sandbox (sandbox.py: namespaces, uid drop, rlimits,
audit hook) runs a small harness that compiles the solution once and forks a fresh child per
test: each child gets its own stdin, output pipe, process group and CPU limit, and starts from
the harness's pristine state, never from an earlier test's. The harness reports each test as one
JSON line as it ends; the caller compares outputs outside the sandbox and stops the run at the
first failure.

Why this stays a sandbox: expected outputs never enter it (a child could read the harness's
memory), and the harness is non-dumpable, so a child cannot reopen the harness's report channel
through /proc or ptrace it; the child's own descriptors are its stdin and its pipe. What a
hostile child can still do is fail: kill the harness or its siblings, which ends the run with
the remaining tests failed, never passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from distill.verify.sandbox import RunResult, SandboxLimits, run_python

# Stdlib only: the sandbox may run a system Python as an unprivileged uid.
HARNESS = r"""
import ctypes, json, os, resource, select, signal, sys, time, traceback

def child(code, i, out_w, err_w, closing, cpu):
    os.setpgid(0, 0)
    stdin_fd = os.open(f".in{i}", os.O_RDONLY)
    for fd, target in ((stdin_fd, 0), (out_w, 1), (err_w, 2)):
        os.dup2(fd, target)
    for fd in (stdin_fd, out_w, err_w, *closing):
        os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    status = 0
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        status = status or 1
    os._exit(status)

def run(code, i, per_test, cpu, cap, report):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(code, i, out_w, err_w, (out_r, err_r, report), cpu)
    os.close(out_w)
    os.close(err_w)
    bufs, live = {out_r: bytearray(), err_r: bytearray()}, {out_r, err_r}
    state, deadline, exited, raw = "ok", time.monotonic() + per_test, None, None
    while live:
        now = time.monotonic()
        if now >= deadline:
            state = "timeout"
            break
        if exited is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            exited = now if done else None
        if exited is not None and now - exited > 0.2:
            break  # a detached grandchild holds the pipe: the test itself has ended
        for fd in select.select(list(live), [], [], min(deadline - now, 0.05))[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                live.discard(fd)
            bufs[fd] += chunk
        if len(bufs[out_r]) + len(bufs[err_r]) > cap:
            state = "output_limit"
            break
    try:
        os.killpg(pid, signal.SIGKILL)  # the test's whole process group, whatever it left
    except OSError:
        pass
    if exited is None:
        raw = os.waitpid(pid, 0)[1]
    for fd in (out_r, err_r):
        os.close(fd)
    returncode = os.waitstatus_to_exitcode(raw)
    if returncode == -signal.SIGXCPU:
        state = "timeout"
    elif state == "ok" and returncode != 0:
        state = "error"
    return {"i": i, "status": state, "returncode": returncode,
            "stdout": bufs[out_r][:cap].decode("utf-8", "replace"),
            "stderr": bufs[err_r][-2000:].decode("utf-8", "replace")}

def main(source, stdins, per_test, cpu, cap, preload):
    for name in preload:  # the preamble's stdlib modules: each child finds them imported
        __import__(name)
    code = compile(source, "solution.py", "exec")
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no /proc/<harness>/fd, no ptrace
    report = os.dup(1)
    for i, stdin in enumerate(stdins):
        with open(f".in{i}", "w", encoding="utf-8") as f:
            f.write(stdin)
        line = run(code, i, per_test, cpu, cap, report)
        os.write(report, (json.dumps(line) + "\n").encode())
        os.remove(f".in{i}")

main(*json.loads(sys.stdin.read()))
"""


@dataclass
class TestRun:
    """One test of a batch: the child's output and how it ended."""

    status: str  # ok | error | timeout | output_limit | missing (the batch ended before it)
    returncode: int | None
    stdout: str
    stderr: str


def run_each(
    program: str,
    stdins: list[str],
    limits: SandboxLimits | None = None,
    passed: Callable[[int, TestRun], bool] | None = None,
    preload: tuple[str, ...] = (),
) -> tuple[list[TestRun], RunResult]:
    """Run `program` once per stdin, each in a fresh process inside one sandbox. `passed(i, run)`
    (the caller's comparison, outside the sandbox) returning False stops the batch there. Returns
    the runs in order (fewer when stopped or when the batch died: the missing ones count as
    failed) and the sandbox's own result. `preload`: stdlib modules the harness imports before
    it forks, so no test pays for importing what the program's preamble imports."""
    limits = limits or SandboxLimits()
    runs: list[TestRun] = []
    seen = [0]  # bytes of the report already parsed

    def watch(out: bytearray) -> bool:
        while (end := out.find(b"\n", seen[0])) != -1:
            line = json.loads(out[seen[0] : end])
            seen[0] = end + 1
            run = TestRun(line["status"], line["returncode"], line["stdout"], line["stderr"])
            runs.append(run)
            if passed is not None and not passed(line["i"], run):
                return True
        return False

    # the whole batch's limits: each test's wall time (plus start-up), every test's output
    whole = SandboxLimits(
        timeout=limits.timeout * len(stdins) + 5,
        cpu_seconds=limits.cpu_seconds * len(stdins) + 5,
        memory_mb=limits.memory_mb,
        file_size_mb=limits.file_size_mb,
        max_processes=limits.max_processes,
        max_output_kb=(limits.max_output_kb + 4) * (len(stdins) + 1),
    )
    payload = json.dumps([program, stdins, limits.timeout, limits.cpu_seconds,
                          limits.max_output_kb * 1024, list(preload)])  # fmt: skip
    result = run_python(HARNESS, payload, whole, watch=watch)
    return runs, result
